"""The 1D layout's network: prefixes are real token sequences, every prefix decodes, sampling is seeded."""

import pytest
import torch

from infotok.registers import RegisterConfig, RegisterTokenizer, region_keeps

TINY = RegisterConfig(
    registers=4, region=4, frames=3, width=32, heads=2, encoder_depth=1, decoder_depth=1, flow_depth=1
)
H, W = 4, 8  # two regions: 8 tokens a window


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RegisterTokenizer(TINY).eval()


def codes(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, 64000, (batch, TINY.frames, H, W), generator=g)
    return RegisterTokenizer(TINY).fsq.indices_to_codes(indices)


def test_a_prefix_does_not_depend_on_later_registers(model):
    x = codes()
    with torch.no_grad():
        tokens = model.encode(x)
        changed = RegisterTokenizer(TINY).eval()
        changed.load_state_dict(model.state_dict())
        changed.registers.data[:, 2:] = torch.randn(1, 2, 32)  # only each region's registers 2.. differ
        again = changed.encode(x)
    assert tokens.shape == (2, 8) and tokens.dtype == torch.int64
    assert torch.equal(tokens[:, :4], again[:, :4])  # rank-major: ranks 0 and 1 of both regions
    assert not torch.equal(tokens[:, 4:], again[:, 4:])


@pytest.mark.parametrize("k", [1, 3, 8])
def test_every_prefix_decodes_to_base_codes(model, k):
    with torch.no_grad():
        tokens = model.encode(codes())
        out = model.decode(tokens[:, :k], H, W)
        drawn = model.sample(tokens[:, :k], H, W, steps=2, seed=1)
    assert out.shape == drawn.shape == (2, 6, TINY.frames, H, W)
    assert torch.isfinite(out).all() and torch.isfinite(drawn).all()


def test_sampling_is_deterministic_per_seed(model):
    with torch.no_grad():
        tokens = model.encode(codes())[:, :4]
        a, b, c = (model.sample(tokens, H, W, 3, seed) for seed in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_losses_backpropagate_to_every_part():
    torch.manual_seed(0)
    model = RegisterTokenizer(TINY)
    losses = model.loss(codes(), model.draw_keep(4))
    (losses["regression"] + losses["flow"]).backward()
    for part in (model.encoder, model.decoder, model.flow_out, model.to_code):  # flow_out starts at zero
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part


def test_nested_dropout_draws_every_prefix_length():
    keep = RegisterTokenizer(TINY).draw_keep(1000, torch.Generator().manual_seed(0))
    assert set(keep.tolist()) == {0, 1, 2, 3, 4}


def test_a_prefix_keeps_the_first_registers_of_each_region():
    assert (
        region_keeps(3, 2, 4) == [2, 1] and region_keeps(1, 4, 8) == [1, 0, 0, 0] and region_keeps(99, 2, 4) == [4, 4]
    )


def test_bad_inputs_are_refused(model):
    with pytest.raises(ValueError, match="windows of 9 frames"):
        model.encode(torch.zeros(1, 6, 2, 8, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode(torch.zeros(1, 6, 3, 4, 6))
    with pytest.raises(ValueError, match=r"1 <= k <= 8"):
        model.decode(torch.zeros(1, 9, dtype=torch.long), H, W)
    with pytest.raises(ValueError, match="lie in"):
        model.decode(torch.full((1, 2), 64000), H, W)
    with pytest.raises(ValueError, match="multiple of patch"):
        RegisterConfig(region=5)


def test_train_registers_runs_resumes_and_exports_a_1d_checkpoint(tmp_path):
    import json

    import numpy as np

    from infotok.cli import main

    rng = np.random.default_rng(0)
    clips = {f"clip{i}": rng.integers(0, 64000, (2, 9, 32, 36)).astype(np.uint16) for i in range(4)}
    clips |= {f"{k}~mirrored": v[..., ::-1] for k, v in clips.items()}
    np.savez(tmp_path / "latents.npz", base_hash=np.array("abc"), base_checkpoint=np.array(""), **clips)
    argv = ["train", "registers", "--latents", str(tmp_path / "latents.npz"), "--out", str(tmp_path / "run")]
    argv += ["--batch", "2", "--log-every", "1", "--checkpoint-every", "1"]
    tiny = {
        "registers": 4,
        "region": 4,
        "width": 32,
        "heads": 2,
        "encoder_depth": 1,
        "decoder_depth": 1,
        "flow_depth": 1,
    }
    argv += ["--register-config", json.dumps(tiny)]
    assert main(argv + ["--steps", "2"]) == 0
    assert main(argv + ["--steps", "3"]) != 0  # a run exists: resume or overwrite, said
    assert main(argv + ["--steps", "3", "--resume"]) == 0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,seconds,lr,regression,flow,psnr@") and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "2",
        "3",
    ]
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["layout"] == "1d" and config["base_hash"] == "abc" and config["base_checkpoint"] is None
    assert config["trained_steps"] == 3 and (tmp_path / "run" / "model" / "model.safetensors").is_file()
