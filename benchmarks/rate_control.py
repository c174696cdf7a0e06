"""Experiments of the rate control: the value predictor (`rd` under the mask fill, target PSNR, value
selection) and the hold fill (drift selection, `rd` on the codes' drift).

Each returns data; `report.rate_control_sections` writes it up. Windows: every evaluation clip's
first window (the protocol's clips) and, where the clip is long enough, its second window (frames
28-60, the pipeline's stride), each encoded once with its scores kept; their PSNR at every rate k/16
is measured once per selection and reused by the experiments below.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infotok.eval import Clip, calibrated_rd_rate, clip_curves, clip_rates, make_clip
from infotok.ledger import MASK_BPP16
from infotok.model import InfoTok
from infotok.router import global_elbo_rate, rd_rates, slope_for, target_rates
from infotok.video import iter_windows, read_video, resize_and_crop, resize_short_side

from .experiments import ORACLE_GRID, RATES, Curves, log, measure, psnr_grid
from .peers import binary_search_rate, oracle_rates

TARGET_RATES = (0.25, 0.5, 0.75)  # targets: the mean PSNR `static` reaches at these rates
HIT_MARGIN = 0.5  # a window hits a target when its PSNR is at least target - 0.5 dB
STILL_CHANGE = 3.0  # uint8 levels: a latent cell is still when its pixels moved less than this


@dataclass
class Windows:
    """Evaluation windows with their PSNR at every rate k/16 under value and error selection."""

    clips: list[Clip]
    value: np.ndarray  # [windows, 16]
    error: np.ndarray

    @property
    def curves(self) -> np.ndarray:
        return clip_curves(self.clips)


def evaluation_windows(model: InfoTok, videos: list[Path], size: int, frames: int) -> Windows:
    clips = []
    for v in videos:
        raw, _ = read_video(v, max_frames=2 * frames - 5)
        for i, (start, end, chunk) in enumerate(iter_windows(iter(raw), frames, 5)):
            if i == 0 or end - start == frames:  # the protocol's clip (however short), then whole windows
                clips.append(make_clip(model, f"{v.name}#{i}", resize_and_crop(chunk, size)))
    log(f"{len(clips)} evaluation windows: PSNR at every rate k/16, value and error selection")
    return Windows(clips, psnr_grid(model, clips, ORACLE_GRID, "value"), psnr_grid(model, clips, ORACLE_GRID, "error"))


def value_sweeps(model: InfoTok, clips: list[Clip], curves: Curves) -> None:
    """Static rates with value selection, and `rd` with value selection at every rate: its shared
    budget (each run's mean rate exact, as global_elbo's is balanced) and the calibrated slope that
    `infotok encode --strategy rd` uses (each clip alone; its mean rate is whatever it comes to)."""
    predicted = clip_curves(clips)
    for rate in RATES:
        curves.add(
            "InfoTok-Flex static, value selection", rate, [measure(model, c, rate, "value") for c in clips], clips
        )
        rows = [
            measure(model, c, r, "value") | {"clip_rate": r}
            for c, r in zip(clips, clip_rates(model, "rd", rate, clips))
        ]
        curves.add("InfoTok-Flex rd", rate, rows, clips)
        slope = slope_for(model.calibration.rd_slopes, rate)
        rows = [measure(model, c, r, "value") | {"clip_rate": r} for c, r in zip(clips, rd_rates(predicted, slope))]
        curves.add("InfoTok-Flex rd, calibrated slope", rate, rows, clips)


HOLD = dict(selection="drift", fill="hold")  # the shipped checkpoint's default tokenization


def hold_sweeps(model: InfoTok, clips: list[Clip], curves: Curves) -> None:
    """The hold fill with drift selection (and, at static rates, with the temporal-redundancy ranking it
    replaced): at static rates; `rd` with a shared budget (each run's
    mean rate exact) and with the calibrated threshold (each clip alone, as `encode` does); and the
    per-clip oracle over hold-decoded rates k/16."""
    for rate in RATES:
        curves.add("InfoTok-Flex static, hold", rate, [measure(model, c, rate, **HOLD) for c in clips], clips)
        curves.add(
            "InfoTok-Flex static, hold, temporal selection",
            rate,
            [measure(model, c, rate, "temporal", fill="hold") for c in clips],
            clips,
        )
        rows = [
            measure(model, c, r, **HOLD) | {"clip_rate": r}
            for c, r in zip(clips, clip_rates(model, "rd", rate, clips, fill="hold"))
        ]
        curves.add("InfoTok-Flex rd, hold", rate, rows, clips)
        rows = [
            measure(model, c, r, **HOLD) | {"clip_rate": r}
            for c, r in ((c, calibrated_rd_rate(model, c, rate)) for c in clips)
        ]
        curves.add("InfoTok-Flex rd, hold, calibrated threshold", rate, rows, clips)
    grid = psnr_grid(model, clips, ORACLE_GRID, **HOLD)
    for rate in RATES:
        picks, mean_psnr = oracle_rates(grid, ORACLE_GRID, rate)
        curves.points.setdefault("oracle, hold", []).append(
            {
                "method": "oracle, hold",
                "rate": rate,
                "realized_rate": float(np.mean(picks)),
                "bpp16": float(np.mean(picks)) + MASK_BPP16,
                "psnr": mean_psnr,
                "videos": len(clips),
            }
        )


def oracle_value(windows: Windows, first: list[int], curves: Curves) -> None:
    """The per-clip oracle over value-selected rates, on the protocol's clips."""
    for rate in RATES:
        picks, mean_psnr = oracle_rates(windows.value[first], ORACLE_GRID, rate)
        curves.points.setdefault("oracle, value selection", []).append(
            {
                "method": "oracle, value selection",
                "rate": rate,
                "realized_rate": float(np.mean(picks)),
                "bpp16": float(np.mean(picks)) + MASK_BPP16,
                "psnr": mean_psnr,
                "videos": len(first),
            }
        )


