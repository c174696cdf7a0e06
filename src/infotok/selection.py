"""Rankings: which tokens a window keeps at a rate, as small classes found by name in `RANKINGS`.

A ranking orders a window's tokens; the top round(rate * N) are kept (`top_k_masks`: one stable sort on
the device, ties broken by position, so masks are deterministic). Each declares what it reads from
`Inputs` besides the codes, so `InfoTok.encode` computes only that:
- `error` (InfoTok): the router's per-token error (a full-rate decoder pass);
- `value`: the value predictor's estimate of what dropping each token costs;
- `drift` (for the `hold` fill): how far each code drifted from the code held in its place (`drift_masks`);
- `random`: a seeded random subset (training mixes it in; a benchmark peer);
- `order`: a raster prefix of every latent frame (tail dropping, the ElasticTok-style peer);
- `temporal`: how far each latent moved since the previous latent frame (the training-free
  temporal-redundancy peer, arXiv 2606.06158).
A new ranking is a subclass registered with `@ranking("name")` (its name in `names.SELECTIONS` for the
command line and token headers).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .fill import drift, drift_ceiling
from .names import SELECTIONS

MIN_RATE = 1 / 16


@dataclass
class Inputs:
    """What a batch of windows offers its rate policy and ranking; None where nothing asked for it."""

    codes: torch.Tensor | None = None  # [B, C, t, h, w]: the windows' codes
    scores: torch.Tensor | None = None  # [B, t, h, w]: the router's per-token error (a decoder pass)
    value: torch.Tensor | None = None  # [B, t, h, w]: the value predictor's per-token value
    curve: torch.Tensor | None = None  # [B, 16]: the predicted PSNR at rates k/16
    change: torch.Tensor | None = None  # [B, t, h, w]: `latent_change` of the codes
    carried: torch.Tensor | None = None  # [B, C, h, w]: continuing windows' carried codes (`fill.Carry`)
    present: torch.Tensor | None = None  # [B, h, w]: where they carry one
    chained: bool = False  # the windows continue others or are continued (`rd` rates a chain at one threshold)
    key_density: float = 1.0  # sparse key frames (`fill.key_lattice`; 1: whole first latent frames)

    def window(self, i: int) -> "Inputs":
        """Window i alone (a batch of one)."""
        values = (getattr(self, f.name) for f in fields(self))
        return Inputs(*(t[i : i + 1] if isinstance(t, torch.Tensor) else t for t in values))

    @property
    def grid(self) -> torch.Tensor:
        """A [B, t, h, w] tensor with the windows' token layout and device."""
        for ranked in (self.scores, self.value, self.change):
            if ranked is not None:
                return ranked
        return self.codes[:, 0]


def kept_count(rate: float, num_tokens: int) -> int:
    """Exactly round(rate * N), at least one token."""
    return max(1, min(num_tokens, int(round(rate * num_tokens))))


def check_selection(method: str) -> str:
    if method not in RANKINGS:
        raise ValueError(f"unknown selection {method!r}; choose from {', '.join(SELECTIONS)}")
    return method


def latent_change(codes: torch.Tensor) -> torch.Tensor:
    """codes [B, C, t, h, w] -> [B, t, h, w]: how far each position's code moved since the previous
    latent frame (mean |difference| over code channels). The first latent frame has nothing earlier to
    be filled from, so it ranks above every change."""
    change = torch.full((codes.shape[0], *codes.shape[2:]), float("inf"), device=codes.device)
    change[:, 1:] = (codes[:, :, 1:] - codes[:, :, :-1]).abs().float().mean(dim=1)
    return change


def top_k_masks(priority: torch.Tensor, rates: Sequence[float]) -> torch.Tensor:
    """priority [B, t, h, w] (higher kept first) and one rate per window -> bool masks [B, t, h, w] with
    exactly kept_count(rate, t*h*w) True in each."""
    flat = priority.flatten(1)
    n = flat.shape[1]
    k = torch.tensor([kept_count(float(r), n) for r in rates], device=flat.device)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    keep = torch.arange(n, device=flat.device)[None] < k[:, None]
    return torch.zeros_like(keep).scatter(1, order, keep).reshape(priority.shape)


RANKINGS: dict[str, type["Ranking"]] = {}


def ranking(name: str):
    """Class decorator: register a ranking under `name`."""

    def register(cls: type[Ranking]) -> type[Ranking]:
        cls.name = name
        RANKINGS[name] = cls
        return cls

    return register


def ranking_for(name: str) -> "Ranking":
    return RANKINGS[check_selection(name)]()


