"""The command line end to end on the built-in sample, and the Python API it stands on."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from infotok.cli import main
from infotok.model import InfoTok
from infotok.tokens import Tokens
from infotok.video import read_video, synthetic_video, write_video


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "command", ["encode", "decode", "reconstruct", "viz", "info", "eval", "calibrate", "train", "demo"]
)
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0 and "usage: infotok " + command in capsys.readouterr().out


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "infotok", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "encode" in done.stdout and "calibrate" in done.stdout


def test_decode_of_encode_is_bit_identical_to_reconstruct(tmp_path, capsys, tiny_checkpoint, sample_video):
    ckpt = ["--checkpoint", tiny_checkpoint]
    opts = ["--rate", "0.5", "--window", "9", "--overlap", "3"]
    assert run(capsys, "encode", sample_video, "-o", tmp_path / "t.itok", *opts, *ckpt)[0] == 0
    assert run(capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "dec.mp4", "--lossless", *ckpt)[0] == 0
    code, out, _ = run(capsys, "reconstruct", sample_video, "-o", tmp_path / "rec.mp4", "--lossless", *opts, *ckpt)
    assert code == 0 and "PSNR" in out
    decoded, info = read_video(tmp_path / "dec.mp4")
    assert decoded.shape == (21, 48, 64, 3) and info.fps == 12

    # the frames themselves (before MP4 compression) agree bit for bit
    model = InfoTok.from_pretrained(tiny_checkpoint)
    tokens = Tokens.load(tmp_path / "t.itok")
    from_file = model.detokenize(tokens)
    direct = model.reconstruct(sample_video, rate=0.5, window=9, overlap=3)
    assert np.array_equal(from_file, direct)
    # and the lossless MP4s of `decode` and `reconstruct` hold exactly those frames
    assert np.array_equal(decoded, direct) and np.array_equal(read_video(tmp_path / "rec.mp4")[0], direct)


def test_info_reports_real_and_nominal_bits_that_add_up(tmp_path, capsys, tiny_checkpoint, sample_video):
    run(
        capsys,
        "encode",
        sample_video,
        "-o",
        tmp_path / "t.itok",
        "--rate",
        "0.25",
        "--window",
        "9",
        "--overlap",
        "3",
        "--checkpoint",
        tiny_checkpoint,
    )
    code, out, _ = run(capsys, "info", tmp_path / "t.itok", "--json")
    info = json.loads(out)
    assert code == 0 and info["windows"] == 3 and info["frames"] == 21
    assert info["file_bytes"] == (tmp_path / "t.itok").stat().st_size
    assert info["header_bytes"] + info["window_bytes"] + info["trailer_bytes"] == info["file_bytes"]
    assert info["nominal_bpp16"] == pytest.approx(info["realized_rate"] + 1 / 16)
    assert info["file_bpp16"] > 0 and info["model"] == "tiny-infotok"
    # per second of video (the sample is 21 frames at 12 fps): the figures long videos are judged by
    assert info["seconds"] == pytest.approx(21 / 12)
    assert info["tokens_per_second"] == pytest.approx(info["tokens_kept"] / info["seconds"])
    assert info["file_bits_per_second"] == pytest.approx(info["file_bytes"] * 8 / info["seconds"])


def test_many_inputs_go_to_a_folder_with_one_output_each(tmp_path, capsys, tiny_checkpoint):
    for i in range(3):
        write_video(tmp_path / "in" / f"clip{i}.mp4", synthetic_video(9, 32, 32, seed=i), fps=8)
    code, out, _ = run(capsys, "encode", tmp_path / "in", "-o", tmp_path / "tok", "--checkpoint", tiny_checkpoint)
    assert code == 0 and sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "clip0.itok",
        "clip1.itok",
        "clip2.itok",
    ]
    code, _, _ = run(
        capsys, "decode", *sorted((tmp_path / "tok").iterdir()), "-o", tmp_path / "dec", "--checkpoint", tiny_checkpoint
    )
    assert code == 0 and len(list((tmp_path / "dec").glob("*.mp4"))) == 3
    code, _, _ = run(
        capsys,
        "reconstruct",
        str(tmp_path / "in" / "clip*.mp4"),
        "-o",
        tmp_path / "rec",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0 and len(list((tmp_path / "rec").glob("*.mp4"))) == 3


def test_viz_writes_side_by_side_video_and_png(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, out, _ = run(
        capsys, "viz", sample_video, "-o", tmp_path / "viz.mp4", "--rate", "0.5", "--checkpoint", tiny_checkpoint
    )
    assert code == 0
    frames, _ = read_video(tmp_path / "viz.mp4")
    assert frames.shape[2] == 3 * 64 and frames.shape[1] > 48  # three panels and the usage bar
    assert (tmp_path / "viz.png").stat().st_size > 1000


def test_eval_with_no_options_measures_what_encode_writes(tmp_path, capsys, shipped_checkpoint):
    """The same defaults (the checkpoint's strategy, selection and fill; rate 0.5; rd at the calibrated
    threshold) and so the same tokens: eval's PSNR is that of encode + decode of the same clip."""
    from infotok.metrics import psnr

    clip = write_video(tmp_path / "clip.mp4", synthetic_video(33, 64, 64, seed=7), fps=12, lossless=True)
    code, _, _ = run(capsys, "eval", clip, "--size", "64", "--json", tmp_path / "r.json")
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    code2, _, _ = run(capsys, "reconstruct", clip, "-o", tmp_path / "r.mp4", "--lossless", "--size", "64")
    tokens = InfoTok.from_pretrained().tokenize(clip, size=64)
    assert code == code2 == 0 and tokens.header.avg_rate == result["rate"] == 0.5
    assert (
        (tokens.header.strategy, tokens.header.selection, tokens.header.fill)
        == (result["strategy"], result["selection"], result["fill"])
        == ("rd", "drift", "hold")
    )
    assert result["realized_rate"] == pytest.approx(tokens.ledger().realized_rate, abs=1e-12)
    original, recon = read_video(clip)[0], read_video(tmp_path / "r.mp4")[0]
    assert result["psnr"] == pytest.approx(psnr(original, recon), abs=1e-6)


