"""The tokens of a video (`Tokens`: header and windows, in memory), and what `infotok info` says of a file.

The header and window records are `token_header`'s, the `.itok` format `token_file`'s; their names
are importable from here too, where they have always been. No torch: `infotok info` starts at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .ledger import Ledger
from .token_file import (  # noqa: F401 (re-exported)
    _TRAILER,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    MAX_TOKENS_PER_WINDOW,
    READ_VERSIONS,
    TOKEN_SUFFIX,
    TRAILER_MAGIC,
    TokenFormatError,
    TokenReader,
    TokenWriter,
    check_token_output,
    decode_window,
    encode_window,
)
from .token_header import (  # noqa: F401 (re-exported)
    FORMAT_VERSION,
    FORMAT_VERSION_1D,
    LAYOUTS,
    TokenHeader,
    TokenWindow,
    _is_int,
    check_header,
    grid_positions,
    header_geometry,
    window_count,
    window_grid,
    window_span,
)

if TYPE_CHECKING:  # the file format needs no torch: `infotok info` starts without it
    import torch

    from .batch import TokenBatch


@dataclass
class Tokens:
    header: TokenHeader
    windows: list[TokenWindow] = field(default_factory=list)

    def __repr__(self) -> str:
        h, ledger = self.header, self.ledger()
        if h.layout == "1d":
            kept = sorted({w.kept for w in self.windows})
            return (
                f"Tokens(model {h.model!r}, {h.num_frames} frames {h.width}x{h.height}, 1D layout, "
                f"{len(self.windows)} window{'s' if len(self.windows) != 1 else ''} of {kept[0]}"
                f"{'' if len(kept) == 1 else f'-{kept[-1]}'} tokens, {ledger.kept} in all)"
            )
        return (
            f"Tokens(model {h.model!r}, {h.num_frames} frames {h.width}x{h.height}, {len(self.windows)} "
            f"window{'s' if len(self.windows) != 1 else ''}, kept {ledger.kept}/{ledger.total} tokens "
            f"(rate {ledger.realized_rate:.3f}), {h.strategy} + {h.selection} + {h.fill})"
        )

    def batch(self, index: int, device: torch.device | str = "cpu") -> TokenBatch:
        """Window `index` as tensors to compute with: int64 indices and a bool keep-mask [1, t, h, w]
        (uint16 is only the file's storage type), and what it continues from where windows continue
        each other (worked out from the windows since the last fresh one)."""
        from .batch import window_batches

        index = range(len(self.windows))[index]  # a negative index counts from the end
        first = index - index % self.header.refresh
        batches = window_batches(self.header, self.windows[first : index + 1], device)
        return [b for _, b in batches][-1]

    def __getitem__(self, windows: slice) -> "Tokens":
        """`tokens[i:j]`: windows i to j-1 as a video of their own (frames numbered from their first).
        Where windows continue each other, the first is given the codes it continues from as kept
        ones (worked out from the windows since the last fresh one), so the slice decodes alone and
        its frames are the whole decode's, but for the first window's frames shared with the window
        before it (they are no longer blended with that one)."""
        if not isinstance(windows, slice) or windows.step not in (None, 1):
            raise TypeError("slice Tokens by windows, tokens[i:j] (one window's record: tokens.windows[i])")
        i, j, _ = windows.indices(len(self.windows))
        if i >= j:
            raise ValueError(f"windows {windows.start}:{windows.stop} of {len(self.windows)} hold no window")
        h, out = self.header, list(self.windows[i:j])
        if h.continues(i):
            misaligned = [k for k in range(i + 1, j) if not h.continues(k) and (k - i) % h.refresh]
            if any(not self.windows[k].mask[0].all() for k in misaligned):
                raise ValueError(
                    f"window {misaligned[0]} starts afresh without its whole first latent frame, so a slice can "
                    f"only start at a multiple of the refresh ({h.refresh}) here"
                )
            batch = self.batch(i)
            indices, mask = batch.carry.into(batch.indices, batch.mask)
            mask, indices = mask[0].cpu(), indices[0].cpu()
            first = out[0]
            out[0] = TokenWindow(
                first.start, first.end, int(mask.sum()) / mask.numel(), first.score, mask.numpy(),
                indices[mask].numpy().astype(np.uint16),
            )  # fmt: skip
        shift = out[0].start
        out = [replace(w, start=w.start - shift, end=w.end - shift, nbytes=0) for w in out]
        return Tokens(replace(h, num_frames=out[-1].end), out)

    def truncate(self, k: int) -> "Tokens":
        """The same video with each window cut to its first `k` tokens (1D layout: any prefix decodes,
        coarser; a window holding fewer keeps them all). No re-encoding."""
        if self.header.layout != "1d":
            raise ValueError("only 1D-layout tokens can be cut to a prefix; a grid file's tokens have no order")
        if not (_is_int(k) and k >= 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        windows = []
        for w in self.windows:
            n = min(k, w.kept)
            mask = np.zeros_like(w.mask)
            mask.reshape(-1)[:n] = True
            windows.append(
                TokenWindow(w.start, w.end, w.rate * n / max(w.kept, 1), w.score, mask, w.indices[:n].copy())
            )
        header = replace(self.header, avg_rate=float(np.mean([w.rate for w in windows])) if windows else 0.0)
        return Tokens(header, windows)

    def ledger(self, file_bytes: int | None = None) -> Ledger:
        """Kept and total tokens over the video (+ the real bits of its file, when given). A 1D file's total
        is the grid's positions for its windows (so its rate compares with a grid file's) and it has no
        mask: a window's prefix length is all it stores besides its tokens."""
        return video_ledger(self.header, self.windows, file_bytes)

    def save(self, path: str | os.PathLike, overwrite: bool = False, prior=None) -> Path:
        """Write an `.itok` file; an existing one is only replaced with overwrite=True (the CLI's --overwrite).
        With a `prior.TokenPrior` (`entropy.load_prior()`), the windows are range-coded with it (grid files)."""
        with TokenWriter(path, self.header, overwrite=overwrite, prior=prior) as writer:
            for w in self.windows:
                writer.write(w)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, prior=None) -> "Tokens":
        """Read an `.itok` file (a prior-coded one with `prior`, or the installed prior its header names)."""
        reader = TokenReader(path, prior)
        with reader:
            return cls(reader.header, list(reader))


