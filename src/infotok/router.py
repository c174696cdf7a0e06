"""The router: per-token error scores from a full-rate decode, and how many tokens each clip gets.

Score map (the released code's ELBO proxy): per-pixel L1 error averaged over channels, pooled over
each token's receptive block (frame 0 alone, then groups of 4 frames; 8x8 pixels). A clip's score
is the mean of its map. Strategies turn scores into rates:
- `global_elbo`: rate = avg_rate * score / score_mean, clipped to [1/16, 1];
- `static`: avg_rate for every clip;
- `uniform`: a random rate in [1/16, 1] with mean avg_rate (the data-agnostic baseline).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Geometry
from .selection import MIN_RATE

STRATEGIES = ("global_elbo", "static", "uniform")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return strategy


def check_rate(rate: float) -> float:
    rate = float(rate)
    if math.isnan(rate) or not MIN_RATE - 1e-9 <= rate <= 1.0 + 1e-9:
        raise ValueError(f"rate must lie in [1/16, 1] (0.0625 to 1), got {rate}")
    return min(1.0, max(MIN_RATE, rate))


def score_map(x: torch.Tensor, x_hat: torch.Tensor, geometry: Geometry = Geometry()) -> torch.Tensor:
    """x, x_hat [B, 3, T, H, W] on the model grid -> per-token mean L1 error [B, t, h, w]."""
    temporal, spatial = geometry.temporal_factor, geometry.spatial_factor
    err = (x.float() - x_hat.float()).abs().mean(dim=1)  # [B, T, H, W]
    first = F.avg_pool2d(err[:, :1], spatial)  # frame 0 is its own latent frame
    rest = err[:, 1:]
    if rest.shape[1]:
        rest = F.avg_pool3d(rest.unsqueeze(1), (temporal, spatial, spatial)).squeeze(1)
        return torch.cat([first, rest], dim=1)
    return first


def global_elbo_rate(avg_rate: float, score: float, score_mean: float) -> float:
    if not score_mean > 0:
        raise ValueError("global_elbo needs a positive calibrated score mean; run `infotok calibrate`")
    return float(np.clip(avg_rate * score / score_mean, MIN_RATE, 1.0))


def balanced_rates(avg_rate: float, scores: list[float], score_mean: float) -> list[float]:
    """global_elbo rates for a set of clips, rescaled so their mean is avg_rate despite clipping.

    Clipping at 1 (or 1/16) removes (or adds) budget; a common factor on score_mean found by
    bisection puts it back, keeping the ordering of the clips.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return []

    def mean_rate(f: float) -> float:
        return float(np.clip(avg_rate * scores * f / score_mean, MIN_RATE, 1.0).mean())

    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if mean_rate(mid) < avg_rate else (lo, mid)
    return [float(r) for r in np.clip(avg_rate * scores * math.sqrt(lo * hi) / score_mean, MIN_RATE, 1.0)]


def uniform_rate(avg_rate: float, generator: np.random.Generator) -> float:
    """A random rate with mean avg_rate: uniform on [lo, 2*avg - lo] within [1/16, 1]."""
    half = min(avg_rate - MIN_RATE, 1.0 - avg_rate)
    return float(generator.uniform(avg_rate - half, avg_rate + half))


def choose_rate(strategy: str, avg_rate: float, score: float | None = None, score_mean: float | None = None,
                generator: np.random.Generator | None = None) -> float:
    """One window's rate under `strategy` (its score is only read by global_elbo)."""
    check_strategy(strategy)
    avg_rate = check_rate(avg_rate)
    if strategy == "static":
        return avg_rate
    if strategy == "global_elbo":
        return global_elbo_rate(avg_rate, score, score_mean)
    return uniform_rate(avg_rate, generator or np.random.default_rng(0))