def predictor_accuracy(windows: Windows) -> dict:
    """Predicted vs measured PSNR (value selection) over every window and rate k/16."""
    error = windows.curves - windows.value
    absolute = np.abs(error)
    return {
        "windows": len(windows.clips),
        "median_abs_db": float(np.median(absolute)),
        "p90_abs_db": float(np.percentile(absolute, 90)),
        "mean_signed_db": float(error.mean()),
        "by_rate": {f"{k + 1}/16": float(np.median(absolute[:, k])) for k in (0, 3, 7, 11, 15)},
    }


def target_mode(model: InfoTok, windows: Windows, curves_static: list[dict]) -> list[dict]:
    """`--target-psnr` (with the checkpoint's calibrated margins, and on the predicted curves as they
    are) against the single `static` rate that brings 90% of windows within 0.5 dB of the target, and
    against ElasticTok's binary search of decoder passes (on the same value-selected decodes).
    Targets: the mean PSNR `static` (error selection) reaches at TARGET_RATES."""
    out = []
    predicted = windows.curves
    for rate in TARGET_RATES:
        target = round(next(p for p in curves_static if abs(p["rate"] - rate) < 1e-9)["psnr"] * 2) / 2
        need = target - HIT_MARGIN
        row = {"target": target}
        for key, margins in (("calibrated", model.calibration.target_margins), ("uncalibrated", None)):
            k = (np.array(target_rates(predicted, target, margins)) * 16).round().astype(int)
            reached = windows.value[np.arange(len(k)), k - 1]
            row[key] = {
                "rate": float(np.mean(k / 16)),
                "hit": float(np.mean(reached >= need)),
                "psnr": float(reached.mean()),
            }
        for name, grid in (("static_error", windows.error), ("static_value", windows.value)):
            enough = [j for j in range(16) if np.mean(grid[:, j] >= need) >= 0.9]
            row[name] = {
                "rate": (enough[0] + 1) / 16 if enough else None,
                "hit": float(np.mean(grid[:, enough[0]] >= need)) if enough else None,
            }
        searched = [binary_search_rate(lambda j, i=i: -windows.value[i, j - 1], 16, -need) for i in range(len(k))]
        row["search"] = {
            "rate": float(np.mean([s[0] / 16 for s in searched])),
            "hit": float(np.mean([windows.value[i, s[0] - 1] >= need for i, s in enumerate(searched)])),
            "passes": float(np.mean([s[1] for s in searched])),
        }
        out.append(row)
        log(f"target {target:.1f} dB: rate {row['calibrated']['rate']:.3f}, hit {row['calibrated']['hit']:.2f}")
    return out


