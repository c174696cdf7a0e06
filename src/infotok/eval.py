"""Evaluation: TokenBench metrics, rate sweeps over strategies and selections, BD-rate, oracle.

Protocol (TokenBench): first `frames` frames, short side resized to `size`, centre crop; PSNR per
video from the MSE over all its frames in uint8 range, then averaged over videos; SSIM per frame
(data range 255), averaged. One clip = one window, so each clip is encoded and routed once and
then decoded once per (strategy, selection, rate). LPIPS and FVD (module `perceptual`) only with
user-supplied network weights.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import InfoTok
from .perceptual import Perceptual
from .router import balanced_rates, check_rate, uniform_rate
from .selection import keep_mask
from .tokens import TokenHeader, Tokens, TokenWindow
from .video import from_model, pad_to_geometry, read_video, resize_and_crop, resize_short_side, to_model


# --------------------------------------------------------------------------------- metrics
def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """TokenBench PSNR of one video: MSE over all frames and pixels in uint8 range."""
    mse = float(np.mean((reference.astype(np.float64) - distorted.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean over frames of SSIM (Gaussian 11x11, sigma 1.5, data range 255) on RGB frames."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a = torch.from_numpy(np.ascontiguousarray(reference)).permute(0, 3, 1, 2).float()
    b = torch.from_numpy(np.ascontiguousarray(distorted)).permute(0, 3, 1, 2).float()
    # frame by frame: one batched call over a whole clip is several times slower on a CPU
    values = [structural_similarity_index_measure(b[i:i + 1], a[i:i + 1], data_range=255.0) for i in range(len(a))]
    return float(torch.stack(values).mean())


def vmaf(reference: np.ndarray, distorted: np.ndarray, fps: float = 25.0) -> float:
    """VMAF (vmaf_v0.6.1) through the libvmaf in imageio-ffmpeg's static FFmpeg (works offline)."""
    import imageio_ffmpeg

    t, h, w, _ = reference.shape
    with tempfile.TemporaryDirectory() as d:
        ref, dis, log = Path(d, "ref.rgb"), Path(d, "dis.rgb"), Path(d, "vmaf.json")
        ref.write_bytes(np.ascontiguousarray(reference).tobytes())
        dis.write_bytes(np.ascontiguousarray(distorted).tobytes())
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps}"]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", *raw, "-i", str(dis), *raw,
               "-i", str(ref), "-lavfi",
               f"[0:v]format=yuv420p[d];[1:v]format=yuv420p[r];[d][r]libvmaf=model=version=vmaf_v0.6.1"
               f":log_fmt=json:log_path={log}:n_threads=2", "-f", "null", "-"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])


def bd_rate(rates_a, psnr_a, rates_b, psnr_b) -> float:
    """Bjontegaard delta rate (%) of curve B against A: negative = B needs fewer bits for equal PSNR.

    Cubic fit of log-rate as a function of PSNR, integrated over the overlapping PSNR range.
    """
    ra, rb = np.log(np.asarray(rates_a, float)), np.log(np.asarray(rates_b, float))
    pa, pb = np.asarray(psnr_a, float), np.asarray(psnr_b, float)
    deg = min(3, len(pa) - 1, len(pb) - 1)
    fa, fb = np.polyfit(pa, ra, deg), np.polyfit(pb, rb, deg)
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi <= lo:
        raise ValueError("the two curves do not overlap in PSNR")
    ia, ib = np.polyint(fa), np.polyint(fb)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_b = (np.polyval(ib, hi) - np.polyval(ib, lo)) / (hi - lo)
    return float((np.exp(avg_b - avg_a) - 1) * 100)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] (the core of FID/FVD)."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(feats_a, rowvar=False)), np.atleast_2d(np.cov(feats_b, rowvar=False))
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric PSD matrix: sum of sqrt of its eigenvalues
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_covmean)


# ---------------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """One evaluation clip, encoded and routed once."""

    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3] after the protocol's resize and crop
    x: torch.Tensor  # model input [1, 3, T', H', W'] on the model grid
    codes: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor  # [t, h, w]
    fvd_reference: np.ndarray | None = None  # FVD features of the original frames, computed once

    @property
    def score(self) -> float:
        return float(self.scores.mean())


def load_clip(model: InfoTok, path: Path, size: int, frames: int, crop: bool = True) -> Clip:
    """Read, resize (short side `size`), centre-crop to `size` x `size` unless `crop` is False,
    encode and route one clip."""
    raw, _ = read_video(path, max_frames=frames)
    return make_clip(model, path.name, resize_and_crop(raw, size) if crop else resize_short_side(raw, size))