class Ranking:
    """Orders each window's tokens by a priority [t, h, w] (higher kept first)."""

    name = ""
    reads: frozenset[str] = frozenset()  # the `Inputs` fields it needs besides the codes

    def check(self, model) -> None:
        """Refuse, before any video is read, a checkpoint that lacks what this ranking reads."""

    def reads_for(self, rates: Sequence[float]) -> frozenset[str]:
        """What it reads to keep these rates (a window kept whole needs no ranking)."""
        return self.reads if min(rates) < 1 else frozenset()

    def priority(self, inputs: Inputs, i: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def masks(
        self, inputs: Inputs, rates: Sequence[float], generators: Sequence[torch.Generator | None] | None = None
    ) -> torch.Tensor:
        """One rate per window -> bool masks [B, t, h, w]; `generators` seed random choices per window."""
        generators = generators if generators is not None else [None] * len(rates)
        return top_k_masks(torch.stack([self.priority(inputs, i, g) for i, g in enumerate(generators)]), rates)


class _ByInput(Ranking):
    """Ranks by one of the inputs, as it is."""

    def priority(self, inputs: Inputs, i: int, generator: torch.Generator | None) -> torch.Tensor:
        (field,) = self.reads
        return getattr(inputs, field)[i].detach().float()


@ranking("error")
class ErrorRanking(_ByInput):
    reads = frozenset({"scores"})


@ranking("value")
class ValueRanking(_ByInput):
    reads = frozenset({"value"})

    def check(self, model) -> None:
        model.check_predictor("rd, --target-psnr and value selection")

    def reads_for(self, rates: Sequence[float]) -> frozenset[str]:
        return self.reads  # the predictor runs on the encoder's features: no saving at full rate


@ranking("temporal")
class TemporalRanking(_ByInput):
    reads = frozenset({"change"})


@ranking("order")
class OrderRanking(Ranking):
    def priority(self, inputs: Inputs, i: int, generator: torch.Generator | None) -> torch.Tensor:
        t, h, w = inputs.grid.shape[1:]  # position p of every frame before position p+1 of any frame
        pos = torch.arange(h * w, dtype=torch.float32).repeat(t)
        frame = torch.arange(t, dtype=torch.float32).repeat_interleave(h * w)
        return -(pos * t + frame).reshape(t, h, w).to(inputs.grid.device)


@ranking("random")
class RandomRanking(Ranking):
    def priority(self, inputs: Inputs, i: int, generator: torch.Generator | None) -> torch.Tensor:
        shape = tuple(inputs.grid.shape[1:])  # drawn on the CPU: the same on any device
        return torch.rand(shape, generator=generator).to(inputs.grid.device)


@ranking("drift")
class DriftRanking(Ranking):
    """Reads the codes alone: held codes depend on what is kept, so it is no fixed priority (`drift_masks`)."""

    def masks(self, inputs: Inputs, rates: Sequence[float], generators=None) -> torch.Tensor:
        return drift_masks(
            inputs.codes, rates, carried=inputs.carried, present=inputs.present, key_density=inputs.key_density
        )


def keep_masks(
    scores: torch.Tensor,
    rates: Sequence[float],
    method: str = "error",
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """A ranking that reads one score per token (`error`, `value`, `temporal`; `order` and `random` read
    none) on `scores` [B, t, h, w] -> bool masks [B, t, h, w]."""
    if check_selection(method) == "drift":
        raise ValueError("drift selection ranks codes, not scores: use drift_masks")
    return ranking_for(method).masks(Inputs(scores=scores, value=scores, change=scores), rates, generators)


def keep_mask(
    scores: torch.Tensor, rate: float, method: str = "error", generator: torch.Generator | None = None
) -> torch.Tensor:
    """One window: scores [t, h, w] -> bool mask [t, h, w]."""
    return keep_masks(scores[None], [rate], method, [generator])[0]


def drift_masks(
    codes: torch.Tensor,
    rates: Sequence[float],
    steps: int = 40,
    carried: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    key_density: float = 1.0,
) -> torch.Tensor:
    """codes [B, C, t, h, w] and one rate per window -> bool masks [B, t, h, w], exactly
    kept_count(rate, t*h*w) True in each: the tokens that drift most from the code `hold` would show
    in their place (`fill.drift`; continuing windows: from `carried` codes [B, C, h, w] where `present`
    in their first latent frame; sparse key frames of `key_density`: off their lattice only once drifted). Held codes
    depend on what is kept, so each window's drift threshold is found by bisection (the lowest tried that
    keeps at least its count), and the tokens it keeps with the least drift are dropped down to the count."""
    b, _, t, h, w = codes.shape
    n = t * h * w
    k = torch.tensor([kept_count(float(r), n) for r in rates], device=codes.device)
    lo = torch.full((b,), -1.0, device=codes.device)  # keeps every token
    hi = drift_ceiling(codes, carried)  # keeps only the first latent frame's positions kept whatever they show
    for _ in range(steps):
        mid = (lo + hi) / 2
        enough = (drift(codes, mid, carried, present, key_density).flatten(1) > mid[:, None]).sum(dim=1) >= k
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    d = drift(codes, lo, carried, present, key_density).flatten(1)
    priority = torch.where(d > lo[:, None], d, torch.tensor(float("-inf"), device=codes.device))
    return top_k_masks(priority.reshape(b, t, h, w), rates)
