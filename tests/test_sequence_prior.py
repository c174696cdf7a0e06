"""The 1D layout's sequence prior: causal in sequence order (so any prefix's bits are a sum), and
`infotok train prior` on 1D shard folders (resumable, exported, measuring a video at several prefixes)."""

import json

import numpy as np
import pytest
import torch

from infotok import InfoTok
from infotok.sequence_prior import SequencePriorConfig, SequencePriorNet, rank_grid, window_prefix_bits
from infotok.video import synthetic_video

SMALL = dict(levels=[8, 5, 3], registers=6, channels=8, dilations=[1, 2])


def random_net() -> SequencePriorNet:
    torch.manual_seed(0)
    net = SequencePriorNet(SequencePriorConfig(**SMALL))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


def test_a_tokens_bits_depend_on_earlier_ranks_only_so_a_prefix_costs_its_tokens_bits():
    net = random_net()
    rng = np.random.default_rng(0)
    sequence, previous = rng.integers(0, 120, 6 * 2 * 3), rng.integers(0, 120, 6 * 2 * 3)
    whole = rank_grid(sequence, len(sequence), 6, 2, 3)[None]
    before = rank_grid(previous, len(previous), 6, 2, 3)[None]
    with torch.no_grad():
        bits = net.token_bits(whole, before).flatten()
        for k in (1, 5, 6, 13, 36):  # any cut, mid-rank too
            cut = rank_grid(sequence, k, 6, 2, 3)[None]
            assert torch.allclose(net.token_bits(cut, before).flatten()[:k], bits[:k], atol=1e-5)
            assert (net.token_bits(cut, before).flatten()[k:] == 0).all()
        changed = whole.clone()
        changed[0, 3:] = (changed[0, 3:] + 7) % 120  # ranks 3 and later changed: ranks 0-2 cost the same
        assert torch.allclose(net.token_bits(changed, before)[0, :3], bits.view(6, 2, 3)[:3], atol=1e-5)
        assert not torch.allclose(net.token_bits(whole, torch.full_like(before, -1)), bits.view(1, 6, 2, 3))


@pytest.fixture(scope="module")
def one_d():
    return InfoTok.from_pretrained(layout="1d")


def test_train_prior_on_1d_tokens_trains_the_sequence_prior(tmp_path, one_d):
    from infotok.cli import main

    videos = [one_d.tokenize(synthetic_video(9, 64, 128, seed=s), fps=8) for s in range(5)]
    for s, tokens in enumerate(videos):  # a folder of .itok files (shard folders are read the same way)
        tokens.save(tmp_path / "itok" / f"c{s}.itok")
    video = videos[0]
    args = ["train", "prior", "--shards", str(tmp_path / "itok"), "--out", str(tmp_path / "run"), "--quiet"]
    config = dict(registers=one_d.registers.config.registers, channels=8, dilations=[1, 2])
    args += ["--prior-config", json.dumps(config), "--log-every", "2", "--batch", "2"]
    assert main(args + ["--steps", "3"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,seconds,lr,train_bits_per_symbol,bits_per_token,bits_per_token_first_64")
    assert [row.split(",")[0] for row in log[1:]] == ["2", "3", "4"]
    net = SequencePriorNet.from_pretrained(tmp_path / "run" / "model")
    assert net.info["trained_steps"] == 4 and net.info["name"] == "infotok-sequence-prior"
    bits = window_prefix_bits(net, video, [16, 64, 128])
    assert 0 < bits[16] < bits[64] < bits[128]
    with pytest.raises(ValueError, match="not a 1D-layout prior folder"):
        SequencePriorNet.from_pretrained(tmp_path)
