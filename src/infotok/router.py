"""The router: per-token error scores from a full-rate decode, and how many tokens each clip gets.

Score map (the released code's ELBO proxy): per-pixel L1 error averaged over channels, pooled over
each token's receptive block (frame 0 alone, then groups of 4 frames; 8x8 pixels). A clip's score
is the mean of its map. The rate algorithms (`rate_policies` names which one a tokenization runs):
- `global_elbo`: rate = avg_rate * score / score_mean, clipped to [1/16, 1];
- `static`: avg_rate for every clip;
- `uniform`: a random rate in [1/16, 1] with mean avg_rate (the data-agnostic baseline);
- `rd`: from each window's predicted rate-distortion curve (the value predictor's PSNR at rates
  k/16), the rate where the curve's slope equals a slope calibrated for avg_rate and stored in the
  checkpoint (equal slopes maximise the mean PSNR under the average; one stored slope keeps a
  video's tokens independent of the other videos of a run). `shared_curve_counts` instead spends an
  exact budget of tokens shared by a set of windows, and `target_rates` gives each window the fewest tokens
  whose predicted PSNR, less a calibrated margin, reaches a target. Under the `hold` fill
  (`fill.py`) a dropped token costs about how far its code drifted from the code held in its place,
  so equal slopes become one threshold on that drift: `hold_rates` keeps every token that drifted
  more than a threshold calibrated for avg_rate (a still shot keeps little more than its first
  latent frame), and `shared_hold_counts` spends an exact budget shared by a set of windows: one
threshold for all, found from each window's kept count on a grid of thresholds (a few numbers per
window, so a whole dataset's windows fit in memory; `dataset` keeps them per video on disk).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .fill import drift, drift_ceiling
from .geometry import Geometry
from .names import STRATEGIES
from .selection import MIN_RATE
from .video import unit_range


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value


def check_strategy(strategy: str) -> str:
    return _check_choice(strategy, STRATEGIES, "strategy")


def check_rate(rate: float, floor: float = MIN_RATE) -> float:
    """A rate in [1/16, 1]; a window that continues another may keep fewer (`floor`, `hold_rates`)."""
    rate = float(rate)
    if math.isnan(rate) or not floor - 1e-9 <= rate <= 1.0 + 1e-9:
        span = "[1/16, 1] (0.0625 to 1)" if floor == MIN_RATE else f"[{floor:.6f}, 1]"
        raise ValueError(f"rate must lie in {span}, got {rate}")
    return min(1.0, max(floor, rate))


def score_map(x: torch.Tensor, x_hat: torch.Tensor, geometry: Geometry = Geometry()) -> torch.Tensor:
    """x, x_hat [B, 3, T, H, W] on the model grid -> per-token mean L1 error [B, t, h, w]."""
    return token_errors(x, x_hat, geometry)


def token_errors(
    x: torch.Tensor, x_hat: torch.Tensor, geometry: Geometry = Geometry(), power: int = 1, chunk_pixels: int = 1 << 22
) -> torch.Tensor:
    """Mean |x - x_hat| ** power over each token's block of pixels: [B, 3, T, H, W] -> [B, t, h, w];
    x may be uint8 pixels (converted a chunk at a time as `unit_range` converts them).

    Computed a few latent frames at a time (about `chunk_pixels` full-resolution pixels each), so the
    float error temporaries stay small instead of several whole-window copies (~400 MB each at 720p);
    each block is pooled exactly as over the whole window."""
    temporal, spatial = geometry.temporal_factor, geometry.spatial_factor
    height, width = x.shape[-2:]

    def err(a: int, b: int) -> torch.Tensor:  # [B, b - a, H, W]
        xa, xb = x[:, :, a:b], x_hat[:, :, a:b]
        # uint8 pixels are converted into a new tensor, which then takes the difference in place
        e = (unit_range(xa).sub_(xb) if xa.dtype == torch.uint8 else xa.float() - xb.float()).abs_()
        return (e if power == 1 else e.pow_(power)).mean(dim=1)

    pooled = [F.avg_pool2d(err(0, 1), spatial)]  # frame 0 is its own latent frame
    step = temporal * max(1, chunk_pixels // (temporal * height * width))
    for a in range(1, x.shape[2], step):
        pooled.append(
            F.avg_pool3d(err(a, min(x.shape[2], a + step)).unsqueeze(1), (temporal, spatial, spatial)).squeeze(1)
        )
    return torch.cat(pooled, dim=1)


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


def choose_rate(
    strategy: str,
    avg_rate: float,
    score: float | None = None,
    score_mean: float | None = None,
    generator: np.random.Generator | None = None,
) -> float:
    """Deprecated (one release): one window's rate under static, global_elbo or uniform; the rate policies
    (`rate_policies`) decide rates now."""
    warnings.warn(
        "router.choose_rate is deprecated: use rate_policies.rate_policy_for, or global_elbo_rate / uniform_rate",
        DeprecationWarning,
        stacklevel=2,
    )
    avg_rate = check_rate(avg_rate)
    if check_strategy(strategy) == "rd":
        raise ValueError("rd chooses rates from curves or drifts (rate_policies), not from a score")
    if strategy == "static":
        return avg_rate
    if strategy == "global_elbo":
        return global_elbo_rate(avg_rate, score, score_mean)
    return uniform_rate(avg_rate, generator or np.random.default_rng(0))


# ---------------------------------------------------------------- rate control on predicted curves
def check_target(target_psnr: float) -> float:
    target = float(target_psnr)
    if not (math.isfinite(target) and 0 < target < 100):
        raise ValueError(f"target PSNR must be a number of dB in (0, 100), got {target_psnr}")
    return target


def rd_rates(curves: np.ndarray, slope: float) -> list[float]:
    """Each window's point k/K maximising PSNR(k) - slope * k/K: where its curve is as steep as `slope`."""
    gain = np.asarray(curves, dtype=np.float64)
    points = gain.shape[1]
    k = np.argmax(gain - slope * np.arange(1, points + 1) / points, axis=1)
    return [float(r) for r in (k + 1) / points]


