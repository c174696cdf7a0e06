"""What a grid tokenization is asked for, in two settings objects checked once, when they are made.

`TokenizeSpec` says how many tokens and which (rate or per-window rates or a target PSNR; strategy,
selection, fill, seed; how often windows start afresh, refresh); `Windowing` says which frames and at
what size (window, overlap, size or max_size, start, max_frames, fps). The command line builds both
once from its options; `InfoTok.tokenize` builds them from its keywords; `pipeline.TokenStream`,
`encode_file`, `reconstruct_file`, `viz` and `run_budget_rates` take them. `TokenizeSpec.resolved(model)`
fills in the checkpoint's defaults (None: what `InfoTok.choices` picks) in the one place they are
decided, and refuses what that checkpoint cannot do before any video is read.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace

from .geometry import Geometry, check_windowing
from .names import FILLS, SELECTIONS, STRATEGIES

# Windows per refresh under the hold fill and drift selection: every thirtieth window starts afresh and
# the 29 after it continue the one before (`fill.Carry`; docs/LONG_VIDEOS.md says why thirty)
DEFAULT_REFRESH = 30


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Windowing:
    window: int = 33
    overlap: int = 1  # each window starts on the last frame of the one before (BENCHMARKS_LONG.md)
    size: int | None = None  # resize the short side to exactly this
    max_size: int | None = None  # or only shrink a short side over this
    start: int = 0
    max_frames: int | None = None
    fps: float | None = None  # of uint8 frames given as an array (files carry their own)

    def __post_init__(self):
        check_windowing(self.window, self.overlap, Geometry())
        if not (_integer(self.start) and self.start >= 0):
            raise ValueError(f"start must be a frame index >= 0, got {self.start!r}")
        for name in ("max_frames", "size", "max_size"):
            value = getattr(self, name)
            if value is not None and not (_integer(value) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")

    @property
    def source(self) -> tuple:
        """`pipeline.video_source`'s arguments after the video: (size, fps, start, max_frames, max_size)."""
        return self.size, self.fps, self.start, self.max_frames, self.max_size


@dataclass(frozen=True)
class TokenizeSpec:
    rate: float = 0.5
    strategy: str | None = None  # None: the checkpoint's default (`InfoTok.choices`)
    selection: str | None = None
    fill: str | None = None
    rates: tuple[float, ...] | None = None  # one rate per window (a shared budget decided elsewhere)
    target_psnr: float | None = None
    seed: int = 0
    refresh: int | None = None  # windows per fresh start (1: independent); None: DEFAULT_REFRESH where it applies
    key_density: float | None = None  # sparse key frames (`fill.key_lattice`); None: the checkpoint's calibrated one

    def __post_init__(self):
        from .fill import check_key_density
        from .router import check_rate, check_target

        check_rate(self.rate)
        if self.target_psnr is not None:
            check_target(self.target_psnr)
        for name, allowed in (("strategy", STRATEGIES), ("selection", SELECTIONS), ("fill", FILLS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.rates is not None:
            object.__setattr__(self, "rates", tuple(float(check_rate(r)) for r in self.rates))
        if self.refresh is not None and not (_integer(self.refresh) and 1 <= self.refresh <= 0xFFFFFFFF):
            raise ValueError(f"refresh must be a positive number of windows, got {self.refresh!r}")
        if self.key_density is not None:
            check_key_density(self.key_density)

    def resolved(self, model) -> "TokenizeSpec":
        """This spec with `model`'s defaults filled in, checked against what `model` can do. Windows
        continue each other (refresh > 1) only under the hold fill and drift selection, with rates
        chosen window by window (not `rates` shared out beforehand, which assume independent windows)."""
        rate, strategy, selection, fill, target = model.settings(
            self.rate, self.strategy, self.selection, self.fill, self.rates, self.target_psnr
        )
        can_continue = fill == "hold" and selection == "drift" and self.rates is None
        refresh = self.refresh
        if refresh is None:
            refresh = DEFAULT_REFRESH if can_continue else 1
        elif refresh > 1 and not can_continue:
            raise ValueError(
                f"refresh {refresh} (windows that continue each other) needs the hold fill and drift selection, "
                f"with rates chosen window by window; this asks for {fill} and {selection}"
                f"{' with a shared budget' if self.rates is not None else ''} (use refresh 1)"
            )
        key_density = model.resolve_key_density(self.key_density, fill, selection)
        return replace(
            self,
            rate=rate,
            strategy=strategy,
            selection=selection,
            fill=fill,
            target_psnr=target,
            refresh=refresh,
            key_density=key_density,
        )


def with_keywords(spec: TokenizeSpec, windowing: Windowing, keywords: dict) -> tuple[TokenizeSpec, Windowing]:
    """`spec` and `windowing` with the fields `keywords` names replaced (the keyword form a function may
    also take); a keyword that is neither's field is refused by name."""
    names = {"spec": {f.name for f in fields(TokenizeSpec)}, "windowing": {f.name for f in fields(Windowing)}}
    unknown = sorted(set(keywords) - names["spec"] - names["windowing"])
    if unknown:
        raise TypeError(f"unexpected keyword(s) {', '.join(unknown)}: not a TokenizeSpec or Windowing field")
    return (
        replace(spec, **{k: v for k, v in keywords.items() if k in names["spec"]}),
        replace(windowing, **{k: v for k, v in keywords.items() if k in names["windowing"]}),
    )
