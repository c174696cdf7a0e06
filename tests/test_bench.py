"""`make bench` end to end on tiny models and clips: every section of BENCHMARKS.md is produced."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from benchmarks import main, motion, spatial_detail

from infotok.metrics import spearman
from infotok.video import synthetic_video, write_video
from tests.conftest import tiny_model
from tests.test_perceptual import TinyI3D, backbone_file, scripted


def test_bench_writes_every_section_with_learned_metrics(tmp_path):
    videos = tmp_path / "videos"
    for seed in range(3):
        write_video(videos / f"clip{seed}.mp4", synthetic_video(12, 40, 48, seed=seed), fps=12)
    ckpt = tiny_model(predictor=True).save_pretrained(tmp_path / "tiny")
    markdown = tmp_path / "report" / "BENCHMARKS.md"
    code = main(
        [
            "--videos",
            str(videos),
            "--infotok",
            str(ckpt),
            "--base",
            str(ckpt),
            "--elastic",
            str(ckpt),
            "--size",
            "32",
            "--frames",
            "9",
            "--no-vmaf",
            "--long-video",
            "clip0.mp4",
            "--camera-video",
            "clip1.mp4",
            "--release",
            "tiny",
            "--out",
            str(tmp_path / "out"),
            "--markdown",
            str(markdown),
            "--lpips-weights",
            str(backbone_file(tmp_path)),
            "--fvd-weights",
            str(scripted(tmp_path, TinyI3D())),
        ]
    )
    assert code == 0
    text = markdown.read_text()
    for section in (
        "## Rate-distortion",
        "## At BPP16 0.81 and 0.56",
        "## BD-rate",
        "## Selection ablation",
        "## Router",
        "## The paper's claims",
        "## Throughput and memory",
    ):
        assert section in text
    assert "| oracle rate |" in text and "Rank agreement (Spearman)" in text
    assert "| PSNR static 0.5 | PSNR global_elbo |" in text and "Whole frames, mean over the clips" in text
    assert "the oracle's whole-frame rates:" in text
    assert "| video | InfoTok-Flex | first frame held | base tokenizer | spatial detail | motion |" in text
    assert "## Still versus moving" in text and "temporal (latent change, training-free)" in text
    assert "with the base tokenizer's: +1.00" in text  # here the base is the same tiny model
    assert "Holding the first frame still lowers the score of " in text
    assert "| LPIPS | FVD |" in text and "need network weights" not in text
    assert (markdown.parent / "docs" / "bench_rd.png").stat().st_size > 0  # beside the markdown that links it
    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    flex = {p["rate"]: p for p in result["curves"]["InfoTok-Flex static"]}
    assert "lpips" in flex[0.5] and "fvd" in flex[0.5] and "lpips" not in flex[0.25]  # table points only
    assert set(result["resources"]["cli"]) == {"60", "600"}  # frame counts, as JSON keys
    assert set(result["resources"]["cli"]["600"]) == {"encode", "decode", "viz", "file_bytes"}
    # the report is a function of bench.json alone: rendered again from it, it says the same
    again = tmp_path / "again" / "BENCHMARKS.md"
    assert main(["--report-only", str(tmp_path / "out" / "bench.json"), "--markdown", str(again)]) == 0
    assert again.read_text() == text
    assert result["resources"]["release"]["encode"]["peak_rss_mib"] > 0 and "| decode |" in text
    assert "Refusing a `.itok` file with a forged length field" in text
    assert set(result["resources"]["dataset"]) == {"1", "2"} and "`infotok encode-dataset` (Ray Data" in text
    assert set(result["resources"]["batches"]) == {"1", "4", "8"}
    for section in (
        "## Rate control: the value predictor and the hold fill",
        "### Target PSNR",
        "### Still versus moving under `rd` at 0.5 (calibrated threshold",
        "| oracle, hold |",
        "### A fixed camera",
        "### A whole long video",
        "Seconds per pixel at 1280x720 / at 455x256",
    ):
        assert section in text
    control = result["rate_control"]
    assert control["accuracy"]["windows"] >= 3 and len(control["targets"]) == 3
    for p in result["curves"]["InfoTok-Flex rd"]:  # a shared budget: the asked mean rate exactly
        assert p["realized_rate"] == pytest.approx(p["rate"], abs=1 / 16 / 3 + 1e-9)
    for p in result["curves"]["InfoTok-Flex rd, hold"]:  # likewise, to the token
        assert p["realized_rate"] == pytest.approx(p["rate"], abs=1 / 100)
    long = control["long_video"]["methods"]  # every window of one video, with the peers and the oracle
    assert {"static, error", "global_elbo, error", "static, temporal, hold", "rd, drift, hold", "oracle, hold"} <= set(
        long
    )
    for p in long["rd, drift, hold, one budget"]:  # `--budget run`: the asked mean rate over the windows
        assert p["realized_rate"] == pytest.approx(p["rate"], abs=1 / 100)
    for p in long["oracle, hold"]:
        assert p["realized_rate"] <= p["rate"] + 1e-9
    assert "| BD-rate vs static | BD-rate vs static, drift, hold |" in text


def test_motion_is_the_mean_absolute_frame_change():
    still = np.full((5, 4, 4, 3), 200, np.uint8)
    assert motion(still) == 0.0 and motion(still[:1]) == 0.0
    ramp = still.copy()
    ramp[1:] = 210  # one step of +10 everywhere, then nothing: (10 + 0 + 0 + 0) / 4
    assert motion(ramp) == pytest.approx(2.5)
    assert motion(ramp[::-1]) == pytest.approx(2.5)  # no uint8 wrap-around on falling values


def test_spatial_detail_is_zero_for_smooth_frames_and_grows_with_fine_texture():
    flat = np.full((3, 16, 24, 3), 90, np.uint8)
    assert spatial_detail(flat) == pytest.approx(0.0, abs=1e-4)
    stripes = flat.copy()
    stripes[:, :, ::2] = 250  # 1-px stripes vanish in an 8x8 average: error 80 everywhere
    assert spatial_detail(stripes) == pytest.approx(80.0, abs=1e-3)
    coarse = flat.copy()
    coarse[:, :, :12] = 250  # one vertical edge: only the pixels next to it differ
    assert 0 < spatial_detail(coarse) < spatial_detail(stripes)
    assert spatial_detail(stripes[:, :13, :21]) == pytest.approx(80.0, abs=1e-3)  # sizes not a multiple of 8


def test_spearman_ranks_with_ties_against_hand_computed_values():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks [0, 1.5, 1.5, 3] and [0, 2, 1, 3]: covariance 4.5 over sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_a_seam_shows_as_a_step_at_a_window_edge_and_a_cut_is_left_out():
    from benchmarks.long_videos import WINDOW, quality_steps

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 150, (1, 8, 8, 3), dtype=np.uint8), 2 * WINDOW, axis=0)
    frames += np.arange(2 * WINDOW, dtype=np.uint8)[:, None, None, None]  # a steady change, no cut
    per_frame = np.full(len(frames), 25.0)
    per_frame[WINDOW:] -= 1.0  # overlap 0: the second window starts 1 dB lower
    per_frame[5] += 0.25
    assert quality_steps(per_frame, frames, overlap=0) == pytest.approx((1.0, 0.25))
    frames[WINDOW:] = 255 - frames[WINDOW:]  # a cut at the same frame: its step is not a seam
    assert quality_steps(per_frame, frames, overlap=0) == pytest.approx((0.0, 0.25))


def test_the_refresh_period_benchmark_runs_and_compares_each_refresh_with_10(monkeypatch, capsys):
    """`python -m benchmarks.refresh_period` on a short made-up video and a tiny model (what `make bench` leaves out
    must still run)."""
    import benchmarks.refresh_period as refresh_period

    from infotok.video import synthetic_video
    from tests.conftest import tiny_model

    monkeypatch.setattr(refresh_period, "videos", lambda: {"short": (synthetic_video(97, 32, 32, seed=1), 30.0)})
    model = tiny_model(predictor=True)
    model.default_fill = "hold"  # as the shipped checkpoint: rd, drift, hold
    monkeypatch.setattr(refresh_period.InfoTok, "from_pretrained", lambda *args, **kwargs: model)
    refresh_period.main()
    out = capsys.readouterr().out
    assert "refresh 30, asked 0.125" in out and "BD-rate in tokens, refresh 1 against refresh 10" in out
