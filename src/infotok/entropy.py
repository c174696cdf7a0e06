"""Entropy coding of grid windows with a `prior.TokenPrior` (range coding by `constriction`, a maintained library).

A window is coded given the state the previous window of the same video left (the code last kept at each
position, and its age), so `PriorCoder` keeps that state from one window to the next: a file's windows are coded,
and must be decoded, in order. The encoder knows every symbol, so it computes all passes of a window in one batched
network call; the decoder makes the calls one pass at a time (6 per latent frame), each on what it decoded so far.
Both see the same integer probabilities (`prior`'s fixed point), so decoding is lossless on any machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .prior import (
    MASK_PASSES,
    PASSES,
    PRIOR_CONFIG,
    Context,
    TokenPrior,
    advance,
    code_digits,
    coded_here,
    digit_logits,
    digits_code,
    features,
    kept_bucket,
    mask_logits,
    pass_context,
    window_passes,
    window_states,
)

CONTEXT_FIELDS = tuple(Context.__dataclass_fields__)


def _constriction():
    import constriction

    return constriction


class PriorCoder:
    """Codes the windows of one video in order (a new video: a new coder)."""

    def __init__(self, prior: TokenPrior):
        self.prior = prior
        self.held: torch.Tensor | None = None  # [h, w] code last kept (-1 none), from the previous window
        self.age: torch.Tensor | None = None
        self.model = _constriction().stream.model.Categorical(perfect=False)

    # ------------------------------------------------------------------ state
    def _start(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.held is None or tuple(self.held.shape) != (h, w):
            return torch.full((h, w), -1, dtype=torch.long), torch.zeros((h, w), dtype=torch.long)
        return self.held.clone(), self.age.clone()

    # ------------------------------------------------------------------ coding
    def encode(self, mask: np.ndarray, indices: np.ndarray) -> bytes:
        """A window's keep-mask [t, h, w] and kept indices (raster order) -> coded bytes."""
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
        t, h, w = mask_t.shape
        codes = torch.zeros((t, h, w), dtype=torch.long)
        codes[mask_t] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        helds, ages, held, age = window_states(mask_t, codes, *self._start(h, w))
        n = len(PASSES)
        context, mask_b, codes_b, step = window_passes(mask_t, codes, helds, ages)
        mask_here, code_here = coded_here(step, mask_b)
        encoder = _constriction().stream.queue.RangeEncoder()
        for b in range(t * n):  # the decoder's order: frame by frame, pass by pass
            if b % n == 0:  # a latent frame's passes at once (float64 convolutions are slower in larger batches)
                feats = features(self.prior, Context(*(getattr(context, f)[b : b + n] for f in CONTEXT_FIELDS)))
            here = feats[b % n]
            if b % n < MASK_PASSES:
                probs = self._probs(mask_logits(self.prior, here[None])[0][mask_here[b]])
                encoder.encode(mask_b[b][mask_here[b]].numpy().astype(np.int32), self.model, probs)
                continue
            vectors = here.permute(1, 2, 0)[code_here[b]]
            digits = code_digits(codes_b[b][code_here[b]], self.prior.config.levels)
            for j in range(digits.shape[1] if len(vectors) else 0):
                probs = self._probs(digit_logits(self.prior, vectors, digits, j))
                encoder.encode(digits[:, j].numpy().astype(np.int32), self.model, probs)
        self.held, self.age = held, age
        return encoder.get_compressed().astype("<u4").tobytes()

    def _probs(self, logits: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(self.prior.probabilities(logits))

    def decode(self, data: bytes, shape: tuple[int, int, int], kept: int) -> tuple[np.ndarray, np.ndarray]:
        """Coded bytes of a window of token grid `shape` that keeps `kept` tokens (its record says) -> (keep-mask
        [t, h, w], kept indices uint16)."""
        if len(data) % 4:
            raise ValueError("coded window is not a whole number of 32-bit words")
        decoder = _constriction().stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
        return self._draw_window(shape, kept, lambda probs: decoder.decode(self.model, probs))

    def sample(self, shape: tuple[int, int, int], kept: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A window of token grid `shape` drawn from the prior (given the windows coded or drawn before), as one that
        keeps about `kept` tokens."""

        def draw(probs: np.ndarray) -> np.ndarray:
            return (np.cumsum(probs, axis=1) < rng.random((len(probs), 1))).sum(axis=1).clip(max=probs.shape[1] - 1)

        return self._draw_window(shape, kept, draw)

    def _draw_window(self, shape: tuple[int, int, int], kept: int, draw) -> tuple[np.ndarray, np.ndarray]:
        """A window's symbols in coding order, each group from `draw(probabilities [n, k]) -> n symbols`."""
        t, h, w = shape
        levels = self.prior.config.levels
        held, age = self._start(h, w)
        mask = torch.zeros((t, h, w), dtype=torch.bool)
        codes = torch.zeros((t, h, w), dtype=torch.long)
        everywhere = torch.ones((1, h, w), dtype=torch.bool)
        bucket = torch.tensor([kept_bucket(kept, t * h * w)])
        for i in range(t):
            for s in range(len(PASSES)):
                frame, step = torch.tensor([i]), torch.tensor([s])
                ctx = pass_context(held[None], age[None], mask[i : i + 1], codes[i : i + 1], frame, step, bucket)
                feats = features(self.prior, ctx)[0]
                if s < MASK_PASSES:
                    where = coded_here(step, everywhere)[0][0]
                    probs = self._probs(mask_logits(self.prior, feats[None])[0][where])
                    mask[i][where] = torch.from_numpy(np.asarray(draw(probs)).astype(bool))
                    continue
                where = coded_here(step, mask[i : i + 1])[1][0]
                if not where.any():
                    continue
                vectors = feats.permute(1, 2, 0)[where]
                digits = torch.zeros((len(vectors), len(levels)), dtype=torch.long)
                for j in range(len(levels)):
                    probs = self._probs(digit_logits(self.prior, vectors, digits, j))
                    digits[:, j] = torch.from_numpy(np.asarray(draw(probs)).astype(np.int64))
                codes[i][where] = digits_code(digits, levels)
            held, age = advance(held, age, mask[i], codes[i])
        self.held, self.age = held, age
        return mask.numpy(), codes[mask].numpy().astype(np.uint16)


SHIPPED_PRIOR = Path(__file__).resolve().parent / "weights" / "prior-flex"  # for the shipped InfoTok-Flex's tokens


def load_prior(directory: str | os.PathLike | None = None) -> TokenPrior:
    """The prior in `directory`, or the installed one (trained on the shipped checkpoint's tokens)."""
    return TokenPrior.from_pretrained(directory or SHIPPED_PRIOR)


def find_prior(needed: str, given: TokenPrior | None, name: str) -> TokenPrior:
    """The prior a file coded with prior `needed` (its hash) decodes with: `given`, if it is that prior, else the
    installed one with that hash; anything else is a ValueError naming what is needed."""
    if given is not None:
        if given.hash != needed:
            raise ValueError(
                f"{name}: coded with prior {needed}, but the prior given is {given.hash}; "
                "a file decodes with the prior that coded it only"
            )
        return given
    config = SHIPPED_PRIOR / PRIOR_CONFIG
    if config.is_file() and json.loads(config.read_text()).get("hash") == needed:
        prior = load_prior()
        if prior.hash == needed:
            return prior
    raise ValueError(
        f"{name}: coded with prior {needed}, which is not installed; pass the prior's folder "
        "(--prior DIR, or prior=infotok.entropy.load_prior(DIR))"
    )