def calibrate_slopes(curves: np.ndarray) -> list[list[float]]:
    """[[rate, slope], ...] for rates k/K: the slope at which rd's mean rate over these windows is
    closest to the rate (found by bisection on log slope, the mean rate falling as the slope grows)."""
    points = np.asarray(curves).shape[1]
    table = []
    for k in range(1, points + 1):
        target = k / points
        lo, hi = -12.0, 12.0  # log10 of the slope
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if np.mean(rd_rates(curves, 10**mid)) < target else (mid, hi)
        # the mean rate moves in steps: keep the side of the step that lands closer to the target
        best = min((lo, hi), key=lambda e: abs(np.mean(rd_rates(curves, 10**e)) - target))
        table.append([target, 10**best])
    return table


def slope_for(table: list[list[float]], avg_rate: float) -> float:
    """The calibrated slope for avg_rate, interpolated in log slope between the table's rates."""
    if not table:
        raise ValueError("this checkpoint has no calibrated rd slopes; run `infotok calibrate` on it")
    rates, slopes = zip(*sorted(table))
    return float(10 ** np.interp(avg_rate, rates, np.log10(slopes)))


# The share of windows `--target-psnr` means to bring to their target: its margins are the predicted
# curves' overshoot at this quantile (`calibrate_margins`)
TARGET_COVERAGE = 0.9


def calibrate_margins(predicted: np.ndarray, measured: np.ndarray, coverage: float = TARGET_COVERAGE) -> list[float]:
    """Per rate k/K, how far predicted PSNR [n, K] overshoots measured [n, K] on calibration windows:
    the `coverage` quantile of predicted - measured. A curve less these margins is a lower bound that
    about `coverage` of windows reach, so `--target-psnr` keeps its promise despite the predictor's bias."""
    return [
        float(q)
        for q in np.quantile(np.asarray(predicted, np.float64) - np.asarray(measured, np.float64), coverage, axis=0)
    ]


