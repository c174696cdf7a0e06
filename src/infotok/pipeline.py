"""Long videos through the batched core, one window at a time, in memory bounded by one window.

file -> frames (`video`) -> overlapping windows -> `model.encode` -> TokenWindow records, and back:
records -> `model.decode` -> windows blended linearly over their overlaps -> frames. Under the hold fill
each window continues the one before (`fill.Carry`) except every `refresh`-th, which starts afresh.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .batch import window_batches
from .geometry import check_windowing, window_count
from .ledger import Ledger
from .metrics import PSNRMeter
from .router import hold_counts, hold_grid, shared_rates
from .spec import TokenizeSpec, Windowing
from .tokens import TokenHeader, TokenReader, Tokens, TokenWindow, TokenWriter
from .video import VideoInfo, WindowBlender, from_model, iter_frames, iter_windows, probe, resized_stream, write_video

DEFAULT_FPS = 24.0  # frame rate assumed for arrays given without one


def video_source(video, windowing: Windowing = Windowing()) -> tuple[Iterator[np.ndarray], VideoInfo, int | None]:
    """A path or uint8 frames [T, H, W, 3] -> (frames from `start`, at most `max_frames`, resized;
    the source's size and fps; the short side they were resized to, or None).

    `size` resizes the short side to exactly that; without it, `max_size` only shrinks sources whose
    short side is larger (nothing is ever upscaled unless asked for)."""
    size, fps, start, max_frames, max_size = windowing.source
    if isinstance(video, (str, os.PathLike)):
        info = probe(video)
        frames = iter_frames(video, start, max_frames)
    else:
        arr = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"a video array must be uint8 [T, H, W, 3], got {arr.dtype} {list(arr.shape)}")
        stop = None if max_frames is None else start + max_frames
        info = VideoInfo(arr.shape[2], arr.shape[1], DEFAULT_FPS, len(arr))
        frames = iter(arr[start:stop])
    if fps is not None:
        info = replace(info, fps=float(fps))
    if not (info.fps > 0 and np.isfinite(info.fps)):
        raise ValueError(f"fps must be a positive number, got {info.fps}")
    short = min(info.width, info.height)
    resize = size or (max_size if max_size and short > max_size else None)
    return resized_stream(frames, resize), info, resize


def expected_windows(
    path: str | os.PathLike, window: int, overlap: int, start: int = 0, max_frames: int | None = None
) -> int | None:
    """How many windows a video file will give, from its header's frame count (None if unknown):
    a progress total, never a promise."""
    try:
        n = probe(path).num_frames
    except (ValueError, OSError):
        return None
    n = max(0, n - start)
    n = min(n, max_frames) if max_frames else n
    return window_count(n, window, overlap) if n else None


def new_header(model, width: int, height: int, fps: float, window: int, overlap: int, **fields) -> TokenHeader:
    """A header of `model`'s tokens of `width` x `height` frames; `fields` are the rest of `TokenHeader`'s
    (strategy, selection and avg_rate at least; num_frames 0, not known yet, and the source's size the frames'
    unless given)."""
    return TokenHeader(
        model=model.name,
        model_hash=model.model_hash,
        config_hash=model.config_hash,
        levels=list(model.base.levels),
        temporal_factor=model.geometry.temporal_factor,
        spatial_factor=model.geometry.spatial_factor,
        width=width,
        height=height,
        fps=fps,
        window=window,
        overlap=overlap,
        score_mean=float(model.score_mean),
        **{"source_width": width, "source_height": height, "num_frames": 0} | fields,
    )


class TokenStream:
    """Iterating yields one `TokenWindow` per window of the video, tokenized as it is read.

    `header` describes the stream: before the end its `num_frames` is 0 (not known yet); after the
    last window it is a new, final header object (headers handed out are never changed later).
    `nfe` counts the network passes spent so far.
    """

    def __init__(self, model, video, spec: TokenizeSpec = TokenizeSpec(), windowing: Windowing = Windowing()):
        self.model, self.video = model, video
        self.spec, self.windowing = spec.resolved(model), windowing
        check_windowing(windowing.window, windowing.overlap, model.geometry)
        self.header: TokenHeader | None = None
        self.nfe = 0
        self.predicted: list[float] = []  # each window's predicted PSNR, where the value predictor ran
        self.done = False

    def __iter__(self) -> Iterator[TokenWindow]:
        model, spec, windowing = self.model, self.spec, self.windowing
        frames, source, resize = video_source(self.video, windowing)
        rng = np.random.default_rng(spec.seed)
        end, carry = 0, None
        windows = iter_windows(frames, windowing.window, windowing.overlap, mark_last=True)
        for i, (start, end, chunk, last) in enumerate(windows):
            if self.header is None:
                self.header = new_header(
                    model, chunk.shape[2], chunk.shape[1], source.fps, windowing.window, windowing.overlap,
                    source_width=source.width, source_height=source.height, resize=resize, fill=spec.fill,
                    strategy="target" if spec.target_psnr is not None else spec.strategy,
                    selection=spec.selection, avg_rate=spec.rate, target_psnr=spec.target_psnr,
                    refresh=spec.refresh,
                )  # fmt: skip
            batch = model.encode(
                torch.from_numpy(chunk)[None],
                spec.rate,
                spec.strategy,
                spec.selection,
                rng,
                rates=[spec.rates[i]] if spec.rates is not None else None,
                target_psnr=spec.target_psnr,
                fill=spec.fill,
                carry=carry,
                chained=not last and self.header.continues(i + 1),  # a window continues this one
                key_density=spec.key_density,
            )
            carry = batch.carry_after() if self.header.continues(i + 1) else None  # what the next window needs
            if batch.predicted is not None:
                self.predicted.append(float(batch.predicted[0]))
            self.nfe += batch.nfe
            yield batch.window(0, start, end)
        if self.header is None:
            raise ValueError("the video has no frames")
        self.header = replace(self.header, num_frames=end)
        self.done = True

    def collect(self) -> Tokens:
        windows = list(self)
        return Tokens(self.header, windows)


def iter_detokenize(
    model, header: TokenHeader, windows: Iterable[TokenWindow], start: int = 0, stop: int | None = None
) -> Iterator[np.ndarray]:
    """Decode windows (any iterable, e.g. a TokenReader) into blended uint8 frames, streaming; with `start` /
    `stop`, frames [start, stop) only, decoding just the windows that hold them (a frame in the middle of
    a long video costs one or two windows' decodes; continuing windows read the records back to the
    last fresh window, without decoding them)."""
    model.check_tokens(header)
    wanted = partial(in_segment, start=start, stop=stop)
    it = window_batches(header, _until(windows, stop), model.device, wanted)
    current = next(it, None)
    first = current[0].start if current else 0
    blender, frame = WindowBlender(first), first
    while current is not None:
        following = next(it, None)
        window, batch = current
        x = model.decode(batch)
        for blended in blender.add(window.start, from_model(x), following[0].start if following else None):
            if stop is not None and frame >= stop:
                return
            if frame >= start:
                yield blended
            frame += 1
        current = following


def in_segment(window: TokenWindow, start: int = 0, stop: int | None = None) -> bool:
    """Whether `window` holds a frame of [start, stop)."""
    return window.end > start and (stop is None or window.start < stop)


def _until(windows: Iterable[TokenWindow], stop: int | None) -> Iterator[TokenWindow]:
    """The windows up to the last that starts before `stop` (the rest of a stream is not read)."""
    for w in windows:
        if stop is not None and w.start >= stop:
            return
        yield w


def segment_stop(num_frames: int, start: int, max_frames: int | None) -> int | None:
    """The end of the segment `infotok decode --start --max-frames` asks for (None: to the last frame),
    refusing a start outside the video."""
    if not 0 <= start < num_frames:
        raise ValueError(f"--start {start} is outside the video's {num_frames} frames")
    return None if max_frames is None else start + max_frames


def segment_windows(windows: Iterable[TokenWindow], start: int = 0, stop: int | None = None) -> Iterator[TokenWindow]:
    """The windows that hold a frame of [start, stop) (every frame they share with a neighbour is blended
    from windows that are both in)."""
    return (w for w in windows if in_segment(w, start, stop))


@dataclass
class EncodeResult:
    """What one video's tokenization produced: the final header, its ledger, each window's rate and
    frame span, and (where the value predictor ran) each window's predicted PSNR; `reconstruct_file`
    adds each window's measured PSNR."""

    header: TokenHeader
    ledger: Ledger
    window_rates: list[float]
    nfe: int
    window_spans: list[tuple[int, int]]
    predicted_psnr: list[float]
    window_psnr: list[float] | None = None


def window_statistics(
    model, x: np.ndarray, fill: str, grid: list[float] | None, key_density: float = 1.0
) -> np.ndarray:
    """What the first pass of `--budget run` keeps of windows (uint8 [B, T, H, W, 3]), never their
    codes (a dataset can have 1e5 windows): [B, points], under `hold` each window's kept tokens at
    the drift thresholds `grid` (`router.hold_counts`), under `mask` its predicted PSNR curve
    (`model.predict`). Encoder only; `encode-dataset` stores them as float32. `key_density`: the sparse key
    frames' (`fill.key_lattice`)."""
    x = torch.from_numpy(x)
    if fill == "hold":
        return hold_counts(model.latent_codes(x), grid, key_density)
    return model.predict(x).float().cpu().numpy()


def run_budget_rates(model, videos: list, spec: TokenizeSpec, windowing: Windowing = Windowing()) -> list[list[float]]:
    """Each window's rate for a set of videos that share one exact budget (`--budget run`): a first
    pass over every window, encoder only (no decoder), then the budget is spent over them: under
    the `mask` fill on the predicted curves, under `hold` on each window's kept count at a grid of
    drift thresholds (`window_statistics`, `router.shared_rates`), round(rate * tokens) tokens in
    all, as `encode-dataset --budget run` spends them. Returns the rates per video,
    for `TokenizeSpec(rates=...)`."""
    _, selection, fill = model.choices(selection=spec.selection, fill=spec.fill)
    key_density = model.resolve_key_density(spec.key_density, fill, selection)
    if fill == "mask":
        model.check_predictor("a shared budget")
    grid = hold_grid(model.code_range()).tolist() if fill == "hold" else None
    measured, sizes, counts = [], [], []
    for video in videos:
        frames, _, _ = video_source(video, windowing)
        before = len(measured)
        for _, _, chunk in iter_windows(frames, windowing.window, windowing.overlap):
            measured.append(window_statistics(model, chunk[None], fill, grid, key_density)[0])
            sizes.append(math.prod(model.geometry.latent_shape(*chunk.shape[:3])))
        counts.append(len(measured) - before)
    if not measured:
        raise ValueError("the videos have no frames")
    rates, _ = shared_rates(np.stack(measured), sizes, spec.rate, grid)
    bounds = np.cumsum([0] + counts)
    return [rates[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def encode_file(
    model,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = False,
    on_window: Callable[[TokenWindow], None] | None = None,
    spec: TokenizeSpec = TokenizeSpec(),
    windowing: Windowing = Windowing(),
    prior=None,
) -> EncodeResult:
    """Stream one video into a `.itok` file (range-coded with `prior`, if given); nothing is left at `dst` unless
    the whole video was tokenized."""
    stream = TokenStream(model, src, spec, windowing)
    writer, kept, total, rates, spans = None, 0, 0, [], []
    try:
        for w in stream:
            if writer is None:
                writer = TokenWriter(dst, stream.header, overwrite=overwrite, prior=prior)
            writer.write(w)
            kept, total = kept + w.kept, total + w.num_tokens
            rates.append(w.rate)
            spans.append((w.start, w.end))
            if on_window:
                on_window(w)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    writer.close()
    h = writer.header
    ledger = Ledger(kept, total, h.num_frames * h.width * h.height, os.path.getsize(dst), seconds=h.num_frames / h.fps)
    return EncodeResult(h, ledger, rates, stream.nfe, spans, stream.predicted)


def decode_file(
    model,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    lossless: bool = False,
    on_window: Callable[[TokenWindow], None] | None = None,
    reference: Iterable[np.ndarray] | None = None,
    start: int = 0,
    max_frames: int | None = None,
    prior=None,
) -> tuple[TokenHeader, float | None]:
    """Decode a `.itok` file into a video file, streaming; with `reference` frames (the source at the
    tokenized size), also returns the meter of the TokenBench PSNR against them. `start` / `max_frames`
    decode a segment, from the windows that hold it alone. A prior-coded file decodes with `prior`, or the installed
    prior it names."""
    meter = PSNRMeter() if reference is not None else None
    with TokenReader(src, prior) as reader:
        stop = segment_stop(reader.header.num_frames, start, max_frames)
        windows = _observed(reader, on_window)
        frames = iter_detokenize(model, reader.header, windows, start, stop)
        if meter is not None:
            frames = _measured(frames, reference, meter)
        write_video(dst, frames, fps=reader.header.fps, lossless=lossless)
        return reader.header, meter


def reconstruct_file(
    model,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    lossless: bool = False,
    overwrite: bool = False,
    on_window: Callable[[TokenWindow], None] | None = None,
    spec: TokenizeSpec = TokenizeSpec(),
    windowing: Windowing = Windowing(),
) -> tuple[EncodeResult, float]:
    """Video -> tokens (through a temporary `.itok`, exactly what a user would store) -> video, with
    the PSNR of the reconstruction against the source (and each window's, in the result)."""
    if Path(dst).exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory() as d:
        tokens = Path(d, "tokens.itok")
        result = encode_file(model, src, tokens, on_window=on_window, spec=spec, windowing=windowing)
        reference, _, _ = video_source(src, replace(windowing, fps=None))
        _, meter = decode_file(model, tokens, dst, lossless, on_window, reference)
    result.window_psnr = [meter.span(a, b) for a, b in result.window_spans]
    return result, meter.value


def _observed(windows: Iterable[TokenWindow], on_window) -> Iterator[TokenWindow]:
    for w in windows:
        yield w
        if on_window:
            on_window(w)


def _measured(frames: Iterable[np.ndarray], reference: Iterable[np.ndarray], meter: PSNRMeter) -> Iterator[np.ndarray]:
    for r, o in zip(frames, reference):
        meter.add(o, r)
        yield r
