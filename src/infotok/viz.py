"""Where the tokens went: original | reconstruction | kept tokens, labelled.

Each panel is one video frame under a header that names the columns; under it a bar shows the fraction
of tokens kept in the latent frame that frame belongs to, with the frame number and a legend. The
reconstruction is shown as decoded (a tint would make it look worse than it is); the mask has its own
column. `strip` lays a few such frames out as one PNG for READMEs.
"""

from __future__ import annotations

import functools
import itertools
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .geometry import Geometry
from .ledger import Ledger
from .pipeline import TokenStream, iter_detokenize, video_source
from .spec import TokenizeSpec, Windowing
from .tokens import Tokens, TokenWindow, header_geometry
from .video import probe, write_video

BAR_HEIGHT = 10  # the bar's height for frames up to ~250 rows; it grows with the text above that
FONT_MIN = 12  # px: below this the default font stops being legible, however small the frame
KEPT = (255, 170, 40)  # the bar, the legend's swatch and the kept cells of the mask share one colour
BACKGROUND, TRACK, TEXT, DIM_TEXT = (24, 24, 24), (64, 64, 64), (240, 240, 240), (190, 190, 190)
# column labels, longest first: the first that fits the column's width is drawn
COLUMNS = (("original", "orig."), ("reconstruction", "recon."), ("kept tokens", "kept"))


@dataclass(frozen=True)
class Layout:
    """Rows of a panel around a frame `height` rows tall: column labels above it, the usage bar and its
    legend under it. Text scales with the frame so it reads the same from thumbnails to 720p."""

    font: int
    header: int
    bar: int
    legend: int


