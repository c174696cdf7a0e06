"""Turning per-token scores and a rate into an exact keep-mask.

`error` keeps the round(rate * N) highest-scoring tokens (InfoTok); `order` keeps a raster prefix of
every latent frame (tail dropping, the ElasticTok-style ablation); `random` keeps a random subset.
Ties are broken by position (earlier kept first), so masks are deterministic.
"""
from __future__ import annotations

import torch

SELECTIONS = ("error", "order", "random")
MIN_RATE = 1 / 16


def kept_count(rate: float, num_tokens: int) -> int:
    """Exactly round(rate * N), at least one token."""
    return max(1, min(num_tokens, int(round(rate * num_tokens))))


def _priority(scores: torch.Tensor, method: str, generator: torch.Generator | None) -> torch.Tensor:
    """A priority per token [t, h, w]; higher is kept first."""
    t, h, w = scores.shape
    if method == "error":
        return scores.float()
    if method == "order":  # position p of every frame before position p+1 of any frame
        pos = torch.arange(h * w, dtype=torch.float32).repeat(t)
        frame = torch.arange(t, dtype=torch.float32).repeat_interleave(h * w)
        return -(pos * t + frame).reshape(t, h, w)
    if method == "random":
        return torch.rand(t, h, w, generator=generator)
    raise ValueError(f"unknown selection {method!r}; choose from {', '.join(SELECTIONS)}")


def keep_mask(scores: torch.Tensor, rate: float, method: str = "error",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """scores [t, h, w] -> bool mask [t, h, w] with exactly kept_count(rate, t*h*w) True."""
    priority = _priority(scores.detach().cpu(), method, generator).flatten()
    k = kept_count(rate, priority.numel())
    order = torch.sort(priority, descending=True, stable=True).indices
    mask = torch.zeros(priority.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(scores.shape).to(scores.device)
