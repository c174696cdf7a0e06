"""Entropy coding of grid windows with a `prior.TokenPrior` (range coding by `constriction`, a maintained library).

A window is coded given the state the previous window of the same video left (the code last kept at each
position, and its age), so `PriorCoder` keeps that state from one window to the next: a file's windows are coded,
and must be decoded, in order. Decoder and sampler walk a window symbol group by symbol group (`_walk_window`),
the encoder the same groups in the same order, batched over latent frames (`walk_known`): the
prior's trunk once a latent frame, its pass blocks once a pass (9 a latent frame for the shipped prior, none for
a phase that keeps no code, nor the mask passes of a window whose kept count says its mask), each on what was coded
so far. Both see the same integer probabilities (`prior`'s fixed point), so decoding is lossless on any machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from . import geometry
from .prior import (
    PRIOR_CONFIG,
    TokenPrior,
    advance,
    asked_row,
    code_digits,
    coded_here,
    digit_inputs,
    digit_logits,
    digits_code,
    frame_features,
    held_code_digits,
    kept_bucket,
    mask_logits,
    no_held_codes,
    pass_context,
    pass_features,
    window_states,
)
from .token_header import FORMAT_VERSION_PRIOR

KNOWN_CHUNK_POSITIONS = 1 << 15  # latent positions the encoder runs a pass over at once (bounds its memory)


def _constriction():
    import constriction

    return constriction


class PriorCoder:
    """Codes the windows of one video in order (a new video: a new coder). `refresh`: the file's (`header.refresh`),
    which says the windows that continue the one before (`fill.Carry`), which a prior with `continuing` tells
    apart. `format_version`: the file's; from version 5 on, a window that keeps every token or none codes no mask
    (its record's kept count says it), which at full rate spares 4 of the shipped prior's 10 pass-block runs a
    latent frame; files of earlier versions code it. `asked`: the file's `prior.asked_row`, which a prior with
    `asked_rate` reads."""

    def __init__(self, prior: TokenPrior, refresh: int = 1, format_version: int = FORMAT_VERSION_PRIOR, asked: int = 0):
        self.prior, self.refresh, self.asked = prior, refresh, asked
        self.masks_implied = format_version >= FORMAT_VERSION_PRIOR
        self.held: torch.Tensor | None = None  # [h, w] code last kept (-1 none), from the previous window
        self.age: torch.Tensor | None = None
        self.windows = 0  # windows coded so far
        self.model = _constriction().stream.model.Categorical(perfect=False)

    @classmethod
    def for_file(cls, prior: TokenPrior, header, format_version: int = FORMAT_VERSION_PRIOR) -> "PriorCoder":
        """The coder of a file's windows, with what its header (`TokenHeader`) says: which windows continue the one
        before (`refresh`) and the asked rate (`prior.asked_row`); `format_version` is the file's when reading one."""
        return cls(prior, header.refresh, format_version, asked_row(header))

    # ------------------------------------------------------------------ state
    def _start(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.held is None or tuple(self.held.shape) != (h, w):
            return no_held_codes((h, w))
        return self.held.clone(), self.age.clone()

    # ------------------------------------------------------------------ coding
    def encode(self, mask: np.ndarray, indices: np.ndarray) -> bytes:
        """A window's keep-mask [t, h, w] and kept indices (raster order) -> coded bytes."""
        encoder = _constriction().stream.queue.RangeEncoder()

        def code(probs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
            encoder.encode(symbols.astype(np.int32), self.model, probs)
            return symbols

        self.walk_known(mask, indices, code)
        return encoder.get_compressed().astype("<u4").tobytes()

    def walk_known(self, mask: np.ndarray, indices: np.ndarray, choose) -> None:
        """Walk a window whose keep-mask [t, h, w] and kept indices are known, as the encoder does: `choose` sees
        each group's probabilities with its true symbols, in the order the decoder meets them. Knowing every
        symbol, the encoder runs each pass over a chunk of latent frames at once (the states before each frame follow
        from the mask and codes): the same integers as the decoder's frame-by-frame walk, in one network call where
        the decoder makes one a latent frame (9 in a 33-frame window)."""
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
        codes = torch.zeros(mask_t.shape, dtype=torch.long)
        codes[mask_t] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        t, h, w = mask_t.shape
        helds, ages, held, age = window_states(mask_t, codes, *self._start(h, w))
        context = self._window_context(t, h, w, int(mask_t.sum()))
        chunk = max(1, KNOWN_CHUNK_POSITIONS // (h * w))
        for first in range(0, t, chunk):
            frames = slice(first, first + chunk)
            groups = self._known_groups(
                mask_t[frames], codes[frames], helds[frames], ages[frames], torch.arange(t)[frames], *context
            )
            for frame_groups in groups:
                for probs, symbols in frame_groups:
                    choose(probs, symbols)
        self.held, self.age, self.windows = held, age, self.windows + 1

    def _window_context(self, t: int, h: int, w: int, kept: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """What every pass of a window sees of the window: its kept bucket, whether it continues the one before, and
        whether its mask is implied (`format_version`)."""
        bucket = torch.tensor([kept_bucket(kept, t * h * w)])
        continues = torch.tensor([int(geometry.continues(self.windows, self.refresh))])
        return bucket, continues, self.masks_implied and kept in (0, t * h * w)

    def _known_groups(self, mask, codes, helds, ages, frames, bucket, continues, implied) -> list[list]:
        """For latent frames `frames` of a known window ([n, h, w] each, with the states before them): each frame's
        (probabilities, true symbols) groups in coding order."""
        n = len(frames)
        cfg, order = self.prior.config, self.prior.config.order
        groups: list[list] = [[] for _ in range(n)]
        everywhere, trunk = torch.ones_like(mask), None
        bucket, continues, asked = bucket.expand(n), continues.expand(n), torch.tensor([self.asked]).expand(n)
        for s in range(order.passes):
            mask_pass = order.is_mask(s)
            if mask_pass and implied:
                continue
            step = torch.full((n,), s)
            mask_here, code_here = coded_here(order, step, everywhere if mask_pass else mask)
            if not mask_pass and not code_here.any():
                continue
            ctx = pass_context(order, helds, ages, mask, codes, frames, step, bucket, continues, asked)
            if trunk is None:
                trunk = frame_features(self.prior, ctx)
            feats = pass_features(self.prior, ctx, trunk, s)
            if mask_pass:
                probs = self._probs(mask_logits(self.prior, feats)[mask_here])
                true, frame_of = mask[mask_here].numpy(), mask_here.nonzero()[:, 0].numpy()
                for i in range(n):  # every frame codes its mask passes, even on no position (a 1x1 frame's odd squares)
                    at = frame_of == i
                    groups[i].append((probs[at], true[at]))
                continue
            frame_of = code_here.nonzero()[:, 0].numpy()
            digits = code_digits(codes[code_here], cfg.levels)
            held_digits = held_code_digits(cfg, helds[code_here])
            per_digit = [
                (self._probs(digit_logits(self.prior, x, j, held_digits)), digits[:, j].numpy())
                for j, x in digit_inputs(self.prior, feats.permute(0, 2, 3, 1)[code_here], digits, held_digits)
            ]
            for i in np.unique(frame_of):  # a frame that keeps no code on this phase codes nothing in this pass
                at = frame_of == i
                groups[i].extend((probs[at], true[at]) for probs, true in per_digit)
        return groups

    def _probs(self, logits: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(self.prior.probabilities(logits))

    def decode(self, data: bytes, shape: tuple[int, int, int], kept: int) -> tuple[np.ndarray, np.ndarray]:
        """Coded bytes of a window of token grid `shape` that keeps `kept` tokens (its record says) -> (keep-mask
        [t, h, w], kept indices uint16)."""
        if len(data) % 4:
            raise ValueError("coded window is not a whole number of 32-bit words")
        decoder = _constriction().stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
        return self._walk_window(shape, kept, lambda probs, _: decoder.decode(self.model, probs))

    def sample(self, shape: tuple[int, int, int], kept: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A window of token grid `shape` drawn from the prior (given the windows coded or drawn before), as one that
        keeps about `kept` tokens."""

        def draw(probs: np.ndarray, _) -> np.ndarray:
            return (np.cumsum(probs, axis=1) < rng.random((len(probs), 1))).sum(axis=1).clip(max=probs.shape[1] - 1)

        return self._walk_window(shape, kept, draw)

    def _walk_window(self, shape: tuple[int, int, int], kept: int, choose) -> tuple[np.ndarray, np.ndarray]:
        """A window's symbols in coding order, each revealed before the next is asked for (decoder and sampler):
        each group's symbols are `choose(probabilities [n, k], None) -> n symbols`. `walk_known` gives the same
        groups when every symbol is known."""
        t, h, w = shape
        levels, order = self.prior.config.levels, self.prior.config.order
        held, age = self._start(h, w)
        mask = torch.zeros((t, h, w), dtype=torch.bool)
        codes = torch.zeros((t, h, w), dtype=torch.long)
        everywhere = torch.ones((1, h, w), dtype=torch.bool)
        bucket, continues, implied = self._window_context(t, h, w, kept)

        def pick(probs: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(choose(probs, None)).astype(np.int64))

        for i in range(t):
            trunk = None
            if implied:
                mask[i] = kept > 0
            for s in range(order.passes):
                mask_pass = order.is_mask(s)
                if mask_pass and implied:
                    continue
                frame, step = torch.tensor([i]), torch.tensor([s])
                mask_here, code_here = (
                    where[0] for where in coded_here(order, step, everywhere if mask_pass else mask[i : i + 1])
                )
                if not mask_pass and not code_here.any():
                    continue  # no code kept on this phase: nothing to code, no network call
                ctx = pass_context(
                    order, held[None], age[None], mask[i : i + 1], codes[i : i + 1], frame, step, bucket, continues,
                    torch.tensor([self.asked]),
                )  # fmt: skip
                if trunk is None:  # the trunk reads the state before the frame only: once a frame
                    trunk = frame_features(self.prior, ctx)
                feats = pass_features(self.prior, ctx, trunk, s)
                if mask_pass:
                    mask[i][mask_here] = pick(self._probs(mask_logits(self.prior, feats)[0][mask_here])).bool()
                    continue
                digits = torch.zeros((int(code_here.sum()), len(levels)), dtype=torch.long)
                held_digits = held_code_digits(self.prior.config, held[code_here])
                for j, x in digit_inputs(self.prior, feats[0].permute(1, 2, 0)[code_here], digits, held_digits):
                    digits[:, j] = pick(self._probs(digit_logits(self.prior, x, j, held_digits)))
                codes[i][code_here] = digits_code(digits, levels)
            held, age = advance(held, age, mask[i], codes[i])
        self.held, self.age, self.windows = held, age, self.windows + 1
        return mask.numpy(), codes[mask].numpy().astype(np.uint16)


SHIPPED_PRIOR = Path(__file__).resolve().parent / "weights" / "prior-flex"  # for the shipped InfoTok-Flex's tokens


def load_prior(directory: str | os.PathLike | None = None) -> TokenPrior:
    """The prior in `directory`, or the installed one (trained on the shipped checkpoint's tokens)."""
    return TokenPrior.from_pretrained(directory or SHIPPED_PRIOR)


def find_prior(needed: str, given: TokenPrior | None, name: str) -> TokenPrior:
    """The prior a file coded with prior `needed` (its hash) decodes with: `given`, if it is that prior, else the
    installed one with that hash; anything else is a ValueError naming what is needed."""
    if given is not None:
        if needed not in given.hashes:
            raise ValueError(
                f"{name}: coded with prior {needed}, but the prior given is {given.hash}; "
                "a file decodes with the prior that coded it only"
            )
        return given
    config = SHIPPED_PRIOR / PRIOR_CONFIG
    if config.is_file() and json.loads(config.read_text()).get("hash") == needed:
        prior = load_prior()
        if needed in prior.hashes:
            return prior
    raise ValueError(
        f"{name}: coded with prior {needed}, which is not installed; pass the prior's folder "
        "(--prior DIR, or prior=infotok.entropy.load_prior(DIR)); docs/PRIOR.md lists every prior infotok has "
        "shipped and the commit to take its folder from"
    )