def layout(height: int) -> Layout:
    """The panel's rows for frames `height` tall; the total stays even, as H.264 needs (an odd frame
    width still makes an odd panel width, which `write_video` pads)."""
    font = max(FONT_MIN, round(height / 20))
    header = font + 2 * max(3, font // 3)
    bar = max(BAR_HEIGHT, font * 3 // 4)
    return Layout(font, header, bar, header + (height + bar) % 2)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font (>= 10.1): no font file to ship or find."""
    return ImageFont.load_default(size=size)


def _fit(font, options: Iterable[str], width: float) -> str:
    """The first (longest) wording that fits `width` pixels, else the last (shortest, clipped)."""
    options = list(options)
    return next((t for t in options if font.getlength(t) <= width), options[-1])


@functools.lru_cache(maxsize=4)
def column_header(height: int, width: int, labels: tuple[tuple[str, ...], ...] = COLUMNS) -> np.ndarray:
    """The column labels (each a tuple of wordings, longest first) over frames `height` x `width`, each
    centred on (and clipped to) its column; the same for every frame of a video, so drawn once."""
    lay = layout(height)
    font = _font(lay.font)
    columns = []
    for options in labels:
        image = Image.new("RGB", (width, lay.header), BACKGROUND)
        text = _fit(font, options, width - 4)
        ImageDraw.Draw(image).text((width / 2, lay.header / 2), text, fill=TEXT, font=font, anchor="mm")
        columns.append(np.asarray(image))
    return np.concatenate(columns, axis=1)


def usage_bar(kept: float, width: int, lay: Layout, frame: int | None = None) -> np.ndarray:
    """The bar (filled over `kept` of its width) and its legend line: the frame number, then a swatch
    of the bar's colour naming what it counts."""
    bar = np.full((lay.bar, width, 3), BACKGROUND, np.uint8)
    inner = slice(lay.bar // 5, lay.bar - lay.bar // 5)
    bar[inner] = TRACK
    bar[inner, : int(round(kept * width))] = KEPT
    image = Image.new("RGB", (width, lay.legend), BACKGROUND)
    draw, font = ImageDraw.Draw(image), _font(lay.font)
    pad, swatch, middle = max(3, lay.font // 3), lay.font * 2 // 3, lay.legend / 2
    label = "" if frame is None else _fit(font, (f"frame {frame}", f"#{frame}"), width - 2 * pad)
    x = pad
    if label:
        draw.text((x, middle), label, fill=TEXT, font=font, anchor="lm")
        x += font.getlength(label) + 2 * pad
    share = f"{kept:.0%}"
    legend = _fit(
        font,
        (f"tokens kept in this latent frame: {share}", f"tokens kept: {share}", f"kept {share}", share),
        width - x - swatch - 2 * pad,
    )
    if font.getlength(legend) <= width - x - swatch - 2 * pad:  # else too narrow: the frame number alone
        top = round(middle - swatch / 2)
        draw.rectangle((x, top, x + swatch - 1, top + swatch - 1), fill=KEPT)
        draw.text((x + swatch + pad, middle), legend, fill=DIM_TEXT, font=font, anchor="lm")
    return np.concatenate([bar, np.asarray(image)], axis=0)


def mask_view(frame: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept cells in the bar's colour over a faded grey copy of the frame: which tokens were kept,
    with the scene still recognisable under them."""
    gray = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    view = np.repeat((32 + 0.3 * gray)[..., None], 3, axis=2)
    view[keep] = 0.35 * gray[keep, None] + 0.65 * np.array(KEPT, np.float32)
    return view.clip(0, 255).astype(np.uint8)


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


def compose(
    original: np.ndarray, recon: np.ndarray, mask: np.ndarray, spatial: int, frame: int | None = None
) -> np.ndarray:
    """One labelled visualization frame [layout(H).header + H + bar + legend, 3W, 3] uint8; `recon`
    appears pixel for pixel as decoded, `frame` (its number) labels the legend."""
    h, w = original.shape[:2]
    lay = layout(h)
    keep = np.kron(mask.astype(np.uint8), np.ones((spatial, spatial), np.uint8))[:h, :w].astype(bool)
    row = np.concatenate([original, recon, mask_view(original, keep)], axis=1)
    return np.concatenate([column_header(h, w), row, usage_bar(float(mask.mean()), row.shape[1], lay, frame)], axis=0)


def render(originals: Iterable[np.ndarray], recons: Iterable[np.ndarray], tokens: Tokens) -> Iterator[np.ndarray]:
    masks = per_frame_masks(tokens)
    for i, (o, r) in enumerate(zip(originals, recons)):
        yield compose(o, r, masks[i], tokens.header.spatial_factor, frame=i)


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


def visualize_file(
    model, src, dst, png, on_window=None, spec: TokenizeSpec = TokenizeSpec(), windowing: Windowing = Windowing()
) -> Ledger:
    """`infotok viz`: tokenize `src` and write original | reconstruction | kept tokens as a video and a
    PNG strip, streaming: memory holds about two windows of frames, whatever the video's length."""
    stream = TokenStream(model, src, spec, windowing)
    masks: dict[int, np.ndarray] = {}
    kept = total = header = 0
    start = windowing.start

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
        nonlocal header
        originals, _, _ = video_source(src, windowing)
        windows = recorded()
        first = next(windows)  # the header exists once the first window is out
        chained = itertools.chain([first], windows)
        for i, (o, r) in enumerate(zip(originals, iter_detokenize(model, stream.header, chained))):
            header = layout(o.shape[0]).header
            panel = compose(o, r, masks.pop(i), model.geometry.spatial_factor, frame=start + i)
            sampler.add(panel)
            yield panel

    sampler = StripSampler()
    write_video(dst, panels(), fps=probe(src).fps)
    ledger = Ledger(kept, total)
    strip(
        sampler.frames(),
        png,
        header=header,
        title=f"{Path(src).name}: original | reconstruction | kept tokens "
        f"(rate {ledger.realized_rate:.2f}, {stream.spec.strategy})",
    )
    return ledger


def strip(
    frames: list[np.ndarray], path: str | Path, count: int = 4, title: str | None = None, header: int = 0
) -> Path:
    """Save `count` evenly spaced visualization frames stacked vertically as a PNG, pixel for pixel;
    the column labels (each frame's top `header` rows) are kept over the first frame only.

    Encoded by PyAV (FFmpeg's PNG encoder), so `demo` and `viz` need no plotting library; `title`
    goes into the PNG's standard Title text field."""
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)))
    image = np.ascontiguousarray(np.concatenate([frames[i][header if n else 0 :] for n, i in enumerate(picks)], axis=0))
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    codec.sample_aspect_ratio = Fraction(1, 1)  # square pixels (unset, FFmpeg writes a 0:1 pHYs chunk)
    png = b"".join(bytes(p) for p in codec.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    png += b"".join(bytes(p) for p in codec.encode(None))
    if title:  # an iTXt chunk (UTF-8) right after the 8-byte signature and the 25-byte IHDR chunk
        body = b"Title\0\0\0\0\0" + title.encode()
        png = (
            png[:33]
            + struct.pack(">I", len(body))
            + b"iTXt"
            + body
            + struct.pack(">I", zlib.crc32(b"iTXt" + body))
            + png[33:]
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def side_by_side(columns: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """Videos [T, H, W, 3] of one size next to each other under their labels, frame by frame (the 1D
    layout's demo: the source, then the same clip from ever longer token prefixes)."""
    h, w = columns[0][1].shape[1:3]
    header = column_header(h, w, tuple((label,) for label, _ in columns))
    return [np.concatenate([header, np.concatenate(row, axis=1)], axis=0) for row in zip(*(v for _, v in columns))]


def prefix_panels(
    model, frames: np.ndarray, fps: float, mp4: Path, png: Path, prefixes: tuple[int, ...]
) -> tuple[object, dict[int, float]]:
    """The 1D layout's picture: `frames` (uint8 [T, H, W, 3], as the layout takes them) encoded once by `model`
    (an `InfoTok1D`), decoded from each window's first k tokens for each k of `prefixes`, side by side with
    the source (`mp4` and a PNG strip). Returns the tokens and the PSNR at each prefix."""
    from .metrics import psnr

    tokens = model.tokenize(frames, fps=fps)
    columns, psnrs = [("original", frames)], {}
    for k in prefixes:
        decoded = model.detokenize(tokens.truncate(k))
        columns.append((f"{k} tokens", decoded))
        psnrs[k] = psnr(frames, decoded)
    panels = side_by_side(columns)
    write_video(mp4, panels, fps=fps)
    strip(panels, png, header=layout(frames.shape[1]).header, title="1D layout: the same tokens cut")
    return tokens, psnrs
