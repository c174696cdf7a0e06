"""Tiled attention, the value predictor and the rate control built on it (rd, shared budget, target PSNR)."""

import csv

import numpy as np
import pytest
import torch

from infotok.cli import main
from infotok.compressor import BlockCausalTransformer, CompressorConfig
from infotok.model import InfoTok
from infotok.predictor import PredictorConfig
from infotok.router import calibrate_margins, calibrate_slopes, rd_rates, shared_budget_rates, slope_for, target_rates
from infotok.selection import kept_count
from infotok.train import TrainConfig, Trainer
from infotok.video import synthetic_video, write_video
from tests.conftest import TINY_BASE, TINY_COMPRESSOR, shared_videos, tiny_model


def randomized(stack: BlockCausalTransformer) -> BlockCausalTransformer:
    torch.manual_seed(0)
    for p in stack.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return stack.eval()


# ------------------------------------------------------------------------------ tiled attention
def test_a_tile_covering_the_frame_is_whole_frame_attention():
    full = randomized(BlockCausalTransformer(16, CompressorConfig(width=16, depth=2, heads=2)))
    tiled = BlockCausalTransformer(16, CompressorConfig(width=16, depth=2, heads=2, window=32)).eval()
    tiled.load_state_dict(full.state_dict())
    x = torch.randn(2, 16, 3, 5, 7)
    with torch.no_grad():  # the shifted layer pads, and its padding is never attended to
        assert torch.allclose(full(x), tiled(x), atol=1e-5)


def test_tiled_attention_is_causal_in_time_and_local_in_space():
    stack = randomized(BlockCausalTransformer(16, CompressorConfig(width=16, depth=2, heads=2, window=4)))
    x = torch.randn(1, 16, 4, 16, 16)
    changed = x.clone()
    changed[:, :, 2, 15, 15] += 5.0  # latent frame 2, bottom-right corner
    with torch.no_grad():
        a, b = stack(x), stack(changed)
    assert torch.equal(a[:, :, :2], b[:, :, :2])  # earlier latent frames never see later ones
    # two layers of 4x4 tiles (the second shifted by 2) reach at most 6 positions: the top-left stays untouched
    assert torch.equal(a[:, :, 2:, :8, :8], b[:, :, 2:, :8, :8])
    assert not torch.equal(a[:, :, 2:, 12:, 12:], b[:, :, 2:, 12:, 12:])


def test_whole_frame_configs_keep_their_serialized_form():
    assert "window" not in CompressorConfig().to_dict()
    assert CompressorConfig(window=8).to_dict()["window"] == 8


# ------------------------------------------------------------------------------ rate control
CURVES = np.array(
    [
        [20 + k * 0.1 for k in range(16)],  # flat: every token adds little
        [15 + k * 1.0 for k in range(16)],  # steep: every token adds a lot
        [18 + min(k, 4) * 2.0 for k in range(16)],  # steep, then flat after 5/16
    ]
)


def test_target_mode_picks_the_smallest_sufficient_rate():
    assert target_rates(CURVES, 21.0) == [11 / 16, 7 / 16, 3 / 16]
    assert target_rates(CURVES, 50.0) == [1.0, 1.0, 1.0]  # out of reach: everything
    assert target_rates(CURVES, 10.0) == [1 / 16] * 3


def test_target_margins_are_the_predictions_overshoot_and_target_mode_takes_them_off():
    rng = np.random.default_rng(0)
    overshoot = np.linspace(0.5, 2.0, 16)  # the predictor's bias grows with the rate
    expected = CURVES[rng.integers(0, 3, 2000)]
    predicted = expected + overshoot

    def measure():  # what decodes give: the predictor's expectation, give or take 0.3 dB
        return expected + rng.normal(0, 0.3, expected.shape)

    margins = calibrate_margins(predicted, measure())
    assert np.allclose(margins, overshoot + 0.3 * 1.2816, atol=0.05)  # bias + the normal's 90% quantile
    # on new windows, the curves less the margins: at least about 90% reach the target (more where the
    # curve passes it between two points k/16), against fewer than 60% trusting the biased curves as they are
    picked = np.array(target_rates(predicted, 21.0, margins))
    reached = measure()[np.arange(len(picked)), (picked * 16).round().astype(int) - 1] >= 21.0
    assert reached.mean() >= 0.88
    trusted = np.array(target_rates(predicted, 21.0))
    assert np.mean(measure()[np.arange(len(trusted)), (trusted * 16).round().astype(int) - 1] >= 21.0) < 0.6
    assert np.mean(picked) > np.mean(trusted)
    assert target_rates(CURVES, 21.0, [0.0] * 16) == target_rates(CURVES, 21.0)
    with pytest.raises(ValueError, match="margins"):
        target_rates(CURVES, 21.0, [0.0] * 8)