def target_rates(curves: np.ndarray, target_psnr: float, margins: Sequence[float] | None = None) -> list[float]:
    """Each window's fewest tokens (k/K) whose predicted PSNR, less the calibrated margin at k/K
    (`calibrate_margins`; none without), reaches the target (all of them if none does)."""
    curves = np.asarray(curves, dtype=np.float64)
    points = curves.shape[1]
    if margins is not None and len(margins):
        if len(margins) != points:
            raise ValueError(f"{len(margins)} target margins for curves of {points} points")
        curves = curves - np.asarray(margins, dtype=np.float64)
    reached = curves >= check_target(target_psnr)
    k = np.where(reached.any(axis=1), reached.argmax(axis=1), points - 1)
    return [float(r) for r in (k + 1) / points]


def warn_unreachable(curves: np.ndarray, target_psnr: float, margins: Sequence[float] | None = None) -> None:
    """Say so when a target is out of reach for some windows: `target_rates` gives them every token."""
    full = np.asarray(curves, dtype=np.float64)[:, -1] - (margins[-1] if margins is not None and len(margins) else 0.0)
    short = full < target_psnr
    if short.any():
        warnings.warn(
            f"target {target_psnr:g} dB is out of reach for {int(short.sum())} of {len(full)} windows "
            f"(predicted at full rate, less the calibrated margin: {full[short].max():.1f} dB at best); "
            "they get every token (rate 1)",
            stacklevel=2,
        )


# ------------------------------------------------------------- rate control under the hold fill
HOLD_RAMP = 0.1  # drift (mean |code difference|; levels are 0.05 to 0.08 apart) over which a token's share ramps


