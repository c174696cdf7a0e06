"""Where the tokens went: original | reconstruction with the kept-token mask | the mask alone.

Each panel row is one video frame; under it a bar shows the fraction of tokens kept in the latent
frame that frame belongs to. `strip` lays a few such frames out as one PNG for READMEs.
"""
from __future__ import annotations

import itertools
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from .geometry import Geometry
from .ledger import Ledger
from .pipeline import iter_detokenize, video_source
from .tokens import Tokens, TokenWindow, header_geometry
from .video import probe, write_video

BAR_HEIGHT = 10


def frame_masks(window: TokenWindow, geometry: Geometry) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, keep-mask [h, w] of the latent frame covering it) for each frame of a window."""
    for i in range(window.end - window.start):
        yield window.start + i, window.mask[min(geometry.latent_frame_of(i), window.mask.shape[0] - 1)]


def per_frame_masks(tokens: Tokens) -> list[np.ndarray]:
    """The keep-mask [h, w] of the latent frame covering each output frame (later windows win)."""
    masks: list[np.ndarray | None] = [None] * tokens.header.num_frames
    for w in tokens.windows:
        for frame, mask in frame_masks(w, header_geometry(tokens.header)):
            masks[frame] = mask
    return masks


def compose(original: np.ndarray, recon: np.ndarray, mask: np.ndarray, spatial: int) -> np.ndarray:
    """One visualization frame [H + bar, 3W, 3] uint8."""
    h, w = original.shape[:2]
    up = np.kron(mask.astype(np.uint8), np.ones((spatial, spatial), np.uint8))[:h, :w].astype(bool)
    overlay = recon.astype(np.float32)
    overlay[~up] *= 0.45  # dropped tokens dimmed
    overlay[up] = 0.8 * overlay[up] + 0.2 * np.array([255, 80, 40], np.float32)  # kept tokens tinted
    mask_img = np.repeat((up * 255).astype(np.uint8)[..., None], 3, axis=2)
    row = np.concatenate([original, overlay.clip(0, 255).astype(np.uint8), mask_img], axis=1)
    bar = np.full((BAR_HEIGHT, row.shape[1], 3), 32, np.uint8)
    filled = int(round(mask.mean() * row.shape[1]))
    bar[2:-2, :filled] = (255, 170, 40)
    return np.concatenate([row, bar], axis=0)


def render(originals: Iterable[np.ndarray], recons: Iterable[np.ndarray], tokens: Tokens) -> Iterator[np.ndarray]:
    masks = per_frame_masks(tokens)
    for i, (o, r) in enumerate(zip(originals, recons)):
        yield compose(o, r, masks[i], tokens.header.spatial_factor)


class StripSampler:
    """Keeps `count` roughly evenly spaced frames of a stream of unknown length, holding at most
    2 x count: every kept frame's index is a multiple of a stride that doubles when the store fills."""

    def __init__(self, count: int = 4):
        self.count, self.stride, self.kept = count, 1, {}
        self.seen = 0

    def add(self, frame: np.ndarray) -> None:
        if self.seen % self.stride == 0:
            self.kept[self.seen] = frame
            if len(self.kept) > 2 * self.count:
                self.stride *= 2
                self.kept = {i: f for i, f in self.kept.items() if i % self.stride == 0}
        self.seen += 1

    def frames(self) -> list[np.ndarray]:
        indices = sorted(self.kept)
        picks = np.linspace(0, len(indices) - 1, min(self.count, len(indices))).round().astype(int)
        return [self.kept[indices[p]] for p in sorted(set(picks))]


def visualize_file(model, src, dst, png, on_window=None, **settings) -> Ledger:
    """`infotok viz`: tokenize `src` and write original | reconstruction | keep-mask as a video and a
    PNG strip, streaming: memory holds about two windows of frames, whatever the video's length."""
    stream = model.iter_tokenize(src, **settings)
    masks: dict[int, np.ndarray] = {}
    kept = total = 0

    def recorded() -> Iterator[TokenWindow]:
        nonlocal kept, total
        for w in stream:
            for frame, mask in frame_masks(w, model.geometry):  # a later window's mask wins in the overlap
                masks[frame] = mask
            kept, total = kept + w.kept, total + w.num_tokens
            if on_window:
                on_window(w)
            yield w

    def panels() -> Iterator[np.ndarray]:
        originals, _, _ = video_source(src, settings.get("size"), None, settings.get("start", 0),
                                       settings.get("max_frames"), settings.get("max_size"))
        windows = recorded()
        first = next(windows)  # the header exists once the first window is out
        chained = itertools.chain([first], windows)
        for i, (o, r) in enumerate(zip(originals, iter_detokenize(model, stream.header, chained))):
            panel = compose(o, r, masks.pop(i), model.geometry.spatial_factor)
            sampler.add(panel)
            yield panel

    sampler = StripSampler()
    write_video(dst, panels(), fps=probe(src).fps)
    ledger = Ledger(kept, total)
    strip(sampler.frames(), png, title=f"{Path(src).name}: original | reconstruction, kept tokens tinted | "
                                       f"kept-token mask (rate {ledger.realized_rate:.2f}, {settings.get('strategy')})")
    return ledger


def strip(frames: list[np.ndarray], path: str | Path, count: int = 4, title: str | None = None) -> Path:
    """Save `count` evenly spaced visualization frames stacked vertically as a PNG, pixel for pixel.

    Encoded by PyAV (FFmpeg's PNG encoder), so `demo` and `viz` need no plotting library; `title`
    goes into the PNG's standard Title text field."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    image = np.ascontiguousarray(np.concatenate([frames[i] for i in sorted(set(picks))], axis=0))
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    codec.sample_aspect_ratio = Fraction(1, 1)  # square pixels (unset, FFmpeg writes a 0:1 pHYs chunk)
    png = b"".join(bytes(p) for p in codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    png += b"".join(bytes(p) for p in codec.encode(None))
    if title:  # an iTXt chunk (UTF-8) right after the 8-byte signature and the 25-byte IHDR chunk
        body = b"Title\0\0\0\0\0" + title.encode()
        png = png[:33] + struct.pack(">I", len(body)) + b"iTXt" + body + \
            struct.pack(">I", zlib.crc32(b"iTXt" + body)) + png[33:]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