def video_ledger(h: TokenHeader, windows, file_bytes: int | None = None) -> Ledger:
    """The ledger of a video's windows (`TokenWindow`s, or a file's `WindowHead`s: each with `kept`, `num_tokens`)."""
    kept = sum(w.kept for w in windows)
    total = len(windows) * grid_positions(h) if h.layout == "1d" else sum(w.num_tokens for w in windows)
    return Ledger(kept, total, h.num_frames * h.width * h.height, file_bytes, h.layout != "1d", h.num_frames / h.fps)


def describe(path: str | os.PathLike, prior=None) -> dict:
    """Everything `infotok info` shows about a token file: header, ledger, per-window records, from the records'
    heads (a prior-coded file needs no prior for them); with a `prior`, a zlib file's tokens are also coded with it
    (`prior_bpp16`, to set beside the real and nominal BPP16)."""
    with TokenReader(path, prior, need_prior=False) as reader:
        h, header_bytes = reader.header, reader.header_bytes
        estimating = prior is not None and h.codec == "zlib"  # the estimate codes the tokens: read them, once
        windows = list(reader) if estimating else list(reader.heads())  # both say what the records say
    estimate = _prior_estimate(h, windows, prior) if estimating else {}
    size = Path(path).stat().st_size
    ledger = video_ledger(h, windows, file_bytes=size)
    window_pixels = sum((w.end - w.start) * h.width * h.height for w in windows)
    return {
        "file": str(path),
        "format_version": h.format_version,
        "model": h.model,
        "model_hash": h.model_hash,
        "config_hash": h.config_hash,
        "levels": h.levels,
        "frames": h.num_frames,
        "fps": h.fps,
        "size": f"{h.width}x{h.height}",
        "source_size": f"{h.source_width}x{h.source_height}",
        "window": h.window,
        "overlap": h.overlap,
        "refresh": h.refresh,
        "strategy": h.strategy,
        "selection": h.selection,
        "fill": h.fill,
        "codec": h.codec,
        **({"prior_hash": h.prior_hash} if h.codec == "prior" else {}),
        **({"layout": h.layout, "registers": h.registers, "region": h.region} if h.layout != "grid" else {}),
        "avg_rate": h.avg_rate,
        "score_mean": h.score_mean,
        "windows": len(windows),
        **ledger.to_dict(),
        "header_bytes": header_bytes,
        "window_bytes": sum(w.nbytes for w in windows),
        "trailer_bytes": _TRAILER.size,
        "file_bpp16_per_window_pixel": size * 8 * 16 / window_pixels,
        **estimate,
        "per_window": [
            {
                "frames": [w.start, w.end],
                "rate": round(w.rate, 5),
                "kept": w.kept,
                "tokens": w.num_tokens,
                "bytes": w.nbytes,
            }
            for w in windows
        ],
    }


def _prior_estimate(h: TokenHeader, windows: list[TokenWindow], prior) -> dict:
    """What a zlib file's windows would take coded with `prior` (`infotok info --prior`): the prior's own count
    of their bits, beside the file's real and nominal ones."""
    if h.layout != "grid":
        return {}
    from .entropy import PriorCoder

    coder = PriorCoder.for_file(prior, h)  # as the prior-coded file would code them
    coded = sum(len(coder.encode(w.mask, w.indices)) for w in windows)
    return {
        "prior_hash": prior.hash,
        "prior_coded_token_bytes": coded,
        "prior_bpp16": coded * 8 * 16 / (h.num_frames * h.width * h.height),
    }


def __getattr__(name: str):
    """`infotok.tokens.TokenBatch`, where it lived before `infotok.batch`: works for one more release."""
    if name == "TokenBatch":
        import warnings

        from .batch import TokenBatch

        warnings.warn(
            "infotok.tokens.TokenBatch moved to infotok.batch.TokenBatch; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return TokenBatch
    raise AttributeError(f"module 'infotok.tokens' has no attribute {name!r}")
