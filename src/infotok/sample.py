"""New videos from the token prior (`infotok sample`): windows of tokens drawn from `prior.TokenPrior`, decoded by the
tokenizer. Unconditional, or continuing the first window of a given video (the prior then starts from the state
that window leaves, as when it codes a file). The prior is small and CPU-trained: this shows the loop works end to
end (and how far the prior is from a generator), not a generator's quality.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .entropy import PriorCoder
from .geometry import window_span
from .spec import TokenizeSpec, Windowing
from .tokens import Tokens, TokenWindow


def sample_tokens(
    model,
    prior,
    windows: int = 2,
    prompt: Tokens | None = None,
    size: tuple[int, int] = (256, 256),
    fps: float = 24.0,
    seed: int = 0,
) -> Tokens:
    """`windows` windows of tokens: the prompt's windows (if any), then windows drawn from `prior` one after another
    (seeded: the same seed draws the same tokens). Without a prompt the frames are `size` (width, height)."""
    if windows < 1:
        raise ValueError(f"windows must be at least 1, got {windows}")
    if prompt is None:
        from .pipeline import new_header

        spec, windowing = TokenizeSpec().resolved(model), Windowing()
        header = new_header(
            model, *size, fps, windowing.window, windowing.overlap,
            strategy=spec.strategy, selection=spec.selection, avg_rate=spec.rate, fill=spec.fill,
        )  # fmt: skip
        prompt = Tokens(header, [])
    if prompt.header.layout != "grid" or prompt.header.levels != prior.config.levels:
        raise ValueError(f"the prior draws grid tokens of levels {prior.config.levels}")
    # drawn windows start afresh (as independent windows, refresh 1), whatever the prompt's file did
    coder, rng = PriorCoder.for_file(prior, replace(prompt.header, refresh=1)), np.random.default_rng(seed)
    out = list(prompt.windows[:windows])
    if len(out) > 1 and prompt.header.refresh > 1:
        raise ValueError("the prior draws windows that start afresh: give a prompt of one window, or of refresh 1")
    if out and out[-1].end - out[-1].start != prompt.header.window:
        raise ValueError(
            f"the prompt's last window holds {out[-1].end - out[-1].start} frames; a continuation needs "
            f"a whole window of {prompt.header.window}"
        )
    for w in out:  # the state the prompt leaves
        coder.encode(w.mask, w.indices)
    h = prompt.header
    total = window_span(windows - 1, 1 << 30, h.window, h.overlap)[1]
    # drawn windows keep about the prompt's last window's share of tokens (without a prompt: 0.4, the default's)
    share = out[-1].kept / out[-1].num_tokens if out else 0.4
    for i in range(len(out), windows):
        start, end = window_span(i, total, h.window, h.overlap)
        shape = model.geometry.latent_shape(end - start, h.height, h.width)
        mask, indices = coder.sample(shape, round(share * math.prod(shape)), rng)
        out.append(TokenWindow(start, end, max(int(mask.sum()), 1) / mask.size, 0.0, mask, indices))
    return Tokens(replace(h, num_frames=out[-1].end, strategy="sample", selection="prior", refresh=1), out)