def still_versus_moving_rd(model: InfoTok, clips: list[Clip], rate: float = 0.5) -> dict[str, dict]:
    """Each clip moving and held still under `rd` at `rate`, each clip alone as `encode` treats it:
    under mask (calibrated slope, value selection) and under hold (calibrated threshold, drift
    selection); and the still shot at `static` `rate` with the same selection and fill."""
    out = {"mask": {}, "hold": {}}
    for c in clips:
        held = make_clip(model, c.name, np.repeat(c.frames[:1], len(c.frames), 0))
        for fill, selection in (("mask", "value"), ("hold", "drift")):
            row = {}
            for label, clip in (("moving", c), ("still", held)):
                r = calibrated_rd_rate(model, clip, rate, fill)
                m = measure(model, clip, r, selection, quality=False, fill=fill)
                row[label] = {
                    "rate": r,
                    "kept": round(m["realized_rate"] * clip.batch.mask[0].numel()),
                    "psnr": m["psnr"],
                }
            row["still"]["psnr_static"] = measure(model, held, rate, selection, quality=False, fill=fill)["psnr"]
            out[fill][c.name] = row
    return out


def static_camera(model: InfoTok, video: Path, size: int, frames: int, rate: float = 0.5) -> dict:
    """Kept fraction of still and moving latent cells after the first latent frame, on a fixed-camera
    clip: still where the cell's pixels moved less than STILL_CHANGE levels from the previous latent
    frame's last frame. For `global_elbo` + error (the paper), `rd` + value (calibrated slope), `rd`
    under hold (calibrated threshold) and `static` with value selection and under hold."""
    raw, _ = read_video(video, max_frames=frames)
    clip = make_clip(model, video.name, resize_and_crop(raw, size))
    x = clip.frames.astype(np.float32)
    t, s = model.geometry.temporal_factor, model.geometry.spatial_factor
    lat_t = clip.batch.mask.shape[1]
    h, w = clip.batch.mask.shape[2:]
    change = np.zeros((lat_t - 1, h, w))
    for j in range(1, lat_t):
        block = np.abs(x[1 + (j - 1) * t : 1 + j * t] - x[(j - 1) * t]).mean(axis=(0, 3))
        change[j - 1] = block[: h * s, : w * s].reshape(h, s, w, s).mean(axis=(1, 3))
    still = change < STILL_CHANGE
    out = {"video": video.name, "still_share": float(still.mean())}
    elbo_rate = global_elbo_rate(rate, clip.score, float(model.score_mean))
    for label, r, selection in (
        ("global_elbo, error", elbo_rate, "error"),
        ("rd, value", calibrated_rd_rate(model, clip, rate, "mask"), "value"),
        (f"static {rate:g}, value", rate, "value"),
        ("rd, hold", calibrated_rd_rate(model, clip, rate), "drift"),
        (f"static {rate:g}, hold", rate, "drift"),
    ):
        mask = model.reselect(clip.batch, [r], selection).mask[0, 1:].cpu().numpy()
        out[label] = {
            "rate": r,
            "still_kept": float(mask[still].mean()) if still.any() else None,
            "moving_kept": float(mask[~still].mean()) if (~still).any() else None,
        }
    return out


LONG_RATES = (0.5, 0.25, 0.125)