def make_clip(model: InfoTok, name: str, frames: np.ndarray) -> Clip:
    """Encode and route uint8 frames [T, H, W, 3] that are already at the evaluation size."""
    x = pad_to_geometry(to_model(frames).to(model.device), model.temporal_factor, model.spatial_factor)
    with torch.no_grad():
        codes, indices = model.encode(x)
        scores = model.scores(x, codes)[0].cpu()
    return Clip(name, frames, x, codes, indices, scores)


def decode_clip(model: InfoTok, clip: Clip, mask: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        y = model.decode_codes(clip.codes, mask[None].to(model.device))
    t, h, w = clip.frames.shape[:3]
    return from_model(y[:, :, :t, :h, :w])


def clip_file_bits(model: InfoTok, clip: Clip, mask: torch.Tensor, rate: float) -> int:
    """Bits of the real `.itok` file holding this clip at this mask."""
    t, h, w = clip.frames.shape[:3]
    header = TokenHeader(model=model.name, model_hash=model.model_hash, config_hash=model.config_hash,
                         levels=list(model.base.levels), temporal_factor=model.temporal_factor,
                         spatial_factor=model.spatial_factor, width=w, height=h, source_width=w, source_height=h,
                         fps=25.0, num_frames=t, window=t, overlap=0, strategy="", selection="", avg_rate=rate,
                         score_mean=float(model.score_mean))
    window = TokenWindow(0, t, rate, clip.score, mask.numpy(), clip.indices[0][mask].cpu().numpy().astype(np.uint16))
    with tempfile.TemporaryDirectory() as d:
        path = Tokens(header, [window]).save(Path(d, "clip.itok"))
        return os.path.getsize(path) * 8


def measure_clip(model: InfoTok, clip: Clip, mask: torch.Tensor, rate: float, quality: bool = True,
                 with_vmaf: bool = False, perceptual: Perceptual | None = None) -> dict:
    """Decode one clip at one keep-mask and score it: PSNR always; SSIM and real file BPP16 with
    `quality`; VMAF on request; LPIPS, and the FVD features (key `_fvd`, reduced over a run by
    `fvd_of`), with `perceptual`."""
    recon = decode_clip(model, clip, mask)
    row = {"video": clip.name, "realized_rate": float(mask.float().mean()), "psnr": psnr(clip.frames, recon)}
    if quality:
        row["ssim"] = ssim(clip.frames, recon)
        row["bpp16_file"] = clip_file_bits(model, clip, mask, rate) * 16 / clip.frames[..., 0].size
    if with_vmaf:
        row["vmaf"] = vmaf(clip.frames, recon)
    if perceptual and perceptual.lpips:
        row["lpips"] = perceptual.lpips.video_distance(clip.frames, recon)
    if perceptual and perceptual.fvd:
        if clip.fvd_reference is None:
            clip.fvd_reference = perceptual.fvd(clip.frames)
        row["_fvd"] = perceptual.fvd(recon)
    return row


def fvd_of(rows: list[dict], clips: list[Clip]) -> float | None:
    """FVD of one run: Frechet distance between original and reconstruction features of its clips.
    Pops the rows' `_fvd` features; None without them or with fewer than two clips."""
    feats = [r.pop("_fvd", None) for r in rows]
    if any(f is None for f in feats) or len(feats) < 2:
        return None
    return frechet_distance(np.stack([c.fvd_reference for c in clips]), np.stack(feats))


def binary_search_rate(mse_at, levels: int = 16, threshold: float = 0.003) -> tuple[int, int]:
    """ElasticTok's search: the fewest tokens (k of `levels` steps) whose reconstruction meets an MSE
    threshold, assuming quality grows with k. `mse_at(k)` decodes at rate k/levels (one pass each).

    Returns (k, passes). If even k = levels misses the threshold, k = levels.
    """
    lo, hi, passes = 1, levels, 0
    while lo < hi:
        mid = (lo + hi) // 2
        passes += 1
        if mse_at(mid) <= threshold:
            hi = mid
        else:
            lo = mid + 1
    return lo, passes


def clip_rates(strategy: str, avg_rate: float, clips: list[Clip], score_mean: float, seed: int = 0) -> list[float]:
    """Per-clip rates for one run: global_elbo is balanced so the run's mean rate is avg_rate."""
    if strategy == "static":
        return [avg_rate] * len(clips)
    if strategy == "global_elbo":
        return balanced_rates(avg_rate, [c.score for c in clips], score_mean)
    if strategy == "uniform":
        rng = np.random.default_rng(seed)
        return [uniform_rate(avg_rate, rng) for _ in clips]
    raise ValueError(f"unknown strategy {strategy!r}")


def evaluate(model: InfoTok, paths: list[Path], rates: list[float], strategies: list[str], selections: list[str],
             size: int = 256, frames: int = 33, with_vmaf: bool = False, seed: int = 0, progress=None,
             clips: list[Clip] | None = None, perceptual: Perceptual | None = None, crop: bool = True) -> dict:
    """Run every (strategy, selection, rate) over the clips; returns the JSON report. `crop=False`
    keeps whole frames (short side `size`), where borders such as a pillarbox stay in view."""
    t0 = time.time()
    if clips is None:
        clips = []
        for p in paths:
            clips.append(load_clip(model, p, size, frames, crop=crop))
            if progress:
                progress(f"encoded {p.name}")
    encode_seconds = time.time() - t0
    results, per_video = [], []
    for strategy in strategies:
        for selection in selections:
            for avg_rate in rates:
                avg_rate = check_rate(avg_rate)
                if not model.adaptive and avg_rate < 1:
                    raise ValueError(f"checkpoint {model.name!r} is fixed-rate: evaluate it with --rates 1")
                t1 = time.time()
                r_list = clip_rates(strategy, avg_rate, clips, float(model.score_mean), seed)
                rows = []
                for clip, r in zip(clips, r_list):
                    gen = torch.Generator().manual_seed(seed)
                    mask = keep_mask(clip.scores, r, selection, gen)
                    rows.append({"strategy": strategy, "selection": selection, "rate": avg_rate, "clip_rate": r,
                                 "score": clip.score, "width": clip.frames.shape[2], "height": clip.frames.shape[1]}
                                | measure_clip(model, clip, mask, r, with_vmaf=with_vmaf, perceptual=perceptual))
                fvd = fvd_of(rows, clips)
                realized = float(np.mean([r["realized_rate"] for r in rows]))
                summary = {"strategy": strategy, "selection": selection, "rate": avg_rate,
                           "realized_rate": realized, "bpp16": realized + (1 / 16 if model.adaptive else 0.0),
                           "bpp16_file": float(np.mean([r["bpp16_file"] for r in rows])),
                           "psnr": float(np.mean([r["psnr"] for r in rows])),
                           "ssim": float(np.mean([r["ssim"] for r in rows])),
                           "videos": len(rows),
                           "nfe": 2 if (strategy == "global_elbo" or (selection == "error" and avg_rate < 1)) else 1,
                           "seconds": time.time() - t1 + encode_seconds / max(1, len(rates) * len(strategies) * len(selections))}
                if with_vmaf:
                    summary["vmaf"] = float(np.mean([r["vmaf"] for r in rows]))
                if perceptual and perceptual.lpips:
                    summary["lpips"] = float(np.mean([r["lpips"] for r in rows]))
                if fvd is not None:
                    summary["fvd"] = fvd
                results.append(summary)
                per_video += rows
                if progress:
                    progress(f"{strategy}/{selection} rate {avg_rate:g}: PSNR {summary['psnr']:.2f} dB")
    return {"checkpoint": model.name, "size": size, "frames": frames, "crop": crop, "results": results,
            "per_video": per_video}


def write_report(report: dict, json_path: str | os.PathLike) -> None:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    rows = report["per_video"]
    if rows:
        with open(json_path.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def oracle_rates(quality, candidate_rates: list[float], avg_rate: float) -> tuple[list[float], float]:
    """The paper's "Optimal": per-clip rates from `candidate_rates` maximising mean quality at a mean rate.

    quality[i][j] is clip i's PSNR at candidate_rates[j]. Exact by dynamic programming over the
    total budget in units of the rate grid (a multiple-choice knapsack); mean rate <= avg_rate.
    """
    q = np.asarray(quality, float)
    n, m = q.shape
    unit = min(np.diff(sorted(candidate_rates))) if m > 1 else candidate_rates[0]
    cost = [int(round(r / unit)) for r in candidate_rates]
    budget = int(math.floor(avg_rate * n / unit + 1e-9))
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((n, budget + 1), dtype=int)
    for i in range(n):
        nxt = np.full(budget + 1, -np.inf)
        for j, c in enumerate(cost):
            if c > budget:
                continue
            cand = np.full(budget + 1, -np.inf)
            cand[c:] = best[:budget + 1 - c] + q[i, j]
            better = cand > nxt
            nxt[better], choice[i, better] = cand[better], j
        best = nxt
    b = int(np.argmax(best))
    if not np.isfinite(best[b]):
        raise ValueError("no feasible assignment: the budget is below the smallest candidate rate")
    picks = []
    for i in range(n - 1, -1, -1):
        j = choice[i, b]
        picks.append(candidate_rates[j])
        b -= cost[j]
    picks.reverse()
    return picks, float(best.max() / n)
