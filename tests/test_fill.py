"""The `hold` fill: dropped tokens decode the code last kept at their position, and rd under it."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from infotok.base import CausalConvTokenizer
from infotok.cli import main
from infotok.fill import drift, hold_last_kept, steady_codes
from infotok.model import InfoTok
from infotok.router import calibrate_thresholds, hold_rates, kept_share, shared_hold_rates, threshold_for
from infotok.selection import drift_masks, keep_masks, kept_count
from infotok.tokens import Tokens
from infotok.video import read_video, synthetic_video, write_video
from tests.conftest import TINY_BASE, shared_videos, tiny_model


def test_a_dropped_position_holds_the_code_last_kept_there():
    codes = torch.arange(4.0).view(1, 1, 4, 1, 1).repeat(1, 2, 1, 1, 2)  # frame j holds code j, two positions
    mask = torch.tensor([[True, False], [False, True], [False, False], [True, False]]).view(1, 4, 1, 2)
    held, has_code = hold_last_kept(codes, mask)
    assert held[0, 0, :, 0, 0].tolist() == [0, 0, 0, 3]  # position 0: kept in frames 0 and 3
    assert held[0, 0, 1:3, 0, 1].tolist() == [1, 1]  # position 1: kept first in frame 1, held in frame 2
    assert has_code[0, :, 0, 1].tolist() == [False, True, True, True]  # nothing to hold before its first keep
    assert codes[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3]  # the input is untouched


def test_drift_is_measured_against_the_held_code_and_below_zero_is_the_change_since_the_last_frame():
    codes = (torch.arange(6.0) * 0.04).view(1, 1, 6, 1, 1)  # one position drifting 0.04 a latent frame
    assert torch.equal(drift(codes, -1.0), InfoTok.latent_change(codes))
    assert drift(codes, 0.1)[0, 1:, 0, 0].tolist() == pytest.approx([0.04, 0.08, 0.12, 0.04, 0.08])  # kept at 0.12


def test_level_values_round_to_the_codes_fsq_gives():
    base = CausalConvTokenizer()
    z = torch.randn(2, 6, 3, 4, 4) * 3
    codes, _ = base.round_codes(z)
    values = base.level_values(z)
    steps = torch.tensor([lv // 2 for lv in base.levels], dtype=torch.float32)[:, None, None, None]
    assert torch.equal(torch.round(values * steps) / steps, codes)
    assert torch.equal(base.indices_from_codes(codes), base.round_codes(z)[1])


def test_a_code_on_a_rounding_boundary_counts_as_the_one_before_it_under_hold():
    """One channel of levels 0.25 apart: a value that wobbles across the boundary at 0.125 ranks as the
    first frame's code; one that moves a level and a half away counts as moved, and stays there."""
    values = torch.tensor([0.12, 0.13, 0.14, 0.12, 0.45, 0.43]).view(1, 1, 6, 1, 1)
    codes = torch.round(values * 4) / 4
    assert codes.flatten().tolist() == [0.0, 0.25, 0.25, 0.0, 0.5, 0.5]
    steady = steady_codes(codes, values, [8], margin=0.25)
    assert steady.flatten().tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    assert torch.equal(steady_codes(codes, values, [8], margin=-0.5), codes)  # no margin: FSQ's codes
    carried, present = torch.full((1, 1, 1, 1), 0.25), torch.ones(1, 1, 1, dtype=torch.bool)
    assert steady_codes(codes, values, [8], 0.25, carried, present)[0, 0, :4, 0, 0].tolist() == [0.25] * 4
    assert steady_codes(codes, values, [8], 0.25, carried, ~present)[0, 0, 0, 0, 0] == 0.0


def test_drift_selection_keeps_a_slow_pan_in_step_where_the_latent_change_falls_behind():
    """A position drifting a little every latent frame and one that jumped once: one token beyond the
    first frame goes to the jump under `temporal`, whose held code then lags the drift more and more;
    `drift` keeps the drifting one halfway, where the held code has fallen furthest behind."""
    t = 9
    codes = torch.zeros(1, 1, t, 1, 2)
    codes[0, 0, :, 0, 0] = torch.arange(t) * 0.04
    codes[0, 0, 1:, 0, 1] = 0.1
    rate = 3 / (2 * t)
    drifting, jumping = (
        drift_masks(codes, [rate])[0, :, 0],
        keep_masks(InfoTok.latent_change(codes), [rate], "temporal")[0, :, 0],
    )
    assert int(drifting.sum()) == int(jumping.sum()) == 3
    assert bool(jumping[1, 1]) and bool(drifting[1:, 0].any())

    def held_error(mask):
        return float(((hold_last_kept(codes, mask[None, :, None])[0] - codes) ** 2).sum())

    assert held_error(drifting) < held_error(jumping)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
