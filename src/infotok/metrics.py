"""Quality metrics: TokenBench PSNR (whole clips and streamed), SSIM, VMAF, BD-rate, Frechet distance.

One home for each, so the CLI, evaluation, benchmarks and the training log report the same numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """10 log10(peak^2 / MSE); peak 255 for uint8 frames, 2 for model tensors in [-1, 1]."""
    return float("inf") if mse <= 0 else 10 * math.log10(peak**2 / mse)


def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """TokenBench PSNR of one video: MSE over all frames and pixels in uint8 range."""
    return psnr_from_mse(float(np.mean((reference.astype(np.float64) - distorted.astype(np.float64)) ** 2)))


class PSNRMeter:
    """TokenBench PSNR of a video that streams past frame by frame (`add` each pair, then `value`)."""

    def __init__(self):
        self.squared_error, self.count = 0.0, 0
        self.frame_mse: list[float] = []

    def add(self, reference: np.ndarray, distorted: np.ndarray) -> None:
        error = float(((reference.astype(np.float64) - distorted.astype(np.float64)) ** 2).sum())
        self.squared_error += error
        self.count += reference.size
        self.frame_mse.append(error / reference.size)

    @property
    def value(self) -> float:
        return psnr_from_mse(self.squared_error / max(self.count, 1))

    def span(self, start: int, end: int) -> float:
        """PSNR of frames [start, end) (a window's span) among those added so far."""
        return psnr_from_mse(float(np.mean(self.frame_mse[start:end])))


def ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean over frames of SSIM (Gaussian 11x11, sigma 1.5, data range 255) on RGB frames."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a = torch.from_numpy(np.ascontiguousarray(reference)).permute(0, 3, 1, 2).float()
    b = torch.from_numpy(np.ascontiguousarray(distorted)).permute(0, 3, 1, 2).float()
    # frame by frame: one batched call over a whole clip is several times slower on a CPU
    values = [structural_similarity_index_measure(b[i : i + 1], a[i : i + 1], data_range=255.0) for i in range(len(a))]
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
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-loglevel",
            "error",
            *raw,
            "-i",
            str(dis),
            *raw,
            "-i",
            str(ref),
            "-lavfi",
            f"[0:v]format=yuv420p[d];[1:v]format=yuv420p[r];[d][r]libvmaf=model=version=vmaf_v0.6.1"
            f":log_fmt=json:log_path={log}:n_threads=2",
            "-f",
            "null",
            "-",
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])


def bd_rate(rates_a, psnr_a, rates_b, psnr_b, fit: str = "cubic") -> float:
    """Bjontegaard delta rate (%) of curve B against A: negative = B needs fewer bits for equal PSNR.

    Log-rate as a function of PSNR, averaged over the overlapping PSNR range: by a cubic fit (the
    classic BD-rate), or with `fit="linear"` interpolated linearly between each curve's points that
    still raise its PSNR (a curve that flattens at full quality makes the cubic fit meaningless).
    """
    if fit not in ("cubic", "linear"):
        raise ValueError(f"fit must be cubic or linear, got {fit!r}")
    ra, rb = np.log(np.asarray(rates_a, float)), np.log(np.asarray(rates_b, float))
    pa, pb = np.asarray(psnr_a, float), np.asarray(psnr_b, float)
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi <= lo:
        raise ValueError("the two curves do not overlap in PSNR")
    if fit == "linear":
        grid = np.linspace(lo, hi, 1001)
        avg_a, avg_b = (np.interp(grid, *_rising(p, r)).mean() for p, r in ((pa, ra), (pb, rb)))
        return float((np.exp(avg_b - avg_a) - 1) * 100)
    deg = min(3, len(pa) - 1, len(pb) - 1)
    fa, fb = np.polyfit(pa, ra, deg), np.polyfit(pb, rb, deg)
    ia, ib = np.polyint(fa), np.polyint(fb)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_b = (np.polyval(ib, hi) - np.polyval(ib, lo)) / (hi - lo)
    return float((np.exp(avg_b - avg_a) - 1) * 100)


def psnr_at(rates, psnr, rate: float) -> float:
    """A rate-PSNR curve read at `rate`: linear in log rate between the points that still raise its PSNR (as
    `bd_rate(fit="linear")` reads it); NaN outside those points' rates, where it would be a guess."""
    p, r = _rising(np.asarray(psnr, float), np.log(np.asarray(rates, float)))
    return float(np.interp(np.log(rate), r, p, left=np.nan, right=np.nan))


def _rising(psnr: np.ndarray, log_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A curve's points in rate order, keeping each only where it raises the PSNR (for np.interp)."""
    order = np.argsort(log_rate, kind="stable")
    keep_p, keep_r = [], []
    for p, r in zip(psnr[order], log_rate[order]):
        if not keep_p or p > keep_p[-1]:
            keep_p.append(p)
            keep_r.append(r)
    return np.array(keep_p), np.array(keep_r)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] (the core of FID/FVD)."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(feats_a, rowvar=False)), np.atleast_2d(np.cov(feats_b, rowvar=False))
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric PSD matrix: sum of sqrt of its eigenvalues
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_covmean)


def spearman(a, b) -> float:
    """Spearman rank correlation, ties given their mean rank."""

    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