@pytest.mark.parametrize("avg", [1 / 16, 0.25, 0.5, 0.8, 1.0])
def test_a_shared_budget_is_spent_exactly(avg):
    rates = shared_budget_rates(CURVES, [160] * 3, avg)
    assert sum(round(r * 160) for r in rates) == round(avg * 160 * 3)
    if 0.25 <= avg < 1:  # the steep window gets the most, the flat one the least
        assert rates[1] >= rates[2] and rates[1] >= rates[0]


def test_rd_equal_slopes_follow_the_curves_and_the_calibrated_average():
    table = calibrate_slopes(np.repeat(CURVES, 5, axis=0))
    low, high = slope_for(table, 0.25), slope_for(table, 0.75)
    assert low > high  # a lower average needs a steeper slope
    # each window stops where its curve gets flatter than the slope (per 1/16: slope/16 dB)
    assert rd_rates(CURVES, 8.0) == [1 / 16, 1.0, 5 / 16]
    rng = np.random.default_rng(0)  # many concave curves: the calibrated slopes give the asked averages
    many = 15 + np.cumsum(rng.uniform(0.5, 4, (200, 1)) * np.exp(-np.arange(16) / rng.uniform(2, 8, (200, 1))), axis=1)
    table = calibrate_slopes(many)
    for avg in (0.25, 0.5):
        assert np.mean(rd_rates(many, slope_for(table, avg))) == pytest.approx(avg, abs=0.02)


def predictor_model() -> InfoTok:
    torch.manual_seed(0)
    model = InfoTok(TINY_BASE, TINY_COMPRESSOR, score_mean=0.2, name="tiny-value", predictor=PredictorConfig(hidden=8))
    model.calibration.rd_slopes = calibrate_slopes(CURVES)
    return model.eval()


@pytest.mark.parametrize(
    "mode",
    [
        dict(strategy="rd", rate=0.5, selection="value"),
        dict(target_psnr=20.0, selection="value"),
        dict(strategy="static", rate=0.5, selection="value"),
    ],
)
def test_predicted_rates_keep_exact_token_counts_and_are_deterministic(mode):
    model = predictor_model()
    x = torch.from_numpy(np.stack([synthetic_video(9, 32, 48, seed=s) for s in range(3)]))
    a, b = model.encode(x, **mode), model.encode(x, **mode)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.indices, b.indices)
    assert a.nfe == 1  # no router pass: the predictor runs on the encoder's features
    for i in range(3):
        assert int(a.mask[i].sum()) == kept_count(float(a.rate[i]), a.mask[i].numel())
        assert float(a.rate[i]) * 16 == pytest.approx(round(float(a.rate[i]) * 16))
    assert a.predicted is not None and a.predicted.shape == (3,)


def test_value_training_adds_a_predictor_whose_loss_falls(tmp_path):
    torch.manual_seed(0)
    InfoTok(TINY_BASE, TINY_COMPRESSOR, name="tiny").save_pretrained(tmp_path / "init")
    cfg = TrainConfig(
        kind="infotok",
        init=str(tmp_path / "init"),
        out=str(tmp_path / "run"),
        steps=60,
        batch=2,
        frames=9,
        crop=32,
        lr=3e-3,
        warmup=5,
        log_every=10,
        checkpoint_every=60,
        cache=None,
        selection="value",
        rate_sampling="grid",
        predictor={"hidden": 8},
        compressor={"window": 2},
    )
    Trainer(cfg, progress=False).run()
    with open(tmp_path / "run" / "log.csv") as f:
        losses = [float(r["predictor_loss"]) for r in csv.DictReader(f)]
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2])
    model = InfoTok.from_pretrained(tmp_path / "run" / "model")
    assert model.predictor_config == PredictorConfig(hidden=8) and model.compressor_config.window == 2
    extra = sum(p.numel() for p in model.predictor.parameters()) / sum(p.numel() for p in model.parameters())
    assert extra < 0.25  # on this toy model; the shipped one's share is measured in BENCHMARKS.md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target-psnr", "30", "--rate", "0.5"], "--target-psnr chooses each window's rate itself"),
        (["--target-psnr", "nan"], "target PSNR must be a number"),
        (["--target-psnr", "-3"], "target PSNR must be a number"),
        (["--strategy", "rd"], "has no value predictor"),
        (["--budget", "run"], "use it with --strategy rd"),
    ],
)
def test_bad_rate_control_arguments_fail_in_one_line(tmp_path, tiny_checkpoint, argv, message, capsys):
    """Exit code 2, the reason in the last line (argparse's own refusals print the usage above it)."""
    video = write_video(tmp_path / "v.mp4", synthetic_video(9, 32, 48, seed=0), fps=12)
    try:
        code = main(["encode", str(video), "-o", str(tmp_path / "v.itok"), "--checkpoint", str(tiny_checkpoint)] + argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err.splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "v.itok").exists()