def test_eval_writes_the_json_contract_and_csv(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, out, _ = run(
        capsys,
        "eval",
        sample_video,
        "--rates",
        "1,0.5",
        "--strategy",
        "static,global_elbo",
        "--selection",
        "error,order",
        "--size",
        "32",
        "--frames",
        "9",
        "--json",
        tmp_path / "r.json",
        "--checkpoint",
        tiny_checkpoint,
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and len(report["results"]) == 8
    keys = {"strategy", "rate", "realized_rate", "bpp16", "psnr", "ssim", "videos", "seconds"}
    assert all(keys <= set(r) for r in report["results"])
    static = [r for r in report["results"] if r["strategy"] == "static" and r["selection"] == "error"]
    assert [r["realized_rate"] for r in static] == [1.0, 0.5]
    assert static[1]["bpp16"] == pytest.approx(0.5625)
    assert (tmp_path / "r.csv").read_text().count("\n") == 1 + 8
    assert {(r["width"], r["height"]) for r in report["per_video"]} == {(32, 32)}  # the protocol's centre crop


def test_eval_on_whole_frames_keeps_the_borders_in_view(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, _, _ = run(
        capsys,
        "eval",
        sample_video,
        "--rates",
        "0.5",
        "--size",
        "32",
        "--frames",
        "9",
        "--whole-frame",
        "--json",
        tmp_path / "r.json",
        "--checkpoint",
        tiny_checkpoint,
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["crop"] is False
    assert [(r["width"], r["height"]) for r in report["per_video"]] == [(43, 32)]  # 64x48 with short side 32


def test_calibrate_writes_a_checkpoint_with_the_measured_mean(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, out, _ = run(
        capsys,
        "calibrate",
        sample_video,
        "--size",
        "32",
        "--frames",
        "9",
        "--json",
        "-o",
        tmp_path / "cal",
        "--checkpoint",
        tiny_checkpoint,
    )
    mean = json.loads(out)["score_mean"]
    assert code == 0 and mean > 0
    assert float(InfoTok.from_pretrained(tmp_path / "cal").score_mean) == pytest.approx(mean)


def test_a_calibrated_copy_decodes_the_sources_tokens_and_says_so_briefly(
    tmp_path, capsys, tiny_checkpoint, sample_video
):
    code, out, _ = run(
        capsys,
        "calibrate",
        sample_video,
        "--size",
        "32",
        "--frames",
        "9",
        "-o",
        tmp_path / "cal",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0 and out.startswith("calibrated on 1 clips") and len(out.splitlines()) <= 5
    assert "global_elbo score mean" in out and "rd drift thresholds" in out and "{" not in out
    assert "for chains of windows (1 continuing windows)" in out  # 21 frames: two windows of 9 overlapping by 1
    assert InfoTok.from_pretrained(tmp_path / "cal").calibration.rd_continuing_thresholds
    assert run(capsys, "encode", sample_video, "-o", tmp_path / "t.itok", "--checkpoint", tiny_checkpoint)[0] == 0
    code, _, err = run(
        capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "d.mp4", "--checkpoint", tmp_path / "cal"
    )
    assert code == 0, err


def test_a_base_calibrated_for_hold_tokenizes_below_rate_1_with_rd_and_refuses_mask(tmp_path, capsys, sample_video):
    from tests.conftest import tiny_model

    base = tiny_model(adaptive=False).save_pretrained(tmp_path / "base", dtype=torch.float16)
    calibrate = ("calibrate", sample_video, "--size", "32", "--frames", "9", "--checkpoint", base)
    assert run(capsys, *calibrate, "--default-fill", "hold", "-o", tmp_path / "cal")[0] == 0
    model = InfoTok.from_pretrained(tmp_path / "cal")
    assert not model.adaptive and model.choices() == ("rd", "drift", "hold")
    # the copy keeps the half-precision weights (the same decoding weights, not twice the size)
    weights = [(d / "model.safetensors").stat().st_size for d in (base, tmp_path / "cal")]
    assert abs(weights[1] - weights[0]) < 16 and model.model_hash == InfoTok.from_pretrained(base).model_hash
    code, _, err = run(
        capsys, "encode", sample_video, "-o", tmp_path / "t.itok", "--rate", "0.25", "--checkpoint", tmp_path / "cal"
    )
    assert code == 0, err
    tokens = Tokens.load(tmp_path / "t.itok")
    assert tokens.header.strategy == "rd" and tokens.ledger().realized_rate < 0.5
    assert run(capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "d.mp4", "--checkpoint", base)[0] == 0
    code, _, err = run(
        capsys,
        "encode",
        sample_video,
        "-o",
        tmp_path / "m.itok",
        "--rate",
        "0.25",
        "--fill",
        "mask",
        "--checkpoint",
        base,
    )
    assert code != 0 and "only under the hold fill" in err


def test_calibrate_with_a_value_predictor_stores_target_margins(tmp_path, capsys, sample_video):
    from tests.conftest import tiny_model

    source = tiny_model(predictor=True).save_pretrained(tmp_path / "tiny")
    code, out, _ = run(
        capsys,
        "calibrate",
        sample_video,
        "--size",
        "32",
        "--frames",
        "9",
        "--json",
        "-o",
        tmp_path / "cal",
        "--checkpoint",
        source,
    )
    margins = json.loads(out)["target_margins"]
    assert code == 0 and len(margins) == 16 and all(np.isfinite(margins))
    assert InfoTok.from_pretrained(tmp_path / "cal").calibration.target_margins == pytest.approx(margins)


def test_demo_writes_reconstructions_visualizations_and_report(tmp_path, capsys, tiny_checkpoint):
    code, _, _ = run(
        capsys,
        "demo",
        "-o",
        tmp_path / "demo",
        "--frames",
        "9",
        "--height",
        "32",
        "--width",
        "48",
        "--checkpoint",
        tiny_checkpoint,
    )
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert code == 0 and [r["rate"] for r in report["runs"]] == [0.5, 0.25]
    for rate in ("0.5", "0.25"):
        for name in (f"reconstruction_rate{rate}.mp4", f"viz_rate{rate}.mp4", f"viz_rate{rate}.png"):
            assert (tmp_path / "demo" / name).exists()
    assert report["runs"][0]["tokens_kept"] == round(0.5 * report["runs"][0]["tokens_total"])


def test_python_api_accepts_arrays_tensors_and_paths(tmp_path, tiny_checkpoint, sample_video):
    model = InfoTok.from_pretrained(tiny_checkpoint)
    video = read_video(sample_video)[0]
    from_array = model.tokenize(video, rate=0.5, strategy="static")
    from_tensor = model.tokenize(torch.from_numpy(video), rate=0.5, strategy="static")
    from_path = model.tokenize(sample_video, rate=0.5, strategy="static")
    assert all(
        np.array_equal(a.indices, b.indices) and np.array_equal(a.indices, c.indices)
        for a, b, c in zip(from_array.windows, from_tensor.windows, from_path.windows)
    )
    from_path.save(tmp_path / "x.itok")
    out = model.detokenize(Tokens.load(tmp_path / "x.itok"))
    assert out.shape == video.shape and out.dtype == np.uint8
    resized = model.tokenize(video, rate=1.0, strategy="static", size=24)
    assert (resized.header.height, resized.header.width) == (24, 32)


def test_tokens_from_another_model_are_refused(tmp_path, tiny_checkpoint):
    from tests.conftest import tiny_model

    tokens = InfoTok.from_pretrained(tiny_checkpoint).tokenize(synthetic_video(9, 16, 16), rate=0.5)
    other = InfoTok.from_pretrained(tiny_model(seed=3).save_pretrained(tmp_path / "other"))
    with pytest.raises(ValueError, match="made by model 'tiny-infotok'"):
        other.detokenize(tokens)


@pytest.mark.parametrize("flag", ["--border-fraction", "--synthetic-fraction", "--long-fraction"])
def test_train_refuses_a_fraction_outside_0_1(tmp_path, capsys, flag):
    code, _, err = run(capsys, "train", "base", "--out", tmp_path / "run", flag, "1.5")
    assert code == 2 and f"({flag}) must be in [0, 1], got 1.5" in err and not (tmp_path / "run").exists()
    from infotok.train import TrainConfig, Trainer  # the Python API refuses the same

    with pytest.raises(ValueError, match=f"{flag[2:].replace('-', '_')} \\({flag}\\) must be in"):
        Trainer(TrainConfig(out=str(tmp_path / "run"), **{flag[2:].replace("-", "_"): 1.5}))


@pytest.mark.parametrize("long_side", ["100", "16"])  # not a multiple of 8; shorter than the crop
def test_train_refuses_an_elongated_crop_that_cannot_be_cut(tmp_path, capsys, long_side):
    code, _, err = run(
        capsys,
        "train",
        "base",
        "--out",
        tmp_path / "run",
        "--crop",
        "32",
        "--long-fraction",
        "0.5",
        "--long-side",
        long_side,
    )
    assert code == 2 and "(--long-side) must be a multiple of 8 and at least crop (32)" in err
    assert not (tmp_path / "run").exists()