def test_drift_masks_keep_exactly_the_count_and_are_deterministic(rate):
    gen = torch.Generator().manual_seed(3)
    codes = torch.cumsum(torch.randint(-1, 2, (3, 2, 5, 4, 6), generator=gen).float() * 0.05, dim=2)
    masks = drift_masks(codes, [rate, rate / 2, 1.0])
    assert [int(m.sum()) for m in masks] == [kept_count(r, 120) for r in (rate, rate / 2, 1.0)]
    assert torch.equal(masks, drift_masks(codes, [rate, rate / 2, 1.0]))
    if kept_count(rate, 120) >= 24:
        assert bool(masks[0, 0].all())  # the first latent frame has nothing to hold


def test_dropping_only_repeated_codes_decodes_exactly_the_full_rate_video():
    model = tiny_model()
    video = synthetic_video(17, 32, 48, seed=1)
    video[9:] = video[8]  # the last two latent frames repeat the one before
    full = model.encode(video[None], 1.0, "static", "error")
    codes = model.base.codes_from_indices(full.indices)
    repeated = model.latent_change(codes) == 0
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
        tokens = model.tokenize(
            video, rate=0.3, strategy="static", selection="temporal", fill=fill, window=9, overlap=1
        )
        path = tokens.save(tmp_path / f"{fill}.itok")
        assert (b'"fill"' in path.read_bytes()) == (fill == "hold")
        loaded = Tokens.load(path)
        assert loaded.header.fill == fill and loaded.batch(0).fill == fill
        assert np.array_equal(model.detokenize(loaded), model.detokenize(tokens))
    assert not np.array_equal(
        model.detokenize(Tokens.load(tmp_path / "mask.itok")), model.detokenize(Tokens.load(tmp_path / "hold.itok"))
    )


def test_a_token_that_did_not_drift_counts_toward_a_rate_only_below_zero():
    """A drift near the threshold counts in part; no drift at all counts only where every token is kept."""
    d = torch.tensor([0.0, 0.02, 0.3])
    assert kept_share(d, 0.04).tolist() == pytest.approx([0.0, 0.3, 1.0])
    assert kept_share(d, -0.05)[0] == pytest.approx(0.5)
    assert kept_share(d, -1.0).tolist() == [1.0, 1.0, 1.0]


def test_hold_thresholds_are_monotone_and_calibrate_to_the_average():
    gen = torch.Generator().manual_seed(0)
    codes = []
    for i in range(12):  # windows from still to busy: at each latent frame a share i/12 of positions moves
        steps = (
            (torch.rand(2, 5, 4, 6, generator=gen) < i / 12).float()
            * torch.randint(1, 8, (2, 5, 4, 6), generator=gen)
            / 12
        )
        codes.append(torch.cumsum(steps, dim=1))
    table = calibrate_thresholds(codes)
    assert [t for _, t in table] == sorted((t for _, t in table), reverse=True)
    drifted = np.mean(hold_rates(torch.stack(codes), 0.0))  # every token that drifted at all, and no other
    assert 0.6 < drifted < 0.75
    for avg in (0.3, 0.5, 0.75):
        rates = [hold_rates(c[None], threshold_for(table, avg))[0] for c in codes]
        assert np.mean(rates) == pytest.approx(min(avg, drifted), abs=0.03)  # above it, what drifted and no more
        assert rates[0] < rates[-1]  # the still window gets the fewest


@pytest.mark.parametrize("avg", [0.2, 0.5, 0.9])
def test_a_shared_hold_budget_is_spent_exactly(avg):
    gen = torch.Generator().manual_seed(1)
    codes = [torch.rand(2, 3, 4, 4, generator=gen) * (i % 3) for i in range(5)]
    rates = shared_hold_rates(codes, avg)
    assert sum(kept_count(r, c[0].numel()) for r, c in zip(rates, codes)) == round(
        avg * sum(c[0].numel() for c in codes)
    )