def kept_share(d: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """How much a token of drift `d` counts toward its window's rate at `threshold`. Drifts take few
    distinct values, so a token within HOLD_RAMP / 2 of the threshold counts in part: the rate moves
    smoothly with the threshold and calibration can hit any average. A token that did not drift at all
    counts only below 0 (where every token is kept), ramping up from 0 there: holding it is exact, and
    a part share would hand a still window tokens that drift selection can only spend at random."""
    threshold = torch.as_tensor(threshold, dtype=d.dtype, device=d.device)
    return torch.where(d > 0, (d - threshold) / HOLD_RAMP + 0.5, -threshold / HOLD_RAMP).clamp(0, 1)


def hold_rates(
    codes: torch.Tensor,
    threshold: float,
    carried: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    key_density: float = 1.0,
) -> list[float]:
    """Each window's rate under `hold`: the share of its tokens that drift more than `threshold` from
    the code held in their place (`fill.drift`, counted by `kept_share`; the first latent frame always
    counts, except where a continuing window carries `carried` codes [B, C, h, w] where `present`, and
    off the lattice of sparse key frames of `key_density`), within [1/16, 1] (a continuing window: [one token, 1]).
    codes [B, C, t, h, w]."""
    d = drift(codes, threshold, carried, present, key_density).flatten(1).double()
    share = kept_share(d, threshold).mean(dim=1)
    floor = torch.full_like(share, MIN_RATE)
    if present is not None:
        floor = torch.where(present.flatten(1).any(dim=1), 1 / d.shape[1], floor)
    return [float(r) for r in torch.maximum(share, floor).clamp(max=1.0).cpu()]


def _hold_rates_of(codes: list[torch.Tensor], threshold: float, key_density: float = 1.0) -> list[float]:
    """`hold_rates` of windows of any sizes ([C, t, h, w] each), run in batches of equal size (with sparse key
    frames of `key_density`)."""
    rates: list[float] = [0.0] * len(codes)
    by_shape: dict[tuple, list[int]] = {}
    for i, c in enumerate(codes):
        by_shape.setdefault(tuple(c.shape), []).append(i)
    for idx in by_shape.values():
        for i, r in zip(idx, hold_rates(torch.stack([codes[i] for i in idx]), threshold, key_density=key_density)):
            rates[i] = r
    return rates


def _bisect_threshold(mean_rate, target: float, bottom: float, top: float, steps: int = 50) -> float:
    """The threshold in [bottom, top] whose `mean_rate` is closest to `target` (it falls as the threshold
    grows)."""
    lo, hi = bottom, top
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_rate(mid) > target else (lo, mid)
    return min((lo, hi), key=lambda t: abs(mean_rate(t) - target))


def _ceiling_of(codes: list[torch.Tensor]) -> float:
    """A drift threshold above every drift of these windows ([C, t, h, w] each)."""
    return max(float(drift_ceiling(c[None])) for c in codes)


def calibrate_thresholds(codes: list[torch.Tensor], points: int = 16, key_density: float = 1.0) -> list[list[float]]:
    """[[rate, threshold], ...] for rates k/points: the drift threshold at which the mean of
    `hold_rates` over these windows (codes [C, t, h, w] each; sparse key frames of `key_density`) is closest to
    the rate. No threshold but
    rate 1's (-1: every token) is below 0, where tokens that did not drift would be kept: holding them
    is exact, so a rate above what drifts keeps what drifts and no more."""
    top = _ceiling_of(codes)
    return [
        [
            k / points,
            _bisect_threshold(
                lambda t: float(np.mean(_hold_rates_of(codes, t, key_density))),
                k / points,
                0.0 if k < points else -1.0,
                top,
            ),
        ]
        for k in range(1, points + 1)
    ]


def calibrate_continuing_thresholds(
    mean_rate, fresh: list[list[float]], points: int = 16, steps: int = 24
) -> list[list[float]]:
    """[[rate, threshold], ...] for chains of windows, rates k/points: the drift threshold at which
    `mean_rate(threshold)`, the mean rate of the windows that continue another when every window of the chains
    is rated at that threshold, is closest to the rate. It lies between 0 and the `fresh` table's threshold (a
    continuing window pays no first latent frame, so the same threshold keeps fewer of its tokens); where that
    is 0 or below (every token that drifts, or every token) it is the same."""
    table = []
    for k in range(1, points + 1):
        threshold = threshold_for(fresh, k / points)
        if threshold > 0:
            top, threshold = threshold, 0.0  # 0 where even every token that drifts is not more than the rate
            if mean_rate(0.0) > k / points:
                threshold = _bisect_threshold(mean_rate, k / points, 0.0, top, steps)
        table.append([k / points, threshold])
    return table


def threshold_for(table: list[list[float]], avg_rate: float) -> float:
    """The calibrated drift threshold for avg_rate, interpolated between the table's rates."""
    if not table:
        raise ValueError("this checkpoint has no calibrated hold thresholds; run `infotok calibrate` on it")
    rates, thresholds = zip(*sorted(table))
    return float(np.interp(avg_rate, rates, thresholds))


# ------------------------------------------------ one exact budget over a dataset, from compact statistics
# A dataset can have 1e5 windows: its first pass keeps a few numbers per window (the kept count on a
# grid of drift thresholds under `hold`, the predicted curve under `mask`), never the codes.
HOLD_GRID_STEPS = 4  # drift thresholds sampled per HOLD_RAMP (a token's share is linear within one ramp)


def min_kept(num_tokens: int) -> int:
    """The fewest tokens a window keeps at a rate of at least 1/16 (so kept / num_tokens is a valid rate)."""
    return max(1, math.ceil(MIN_RATE * num_tokens))


def budget_count(avg_rate: float, sizes: Sequence[int]) -> int:
    """round(avg_rate * all tokens) of windows of these sizes, within what [1/16, 1] per window allows."""
    sizes = [int(n) for n in sizes]
    return int(np.clip(round(check_rate(avg_rate) * sum(sizes)), sum(min_kept(n) for n in sizes), sum(sizes)))


def exact_counts(real: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> list[int]:
    """Whole counts within [lo, hi] per window that add up to `budget`, from real ones that add up to
    about it: each rounded down, then one more to the windows with the largest fractions (ties:
    earlier windows first) until the budget is spent. Deterministic: the order is the windows'."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    real = np.clip(np.asarray(real, np.float64), lo, hi)
    k = np.clip(np.floor(real).astype(np.int64), lo, hi)
    order = np.argsort(-(real - k), kind="stable")
    while (left := budget - int(k.sum())) != 0:  # one round unless the real counts were off by more than rounding
        if left > 0:
            movable = order[k[order] < hi[order]]
        else:
            movable = order[::-1][k[order[::-1]] > lo[order[::-1]]]
        if not movable.size:
            raise ValueError(f"a budget of {budget} tokens lies outside [{int(lo.sum())}, {int(hi.sum())}]")
        k[movable[: abs(left)]] += 1 if left > 0 else -1
    return [int(v) for v in k]


def hold_grid(code_range: float) -> np.ndarray:
    """The drift thresholds at which `hold_counts` samples a window: from -HOLD_RAMP (every token
    kept) to code_range + HOLD_RAMP (only the first latent frame), HOLD_RAMP / HOLD_GRID_STEPS apart.
    `code_range` bounds every drift: the spread of the model's code values (fixed, so that every
    video of a dataset is sampled at the same thresholds)."""
    step = HOLD_RAMP / HOLD_GRID_STEPS
    return -HOLD_RAMP + step * np.arange(math.ceil((code_range + 2 * HOLD_RAMP) / step) + 1)


def hold_counts(codes: torch.Tensor, thresholds: Sequence[float], key_density: float = 1.0) -> np.ndarray:
    """Each window's kept tokens under `hold` at each drift threshold: codes [B, C, t, h, w] ->
    [B, len(thresholds)], what `hold_rates` gives at each threshold times the window's tokens (before
    its [1/16, 1] clip). All thresholds of a window go through `drift` together."""
    th = torch.as_tensor(np.asarray(thresholds, np.float64), device=codes.device)
    out = []
    for c in codes:
        d = drift(c[None].expand(len(th), *c.shape), th, key_density=key_density).flatten(1).double()
        out.append(kept_share(d, th[:, None]).sum(dim=1))
    return torch.stack(out).cpu().numpy()


def shared_hold_counts(
    counts: np.ndarray, sizes: Sequence[int], thresholds: Sequence[float], avg_rate: float
) -> tuple[list[int], float]:
    """Kept tokens per window for a set of windows under `hold` that keep exactly `budget_count` in
    all, from their `hold_counts` alone: the one drift threshold at which they keep that many (each
    window's count taken as linear between the grid's thresholds, within [1/16, 1]), then each
    window's count there, rounded so that they add up (`exact_counts`). Returns (counts, threshold);
    past the grid's last threshold (below the first latent frames) the threshold is that last one."""
    sizes = np.asarray(sizes, np.int64)
    lo = np.array([min_kept(n) for n in sizes], np.int64)
    th = np.asarray(thresholds, np.float64)
    c = np.clip(np.asarray(counts, np.float64), lo[:, None], sizes[:, None])
    # every token kept, the grid, each window at its floor; a count never grows with the threshold
    c = np.minimum.accumulate(np.column_stack([sizes, c, lo]), axis=1)
    th = np.concatenate([th[:1], th, th[-1:]])
    budget = budget_count(avg_rate, sizes)
    totals = c.sum(axis=0)
    g = int(np.flatnonzero(totals >= budget)[-1])  # the highest threshold that keeps enough
    if g == len(totals) - 1 or totals[g] == budget:
        return exact_counts(c[:, g], lo, sizes, budget), float(th[g])
    f = (totals[g] - budget) / (totals[g] - totals[g + 1])
    real = c[:, g] + f * (c[:, g + 1] - c[:, g])
    return exact_counts(real, lo, sizes, budget), float(th[g] + f * (th[g + 1] - th[g]))


