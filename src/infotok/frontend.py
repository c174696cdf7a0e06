"""Whole videos through `InfoTok`: the keyword API users call (`tokenize`, `iter_tokenize`, `detokenize`,
`reconstruct`), which makes the settings objects (`spec`) and hands them to `pipeline`. A mixin, so the
network module (`model`) knows nothing of files, windows or streams: `model` -> `frontend` -> `pipeline`,
and `pipeline` only calls the model it is given.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import pipeline
from .spec import TokenizeSpec, Windowing


def deprecated_objective(objective: str | None) -> None:
    """`objective=` (what rd maximised: "psnr" or "mse") is gone: rd maximises mean PSNR. One more
    release accepts "psnr" with a warning."""
    if objective is None:
        return
    if objective != "psnr":
        raise ValueError(f"objective {objective!r} is no longer offered: rd maximises mean PSNR")
    warnings.warn("objective= is deprecated (rd maximises mean PSNR); drop it", DeprecationWarning, stacklevel=3)


class VideoFrontEnd:
    """`InfoTok`'s whole-video methods (see the module docstring)."""

    def iter_tokenize(
        self,
        video,
        rate: float = 0.5,
        strategy: str | None = None,
        selection: str | None = None,
        window: int = 33,
        overlap: int = 1,
        size: int | None = None,
        seed: int = 0,
        rates: list[float] | None = None,
        fps: float | None = None,
        start: int = 0,
        max_frames: int | None = None,
        max_size: int | None = None,
        target_psnr: float | None = None,
        objective: str | None = None,  # deprecated: rd maximises mean PSNR
        fill: str | None = None,
        refresh: int | None = None,
        key_density: float | None = None,
    ) -> "pipeline.TokenStream":
        """Stream a video's windows of tokens (see `pipeline.TokenStream`; the keywords make its
        `spec.TokenizeSpec` and `spec.Windowing`)."""
        deprecated_objective(objective)
        spec = TokenizeSpec(rate, strategy, selection, fill, rates, target_psnr, seed, refresh, key_density)
        return pipeline.TokenStream(
            self, video, spec, Windowing(window, overlap, size, max_size, start, max_frames, fps)
        )

    def tokenize(
        self,
        video,
        rate: float = 0.5,
        strategy: str | None = None,
        selection: str | None = None,
        window: int = 33,
        overlap: int = 1,
        size: int | None = None,
        seed: int = 0,
        fps: float | None = None,
        start: int = 0,
        max_frames: int | None = None,
        max_size: int | None = None,
        target_psnr: float | None = None,
        objective: str | None = None,  # deprecated: rd maximises mean PSNR
        fill: str | None = None,
        refresh: int | None = None,
        key_density: float | None = None,
    ):
        """Tokenize a whole video into `Tokens`: a path, or uint8 frames [T, H, W, 3] at `fps`
        (default 24). `size` resizes the short side to exactly that, `max_size` only shrinks larger
        sources; `start` / `max_frames` pick a segment. `target_psnr` gives each window the fewest
        tokens predicted, less the calibrated margins, to reach it (instead of `rate`). `strategy`,
        `selection` and `fill` default as `choices` says. Under `hold` and `drift` every window but each
        `refresh`-th continues the one before (default `spec.DEFAULT_REFRESH`; 1: independent windows).
        `key_density`: sparse key frames' density (`fill.key_lattice`; None: the checkpoint's)."""
        return self.iter_tokenize(
            video,
            rate,
            strategy,
            selection,
            window,
            overlap,
            size,
            seed,
            fps=fps,
            start=start,
            max_frames=max_frames,
            max_size=max_size,
            target_psnr=target_psnr,
            objective=objective,
            fill=fill,
            refresh=refresh,
            key_density=key_density,
        ).collect()

    def iter_detokenize(self, header, windows, start: int = 0, stop: int | None = None):
        """Decode windows (any iterable, e.g. a TokenReader) into blended uint8 frames, streaming; frames
        [start, stop) only decode the windows that hold them."""
        return pipeline.iter_detokenize(self, header, windows, start, stop)

    def detokenize(self, tokens, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens -> uint8 frames [T, H, W, 3] (frames [start, stop) of the video)."""
        return np.stack(list(self.iter_detokenize(tokens.header, tokens.windows, start, stop)))

    def reconstruct(self, video, **kwargs) -> np.ndarray:
        """detokenize(tokenize(video)): what a user of the tokens would see."""
        return self.detokenize(self.tokenize(video, **kwargs))
