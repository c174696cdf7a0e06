"""Mechanisms that only the benchmarks use, to stand in for a peer or an upper bound: ElasticTok's
binary search over token counts and the paper's per-clip "Optimal" oracle. Not part of the package."""

from __future__ import annotations

import math

import numpy as np


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
            cand[c:] = best[: budget + 1 - c] + q[i, j]
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