def shared_curve_counts(curves: np.ndarray, sizes: Sequence[int], avg_rate: float) -> tuple[list[int], float]:
    """Kept tokens per window for a set of windows under `mask` that keep exactly `budget_count` in
    all, from their predicted curves [n, K] (PSNR at rates k/K) alone: each window's gain taken as
    linear in its tokens between the points of its curve's upper concave hull, the tokens go where
    they gain most per token (one shared slope; ties: earlier windows first) until the budget is
    spent, then rounded (`exact_counts`). Returns (counts, the slope of the last tokens spent, gain per token)."""
    gain = np.asarray(curves, dtype=np.float64)
    points = gain.shape[1]
    sizes = np.asarray(sizes, np.int64)
    lo = np.array([min_kept(n) for n in sizes], np.int64)
    segments = []  # (slope, window, tokens), each window's in its order
    for w, (g, n) in enumerate(zip(gain, sizes)):
        x = np.arange(1, points + 1) / points * n
        keep = np.flatnonzero(x > lo[w])
        x, g = np.concatenate([[lo[w]], x[keep]]), np.concatenate([g[:1], g[keep]])  # the first point at the floor
        hull: list[int] = []
        for i in range(len(x)):
            while (
                len(hull) >= 2
                and (
                    (x[hull[-1]] - x[hull[-2]]) * (g[i] - g[hull[-2]])
                    - (g[hull[-1]] - g[hull[-2]]) * (x[i] - x[hull[-2]])
                )
                >= 0
            ):
                hull.pop()
            hull.append(i)
        segments += [((g[b] - g[a]) / (x[b] - x[a]), w, x[b] - x[a]) for a, b in zip(hull[:-1], hull[1:])]
    budget = budget_count(avg_rate, sizes)
    ordered = sorted(segments, key=lambda seg: -seg[0])  # stable: ties keep the windows' order
    real, left = lo.astype(np.float64), float(budget - lo.sum())
    slope = ordered[0][0] if ordered else 0.0  # where nothing is spent above the floors: the steepest left
    for s, w, dx in ordered:
        if left <= 0:
            break
        real[w] += min(dx, left)
        left -= min(dx, left)
        slope = s
    return exact_counts(real, lo, sizes, budget), float(slope)