def long_video(model: InfoTok, video: Path, size: int, frames: int) -> dict:
    """Every window of a whole long video (short side `size`, no crop): mean rate and mean PSNR of its
    windows at LONG_RATES (and at rate 1, where every method keeps every token) under the paper's
    `static` and `global_elbo` (each window alone, as `encode` does), value selection (`static`, `rd`
    at the calibrated slope), the hold fill (`static` with the temporal-redundancy ranking and with
    drift, `rd` at the calibrated threshold as `encode` does and with one exact budget over the
    video's windows as `--budget run` does) and the per-window oracle over hold-decoded rates k/16.
    Each window is encoded once, then re-selected and decoded."""
    raw, _ = read_video(video)
    windows = [
        make_clip(model, f"{video.name}#{i}", resize_short_side(chunk, size))
        for i, (_, _, chunk) in enumerate(iter_windows(iter(raw), frames, 5))
    ]
    hold_grid = psnr_grid(model, windows, ORACLE_GRID, **HOLD)  # also static hold at every k/16
    full = {"rate": 1.0, "realized_rate": 1.0, "psnr": float(hold_grid[:, -1].mean())}

    def point(rate: float, rates: list[float], psnrs) -> dict:
        return {"rate": rate, "realized_rate": float(np.mean(rates)), "psnr": float(np.mean(psnrs))}

    methods = {
        "static, error": ("static", "error", "mask"),
        "global_elbo, error": ("global_elbo", "error", "mask"),
        "static, value": ("static", "value", "mask"),
        "rd, value": ("rd", "value", "mask"),
        "static, temporal, hold": ("static", "temporal", "hold"),
        "rd, drift, hold": ("rd", "drift", "hold"),
        "rd, drift, hold, one budget": ("budget", "drift", "hold"),
    }
    out = {label: [full] for label in [*methods, "static, drift, hold", "oracle, hold"]}
    for rate in LONG_RATES:
        for label, (strategy, selection, fill) in methods.items():
            if strategy == "budget":
                rates = clip_rates(model, "rd", rate, windows, fill="hold")
            else:
                rates = [
                    calibrated_rd_rate(model, c, rate, fill)
                    if strategy == "rd"
                    else rate
                    if strategy == "static"
                    else global_elbo_rate(rate, c.score, float(model.score_mean))
                    for c in windows
                ]
            rows = [measure(model, c, r, selection, quality=False, fill=fill) for c, r in zip(windows, rates)]
            out[label].append(point(rate, [r["realized_rate"] for r in rows], [r["psnr"] for r in rows]))
        k = ORACLE_GRID.index(rate)
        out["static, drift, hold"].append(point(rate, [rate], hold_grid[:, k]))
        picks, best = oracle_rates(hold_grid, ORACLE_GRID, rate)
        out["oracle, hold"].append(point(rate, picks, [best]))
        log(f"long video at {rate:g}: " + ", ".join(f"{m} {v[-1]['psnr']:.2f}" for m, v in out.items()))
    return {"video": video.name, "windows": len(windows), "frames": len(raw), "methods": out}


def tokenize_seconds(model: InfoTok, size: int, frames: int, repeats: int = 3) -> dict:
    """model.encode seconds per window (short side `size`, 16:9) for a fixed rate (no router, no
    predictor), global_elbo (the router's decoder pass) and rd (the value predictor)."""
    width = int(round(size * 16 / 9 / 8)) * 8
    x = torch.rand(1, 3, frames, size, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = {"size": [width, size]}
    for label, kwargs in (
        ("fixed rate", dict(strategy="static", selection="order", fill="mask")),
        ("global_elbo", dict(strategy="global_elbo", selection="error", fill="mask")),
        ("rd", dict(strategy="rd", selection="value", fill="mask")),
        ("rd, hold", dict(strategy="rd", selection="drift", fill="hold")),
    ):
        model.encode(x, 0.5, **kwargs)
        t = time.perf_counter()
        for _ in range(repeats):
            model.encode(x, 0.5, **kwargs)
        out[label] = (time.perf_counter() - t) / repeats
    return out


def predictor_share(model: InfoTok) -> float:
    return sum(p.numel() for p in model.predictor.parameters()) / sum(p.numel() for p in model.parameters())


def run(setup, model: InfoTok, clips: list[Clip], curves: Curves, long_name: str, camera_name: str) -> dict:
    """Every rate-control experiment; `clips` are the protocol's clips (encoded with scores)."""
    value_sweeps(model, clips, curves)
    hold_sweeps(model, clips, curves)
    windows = evaluation_windows(model, setup.videos, setup.size, setup.frames)
    first = [i for i, c in enumerate(windows.clips) if c.name.endswith("#0")]
    oracle_value(windows, first, curves)
    videos = {v.name: v for v in setup.videos}
    return {
        "accuracy": predictor_accuracy(windows),
        "targets": target_mode(model, windows, curves.points["InfoTok-Flex static"]),
        "still_rd": still_versus_moving_rd(model, clips),
        "static_camera": static_camera(model, videos[camera_name], setup.size, setup.frames),
        "long_video": long_video(model, videos[long_name], setup.size, setup.frames),
        "seconds": tokenize_seconds(model, setup.size, setup.frames),
        "predictor_share": predictor_share(model),
    }
