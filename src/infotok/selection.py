"""Turning per-token scores and a rate into an exact keep-mask, for a batch of windows at once.

`error` keeps the round(rate * N) highest-scoring tokens (InfoTok); `order` keeps a raster prefix of
every latent frame (tail dropping, the ElasticTok-style ablation); `random` keeps a random subset;
`temporal` keeps the tokens whose latent changed most since the previous latent frame (the
training-free temporal-redundancy baseline, arXiv 2606.06158; its ranking comes from the codes);
`value` keeps the tokens whose dropping would cost most, as the value predictor estimates it;
`drift` (for the `hold` fill) keeps the tokens whose code drifted most from the code that would be
held in their place (`drift_masks`). The top-k is one stable sort on the scores' device; ties are
broken by position (earlier kept first), so masks are deterministic.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .fill import drift, drift_ceiling
from .names import SELECTIONS

MIN_RATE = 1 / 16


def kept_count(rate: float, num_tokens: int) -> int:
    """Exactly round(rate * N), at least one token."""
    return max(1, min(num_tokens, int(round(rate * num_tokens))))


def check_selection(method: str) -> str:
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection {method!r}; choose from {', '.join(SELECTIONS)}")
    return method


def _priority(
    shape: tuple[int, int, int], scores: torch.Tensor, method: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A priority per token [t, h, w] on the scores' device; higher is kept first."""
    t, h, w = shape
    if method == "drift":
        raise ValueError("drift selection ranks codes, not scores: use drift_masks")
    if method in ("error", "temporal", "value"):  # the caller passes the ranking it means
        return scores.float()
    if method == "order":  # position p of every frame before position p+1 of any frame
        pos = torch.arange(h * w, dtype=torch.float32).repeat(t)
        frame = torch.arange(t, dtype=torch.float32).repeat_interleave(h * w)
        return -(pos * t + frame).reshape(t, h, w).to(scores.device)
    return torch.rand(t, h, w, generator=generator).to(scores.device)  # drawn on the CPU: same on any device


def keep_masks(
    scores: torch.Tensor,
    rates: Sequence[float],
    method: str = "error",
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """scores [B, t, h, w] and one rate per window -> bool masks [B, t, h, w], exactly
    kept_count(rate, t*h*w) True in each. `generators` seed `random` selection per window."""
    check_selection(method)
    b, shape = scores.shape[0], tuple(scores.shape[1:])
    generators = generators if generators is not None else [None] * b
    priority = torch.stack([_priority(shape, scores[i].detach(), method, generators[i]) for i in range(b)]).flatten(1)
    n = priority.shape[1]
    k = torch.tensor([kept_count(float(r), n) for r in rates], device=priority.device)
    order = torch.sort(priority, dim=1, descending=True, stable=True).indices
    keep = torch.arange(n, device=priority.device)[None] < k[:, None]
    return torch.zeros_like(keep).scatter(1, order, keep).reshape(scores.shape)


def keep_mask(
    scores: torch.Tensor, rate: float, method: str = "error", generator: torch.Generator | None = None
) -> torch.Tensor:
    """One window: scores [t, h, w] -> bool mask [t, h, w]."""
    return keep_masks(scores[None], [rate], method, [generator])[0]


def drift_masks(codes: torch.Tensor, rates: Sequence[float], steps: int = 40) -> torch.Tensor:
    """codes [B, C, t, h, w] and one rate per window -> bool masks [B, t, h, w], exactly
    kept_count(rate, t*h*w) True in each: the tokens that drift most from the code `hold` would show
    in their place (`fill.drift`). Held codes depend on what is kept, so each window's drift
    threshold is found by bisection (the lowest tried that keeps at least its count), and the
    tokens it keeps with the least drift are dropped down to the count."""
    b, _, t, h, w = codes.shape
    n = t * h * w
    k = torch.tensor([kept_count(float(r), n) for r in rates], device=codes.device)
    lo = torch.full((b,), -1.0, device=codes.device)  # keeps every token
    hi = drift_ceiling(codes)  # keeps only frame 0
    for _ in range(steps):
        mid = (lo + hi) / 2
        enough = (drift(codes, mid).flatten(1) > mid[:, None]).sum(dim=1) >= k
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    d = drift(codes, lo).flatten(1)
    priority = torch.where(d > lo[:, None], d, torch.tensor(float("-inf"), device=codes.device))
    order = torch.sort(priority, dim=1, descending=True, stable=True).indices
    keep = torch.arange(n, device=codes.device)[None] < k[:, None]
    return torch.zeros_like(keep).scatter(1, order, keep).reshape(b, t, h, w)