def shared_rates(
    statistics: np.ndarray,
    sizes: Sequence[int],
    avg_rate: float,
    grid: Sequence[float] | None = None,
) -> tuple[list[float], float]:
    """Each window's rate for one exact budget of round(avg_rate * all tokens), from the first pass's
    statistics [n, points] (`pipeline.window_statistics`): kept counts at the drift thresholds `grid`
    under `hold` (`shared_hold_counts`), predicted curves under `mask`, grid None
    (`shared_curve_counts`). Returns (rates kept / tokens, the shared threshold or slope)."""
    if grid is not None:
        kept, shared = shared_hold_counts(statistics, sizes, grid, avg_rate)
    else:
        kept, shared = shared_curve_counts(statistics, sizes, avg_rate)
    return [k / n for k, n in zip(kept, sizes)], shared


def shared_budget_rates(curves: np.ndarray, sizes: Sequence[int], avg_rate: float) -> list[float]:
    """`shared_curve_counts` as rates: windows of `sizes` tokens under `mask`, one exact budget."""
    return shared_rates(curves, sizes, avg_rate)[0]


def shared_hold_rates(
    codes: list[torch.Tensor], avg_rate: float, per_window: bool = False, key_density: float = 1.0
) -> list[float]:
    """`shared_hold_counts` as rates, for windows whose codes are at hand ([C, t, h, w] each) under
    `hold`: sampled on the grid of thresholds up to their highest drift, one exact budget of tokens;
    with `per_window`, each window weighs alike (the mean of their rates is avg_rate, as the
    evaluation protocol averages clips), whatever its size; `key_density`: sparse key frames (`fill.key_lattice`)."""
    grid = hold_grid(_ceiling_of(codes))
    sizes = np.array([c[0].numel() for c in codes])
    counts = np.concatenate([hold_counts(c[None], grid, key_density) for c in codes])
    if per_window:  # every window scaled to the largest one's tokens
        counts, sizes = counts * (sizes.max() / sizes)[:, None], np.full_like(sizes, sizes.max())
    return shared_rates(counts, sizes, avg_rate, grid)[0]
