"""The `hold` fill: dropped tokens decode the code last kept at their position, and rd under it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infotok.cli import main
from infotok.fill import hold_last_kept
from infotok.model import InfoTok
from infotok.router import calibrate_thresholds, hold_rates, shared_hold_rates, threshold_for
from infotok.selection import kept_count
from infotok.tokens import Tokens
from infotok.video import read_video, synthetic_video, write_video
from tests.conftest import shared_videos, tiny_model


def test_a_dropped_position_holds_the_code_last_kept_there():
    codes = torch.arange(4.0).view(1, 1, 4, 1, 1).repeat(1, 2, 1, 1, 2)  # frame j holds code j, two positions
    mask = torch.tensor([[True, False], [False, True], [False, False], [True, False]]).view(1, 4, 1, 2)
    held, has_code = hold_last_kept(codes, mask)
    assert held[0, 0, :, 0, 0].tolist() == [0, 0, 0, 3]  # position 0: kept in frames 0 and 3
    assert held[0, 0, 1:3, 0, 1].tolist() == [1, 1]  # position 1: kept first in frame 1, held in frame 2
    assert has_code[0, :, 0, 1].tolist() == [False, True, True, True]  # nothing to hold before its first keep
    assert codes[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3]  # the input is untouched


def test_dropping_only_repeated_codes_decodes_exactly_the_full_rate_video():
    model = tiny_model()
    video = synthetic_video(17, 32, 48, seed=1)
    video[9:] = video[8]  # the last two latent frames repeat the one before
    full = model.encode(video[None], 1.0, "static", "error")
    codes = model.base.codes_from_indices(full.indices)
    repeated = (model.latent_change(codes) == 0)
    assert bool(repeated.any())
    batch = model.encode(video[None], rates=[1 - float(repeated.float().mean())], selection="temporal", fill="hold")
    assert torch.equal(batch.mask, ~repeated) and batch.fill == "hold"
    assert torch.equal(model.decode(batch), model.decode(full))
    masked = model.decode(model.encode(video[None], rates=[float(batch.rate[0])], selection="temporal", fill="mask"))
    assert not torch.equal(masked, model.decode(full))


def test_hold_files_record_their_fill_and_mask_files_stay_as_before(tmp_path):
    model = tiny_model()
    video = synthetic_video(17, 32, 48, seed=2)
    for fill in ("mask", "hold"):
        tokens = model.tokenize(video, rate=0.3, strategy="static", selection="temporal", fill=fill, window=9, overlap=1)
        path = tokens.save(tmp_path / f"{fill}.itok")
        assert (b'"fill"' in path.read_bytes()) == (fill == "hold")
        loaded = Tokens.load(path)
        assert loaded.header.fill == fill and loaded.batch(0).fill == fill
        assert np.array_equal(model.detokenize(loaded), model.detokenize(tokens))
    assert not np.array_equal(model.detokenize(Tokens.load(tmp_path / "mask.itok")),
                              model.detokenize(Tokens.load(tmp_path / "hold.itok")))


def test_hold_thresholds_are_monotone_and_calibrate_to_the_average():
    gen = torch.Generator().manual_seed(0)
    changes = []
    for i in range(12):  # windows from still to busy; the first latent frame always counts
        c = (torch.rand(5, 4, 6, generator=gen) < i / 12).float() * torch.randint(1, 8, (5, 4, 6), generator=gen) / 12
        c[0] = float("inf")
        changes.append(c)
    table = calibrate_thresholds(changes)
    assert [t for _, t in table] == sorted((t for _, t in table), reverse=True)
    for avg in (0.3, 0.5, 0.75):
        rates = [hold_rates(c[None], threshold_for(table, avg))[0] for c in changes]
        assert np.mean(rates) == pytest.approx(avg, abs=0.03)
        assert rates[0] < rates[-1]  # the still window gets the fewest


@pytest.mark.parametrize("avg", [0.2, 0.5, 0.9])
def test_a_shared_hold_budget_is_spent_exactly(avg):
    gen = torch.Generator().manual_seed(1)
    changes = [torch.rand(3, 4, 4, generator=gen) * (i % 3) for i in range(5)]
    rates = shared_hold_rates(changes, avg)
    assert sum(kept_count(r, c.numel()) for r, c in zip(rates, changes)) == round(avg * sum(c.numel() for c in changes))


def test_rd_under_hold_needs_no_predictor_and_is_deterministic(tmp_path):
    model = tiny_model()
    assert model.predictor_config is None
    x = torch.from_numpy(np.stack([synthetic_video(9, 32, 48, seed=s) for s in range(3)]))
    model.rd_thresholds = calibrate_thresholds(list(model.changes(x)))
    a, b = model.encode(x, 0.5, "rd", fill="hold"), model.encode(x, 0.5, "rd", fill="hold")
    assert torch.equal(a.mask, b.mask) and a.nfe == 1 and a.fill == "hold"
    for i in range(3):
        assert int(a.mask[i].sum()) == kept_count(float(a.rate[i]), a.mask[i].numel())
    folder = model.save_pretrained(tmp_path / "m")
    assert InfoTok.from_pretrained(folder).rd_thresholds == model.rd_thresholds
    video = write_video(tmp_path / "v.mp4", synthetic_video(9, 32, 48, seed=0), fps=12)
    assert main(["encode", str(video), "-o", str(tmp_path / "v.itok"), "--checkpoint", str(folder),
                 "--strategy", "rd", "--fill", "hold"]) == 0


def test_a_run_budget_under_hold_spends_one_exact_budget(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "model")
    videos = [write_video(tmp_path / f"v{i}.mp4", synthetic_video(17, 32, 48, seed=i), fps=12) for i in range(2)]
    assert main(["encode", *map(str, videos), "-o", str(tmp_path / "out"), "--checkpoint", str(folder), "--fill", "hold",
                 "--strategy", "rd", "--budget", "run", "--rate", "0.3", "--window", "9", "--overlap", "1"]) == 0
    windows = [w for v in videos for w in Tokens.load(tmp_path / "out" / f"{v.stem}.itok").windows]
    assert sum(w.kept for w in windows) == round(0.3 * sum(w.num_tokens for w in windows))


def test_the_shipped_checkpoint_holds_by_default_and_a_still_shot_costs_a_fraction_of_its_moving_version(shipped_checkpoint):
    model = InfoTok.from_pretrained(shipped_checkpoint)
    assert model.choices() == ("rd", "temporal", "hold")
    assert model.choices(target_psnr=24.0)[1:] == ("value", "mask")  # the predicted curves describe masked value selection
    assert model.choices(fill="mask") == ("global_elbo", "value", "mask")
    frames, _ = read_video(shared_videos()[0], max_frames=33, size=(176, 128))
    still = np.repeat(frames[:1], len(frames), axis=0)
    moving, held = model.encode(frames[None], 0.5, "rd"), model.encode(still[None], 0.5, "rd")
    assert int(held.mask.sum()) < 0.5 * int(moving.mask.sum())
    full = model.decode(model.encode(still[None], 1.0, "static"))
    mse = float(((model.decode(held) - full) ** 2).mean())
    assert 10 * np.log10(4 / mse) > 35  # dB against its full-rate decode: the still shot's repeats are free to drop