def test_rd_under_hold_needs_no_predictor_and_is_deterministic(tmp_path):
    model = tiny_model()
    assert model.predictor_config is None
    x = torch.from_numpy(np.stack([synthetic_video(9, 32, 48, seed=s) for s in range(3)]))
    model.calibration.rd_thresholds = calibrate_thresholds(list(model.latent_codes(x)))
    a, b = model.encode(x, 0.5, "rd", fill="hold"), model.encode(x, 0.5, "rd", fill="hold")
    assert torch.equal(a.mask, b.mask) and a.nfe == 1 and a.fill == "hold"
    for i in range(3):
        assert int(a.mask[i].sum()) == kept_count(float(a.rate[i]), a.mask[i].numel())
    folder = model.save_pretrained(tmp_path / "m")
    assert InfoTok.from_pretrained(folder).calibration.rd_thresholds == model.calibration.rd_thresholds
    video = write_video(tmp_path / "v.mp4", synthetic_video(9, 32, 48, seed=0), fps=12)
    assert (
        main(
            [
                "encode",
                str(video),
                "-o",
                str(tmp_path / "v.itok"),
                "--checkpoint",
                str(folder),
                "--strategy",
                "rd",
                "--fill",
                "hold",
            ]
        )
        == 0
    )


def test_a_run_budget_under_hold_spends_one_exact_budget(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "model")
    videos = [write_video(tmp_path / f"v{i}.mp4", synthetic_video(17, 32, 48, seed=i), fps=12) for i in range(2)]
    assert (
        main(
            [
                "encode",
                *map(str, videos),
                "-o",
                str(tmp_path / "out"),
                "--checkpoint",
                str(folder),
                "--fill",
                "hold",
                "--strategy",
                "rd",
                "--budget",
                "run",
                "--rate",
                "0.3",
                "--window",
                "9",
                "--overlap",
                "1",
            ]
        )
        == 0
    )
    windows = [w for v in videos for w in Tokens.load(tmp_path / "out" / f"{v.stem}.itok").windows]
    assert sum(w.kept for w in windows) == round(0.3 * sum(w.num_tokens for w in windows))


def test_the_shipped_checkpoint_holds_by_default_and_a_still_shot_costs_a_fraction_of_its_moving_version(
    shipped_checkpoint,
):
    model = InfoTok.from_pretrained(shipped_checkpoint)
    assert model.choices() == ("rd", "drift", "hold")
    assert model.choices(target_psnr=24.0)[1:] == (
        "value",
        "mask",
    )  # the predicted curves describe masked value selection
    assert model.choices(fill="mask") == ("global_elbo", "value", "mask")
    frames, _ = read_video(shared_videos()[0], max_frames=33, size=(176, 128))
    still = np.repeat(frames[:1], len(frames), axis=0)
    moving, held = model.encode(frames[None], 0.5, "rd"), model.encode(still[None], 0.5, "rd")
    assert int(held.mask.sum()) < 0.5 * int(moving.mask.sum())
    full = model.decode(model.encode(still[None], 1.0, "static"))
    mse = float(((model.decode(held) - full) ** 2).mean())
    assert 10 * np.log10(4 / mse) > 35  # dB against its full-rate decode: the still shot's repeats are free to drop


def test_a_zero_held_embedding_decodes_exactly_as_the_model_without_it():
    model = tiny_model()
    with_held = InfoTok(model.base.config, model.compressor_config, name="tiny-infotok", held=True).eval()
    with_held.load_state_dict(model.state_dict(), strict=False)
    assert float(with_held.held.detach().abs().sum()) == 0
    batch = model.encode(synthetic_video(17, 32, 48, seed=4)[None], rate=0.3, strategy="static", fill="hold")
    assert torch.equal(with_held.decode(batch), model.decode(batch))
    with torch.no_grad():
        with_held.held.fill_(0.5)
    assert not torch.equal(with_held.decode(batch), model.decode(batch))  # it reaches held positions