def test_run_budget_spends_one_exact_budget_over_the_inputs(tmp_path):
    folder = predictor_model().save_pretrained(tmp_path / "model")
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
    from infotok.tokens import Tokens

    windows = [w for v in videos for w in Tokens.load(tmp_path / "out" / f"{v.stem}.itok").windows]
    assert sum(round(w.rate * 16) for w in windows) == round(0.3 * 16 * len(windows))


@pytest.mark.xfail(
    strict=True,
    reason="not yet under the mask fill: the shipped predictor's curves have nearly one shape, "
    "so rd gives a still shot as many tokens as its moving version (BENCHMARKS.md); "
    "under hold, the default, it does (tests/test_fill.py)",
)
def test_a_still_shot_costs_fewer_tokens_than_its_moving_version_through_the_shipped_model(shipped_checkpoint):
    from infotok.video import read_video

    model = InfoTok.from_pretrained(shipped_checkpoint)
    if model.predictor_config is None:
        pytest.fail("the shipped checkpoint has no value predictor")
    frames, _ = read_video(shared_videos()[0], max_frames=33, size=(176, 128))
    still = np.repeat(frames[:1], len(frames), axis=0)
    moving, held = (model.encode(f[None], 0.5, "rd", "value", fill="mask") for f in (frames, still))
    assert int(held.mask.sum()) < int(moving.mask.sum())


def test_predictor_training_leaves_the_tokenizer_untouched_and_its_loss_falls(tmp_path):
    init = predictor_model().save_pretrained(tmp_path / "init")
    cfg = TrainConfig(
        kind="predictor",
        init=str(init),
        out=str(tmp_path / "run"),
        steps=40,
        batch=2,
        frames=9,
        crop=32,
        lr=3e-3,
        warmup=5,
        log_every=10,
        checkpoint_every=40,
        cache=None,
        predictor_points=3,
    )
    Trainer(cfg, progress=False).run()
    with open(tmp_path / "run" / "log.csv") as f:
        losses = [float(r["predictor_loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < 0.75 * losses[0]
    before, after = InfoTok.from_pretrained(init), InfoTok.from_pretrained(tmp_path / "run" / "model")
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert name.startswith("predictor.") or torch.equal(a, b), name
    assert after.calibration.rd_slopes == before.calibration.rd_slopes
    x = synthetic_video(9, 32, 48, seed=4)[None]
    assert torch.equal(
        before.encode(x, 0.5, "static", "error").indices, after.encode(x, 0.5, "static", "error").indices
    )


def test_target_traps_are_refused_or_reported(tmp_path, capsys):
    """--target-psnr with --fill hold is refused (its curves describe the mask fill); an unreachable
    target is reported, naming the best the model predicts, and spends every token."""
    folder = predictor_model().save_pretrained(tmp_path / "model")
    video = write_video(tmp_path / "v.mp4", synthetic_video(9, 32, 48, seed=0), fps=12)
    encode = ["encode", str(video), "--checkpoint", str(folder), "--window", "9", "--overlap", "1"]
    assert main(encode + ["-o", str(tmp_path / "h.itok"), "--target-psnr", "20", "--fill", "hold"]) == 2
    assert "cannot be combined with --fill hold" in capsys.readouterr().err
    assert main(encode + ["-o", str(tmp_path / "t.itok"), "--target-psnr", "80"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "target 80 dB is out of reach for 1 of 1 windows" in warned[0]
    from infotok.tokens import Tokens

    assert [w.rate for w in Tokens.load(tmp_path / "t.itok").windows] == [1.0]


def test_the_objective_keyword_is_deprecated_and_mse_is_gone():
    model = tiny_model()
    with pytest.warns(DeprecationWarning, match="objective"):
        model.tokenize(synthetic_video(9, 32, 32), rate=0.5, strategy="static", objective="psnr")
    with pytest.raises(ValueError, match="no longer offered"):
        model.tokenize(synthetic_video(9, 32, 32), rate=0.5, objective="mse")