def test_drift_training_teaches_the_decoding_side_alone_and_keeps_the_tokens(tmp_path):
    """`--train-selection drift`: the loss falls, the checkpoint gains the held embedding, and nothing
    that makes codes, rankings or predicted curves moves, so token files stay the same."""
    from infotok.train import TrainConfig, Trainer

    init = tiny_model(predictor=True)
    init.save_pretrained(tmp_path / "init")
    cfg = TrainConfig(
        kind="infotok",
        init=str(tmp_path / "init"),
        out=str(tmp_path / "run"),
        steps=40,
        batch=2,
        frames=9,
        crop=32,
        lr=3e-3,
        warmup=5,
        log_every=5,
        checkpoint_every=40,
        cache=None,
        selection="drift",
        rate_sampling="grid",
    )
    Trainer(cfg, progress=False).run()
    with open(tmp_path / "run" / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    trained = InfoTok.from_pretrained(tmp_path / "run" / "model")
    assert trained.held is not None and float(trained.held.detach().abs().sum()) > 0
    before, after = init.state_dict(), trained.state_dict()
    encoding = ("base.enc_", "base.to_code", "compressor.", "predictor.")
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(encoding))
    assert not torch.equal(after["decompressor.proj_out.weight"], before["decompressor.proj_out.weight"])
    video = synthetic_video(17, 32, 48, seed=6)[None]
    for settings in (dict(fill="hold"), dict(selection="value", fill="mask")):
        assert torch.equal(
            trained.encode(video, 0.4, "static", **settings).mask, init.encode(video, 0.4, "static", **settings).mask
        )


@pytest.mark.parametrize("key_density", [1.0, 0.25])
def test_drift_training_decodes_the_windows_infotok_encode_makes(key_density):
    """A drift window in training is selected as `infotok encode` selects it (steady codes, the checkpoint's sparse
    key frames) and decodes as the tokens would: the decoding side trains on what it will decode."""
    from infotok.core import as_model_input

    model = tiny_model(predictor=True)
    model.calibration.key_density = key_density
    video = synthetic_video(9, 32, 32, seed=4)[None]
    with torch.no_grad():
        trained_on = model(as_model_input(torch.from_numpy(video)), [0.5], "drift")[0]
    batch = model.encode(video, 0.5, "static", fill="hold", selection="drift")
    assert bool(batch.mask[0, 0].all()) == (key_density == 1)  # sparse key frames where the checkpoint has them
    assert torch.allclose(trained_on.clamp(-1, 1), model.decode(batch), atol=1e-5)


def test_a_frozen_base_trains_the_stacks_alone(tmp_path):
    """`--freeze-base`: every tensor of the base stays (a 1D checkpoint names its hash), the decompressor trains."""
    from infotok.train import TrainConfig, Trainer

    init = tiny_model(predictor=True)
    init.save_pretrained(tmp_path / "init")
    settings = dict(kind="infotok", init=str(tmp_path / "init"), out=str(tmp_path / "run"), steps=3, batch=2, frames=9)
    cfg = TrainConfig(**settings, crop=32, lr=3e-3, warmup=1, checkpoint_every=3, cache=None, freeze_base=True)
    Trainer(cfg.check(), progress=False).run()
    trained = InfoTok.from_pretrained(tmp_path / "run" / "model")
    before, after = init.state_dict(), trained.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("base."))
    assert not torch.equal(after["decompressor.proj_out.weight"], before["decompressor.proj_out.weight"])
    with pytest.raises(ValueError, match="freeze_base"):
        TrainConfig(kind="base", freeze_base=True).check()


def test_base_init_starts_from_the_new_base_exact_decoding(tmp_path):
    """`--base-init`: a better-trained base under trained stacks; the run starts decoding exactly as that base."""
    from infotok.core import as_model_input
    from infotok.train import TrainConfig, build_model

    tiny_model(predictor=True).save_pretrained(tmp_path / "flex")
    base = tiny_model(adaptive=False, seed=5)
    base.save_pretrained(tmp_path / "base")
    settings = dict(kind="infotok", init=str(tmp_path / "flex"), selection="value", freeze_base=True)
    model = build_model(TrainConfig(**settings, base_init=str(tmp_path / "base")).check()).eval()
    video = as_model_input(torch.from_numpy(synthetic_video(9, 32, 32, seed=1)[None]))
    with torch.no_grad():
        assert torch.equal(model(video, [1.0])[0], base(video, [1.0])[0])
    assert all(torch.equal(model.state_dict()[f"base.{k}"], v) for k, v in base.base.state_dict().items())
    with pytest.raises(ValueError, match="base_init"):
        TrainConfig(kind="base", base_init=str(tmp_path / "base")).check()
    InfoTok(dataclasses.replace(TINY_BASE, dec_lo=24), None).save_pretrained(tmp_path / "wider")
    with pytest.raises(ValueError, match="not the architecture"):
        build_model(TrainConfig(**settings, base_init=str(tmp_path / "wider")).check())
