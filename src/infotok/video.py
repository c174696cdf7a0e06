"""Video I/O on PyAV, resizing, cutting streams into windows and blending them back, the built-in sample.

Frames are uint8 numpy arrays shaped [T, H, W, 3] (RGB). Models see float tensors [B, 3, T, H, W]
in [-1, 1]; `to_model` / `from_model` convert. Reading streams frame by frame so a long video is
never held whole unless the caller asks for it.
"""
from __future__ import annotations

import glob
import os
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F

from .geometry import check_windowing

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".flv"}


class VideoError(ValueError):
    """A video that cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int  # container's count or an estimate from the duration; 0 if unknown


def _open_video(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    if not stream.width or not stream.height:
        container.close()
        raise VideoError(f"{path}: video stream has no size (corrupt header?)")
    stream.thread_type = "AUTO"
    return container, stream


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and frame count from the header (cheap: decodes nothing)."""
    container, stream = _open_video(path)
    with container:
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        n = stream.frames
        if not n and stream.duration and stream.time_base:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if not n and container.duration:
            n = int(round(container.duration / av.time_base * fps))
        return VideoInfo(stream.width, stream.height, fps, int(n or 0))


def iter_frames(path: str | os.PathLike, start: int = 0, max_frames: int | None = None,
                size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames [H, W, 3] one at a time from frame `start` on.

    Any pixel format (gray, RGBA, 10-bit) is converted to RGB24; `size=(width, height)` rescales
    in FFmpeg while decoding, which is much cheaper than decoding at full size. A stream that breaks
    part way is decoded up to the break, with a warning.
    """
    container, stream = _open_video(path)
    declared = stream.frames
    with container:
        if start > 0:
            fps = float(stream.average_rate or 25)
            target = int(start / fps / stream.time_base) + (stream.start_time or 0)
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                container.seek(0)
        index = None
        emitted = 0
        try:
            for frame in container.decode(stream):
                if index is None:  # after a seek, learn where we landed from the timestamp
                    if start > 0 and frame.pts is not None:
                        t0 = float((frame.pts - (stream.start_time or 0)) * stream.time_base)
                        index = int(round(t0 * float(stream.average_rate or 25)))
                    else:
                        index = 0
                if index < start:
                    index += 1
                    continue
                index += 1
                if size is not None:
                    frame = frame.reformat(width=size[0], height=size[1])
                yield frame.to_ndarray(format="rgb24")
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            if emitted == 0:
                raise VideoError(f"{path}: cannot decode any frame ({exc})") from None
            warnings.warn(f"{path}: stream broken after {emitted} frames ({exc}); using those", stacklevel=2)
    if emitted == 0 and start == 0:
        raise VideoError(f"{path}: contains no decodable frames")
    if start == 0 and max_frames is None and declared and emitted < declared:
        warnings.warn(f"{path}: stream ended after {emitted} of {declared} frames (truncated file?); "
                      "using those", stacklevel=2)


def read_video(path: str | os.PathLike, start: int = 0, max_frames: int | None = None,
               size: tuple[int, int] | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Read frames [T, H, W, 3] uint8 and the header info (holds the frames in memory)."""
    info = probe(path)
    frames = list(iter_frames(path, start=start, max_frames=max_frames, size=size))
    if not frames:
        raise VideoError(f"{path}: no frames at or after frame {start}")
    return np.stack(frames), info


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0, crf: int = 12,
                lossless: bool = False) -> Path:
    """Write RGB uint8 frames as H.264 MP4, atomically (temporary name, renamed when complete).

    Even sizes use yuv420p (plays everywhere); odd sizes use yuv444p so the size is kept exactly.
    `lossless` stores the RGB frames exactly (libx264rgb, qp 0): reading back gives the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix or ".mp4", prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    try:
        with av.open(tmp, mode="w", format="mp4") as out:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise VideoError(f"{path}: frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = out.add_stream("libx264rgb" if lossless else "libx264", rate=rate)
                    stream.width, stream.height = w, h
                    if lossless:
                        stream.pix_fmt, stream.options = "rgb24", {"qp": "0", "preset": "medium"}
                    else:
                        stream.pix_fmt = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
                        stream.options = {"crf": str(crf), "preset": "medium"}
                elif frame.shape[:2] != (stream.height, stream.width):
                    raise VideoError(f"{path}: frame size changed from {stream.width}x{stream.height}")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
                count += 1
            if stream is None:
                raise VideoError(f"{path}: no frames to write")
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def list_videos(inputs: Iterable[str | os.PathLike], suffixes: Iterable[str] = VIDEO_SUFFIXES) -> list[Path]:
    """Expand files, folders (non-recursive, files with `suffixes`) and glob patterns into a sorted list."""
    suffixes = set(suffixes)
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes and q.is_file())
        elif any(ch in str(item) for ch in "*?["):
            found += sorted(Path(q) for q in glob.glob(str(item)) if Path(q).is_file())
        else:
            found.append(p)
    return found


# ----------------------------------------------------------------------------------- geometry
def to_model(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] (one clip) or [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if x.dim() == 4:
        x = x[None]
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] or [B, T, H, W, 3], got {x.dtype} {list(x.shape)}")
    return x.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def from_model(x: torch.Tensor) -> np.ndarray:
    """float [1, 3, T, H, W] (or [3, T, H, W]) in [-1, 1] -> uint8 [T, H, W, 3]."""
    if x.dim() == 5:
        x = x[0]
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is `size` (antialiased bilinear), keeping the aspect ratio."""
    t, h, w, _ = frames.shape
    scale = size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=scale < 1, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def resized_stream(frames: Iterable[np.ndarray], short_side: int | None) -> Iterable[np.ndarray]:
    """Lazily apply `resize_short_side` to a stream of frames (unchanged when short_side is None)."""
    return frames if not short_side else (resize_short_side(f[None], short_side)[0] for f in frames)


def center_crop(frames: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    width = height if width is None else width
    _, h, w, _ = frames.shape
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return frames[:, top:top + height, left:left + width]


def resize_and_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """The evaluation protocol: short side resized to `size`, then a centre `size` x `size` crop."""
    return center_crop(resize_short_side(frames, size), size)


def blend_weights(length: int, overlap_before: int, overlap_after: int) -> np.ndarray:
    """Per-frame weights of one window: linear ramps over the overlaps, 1 elsewhere.

    Two neighbouring windows' ramps sum to 1 over their shared frames.
    """
    w = np.ones(length, dtype=np.float32)
    if overlap_before:
        w[:overlap_before] = np.arange(1, overlap_before + 1, dtype=np.float32) / (overlap_before + 1)
    if overlap_after:
        w[length - overlap_after:] = np.arange(overlap_after, 0, -1, dtype=np.float32) / (overlap_after + 1)
    return w


def iter_windows(frames: Iterable[np.ndarray], window: int, overlap: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream (start, end, frames[start:end]) with the spans of `geometry.window_spans`, holding one window."""
    check_windowing(window, overlap)
    step = window - overlap
    buf: list[np.ndarray] = []
    start, emitted_end = 0, 0
    it = iter(frames)
    nxt = next(it, None)
    while nxt is not None:
        buf.append(nxt)
        nxt = next(it, None)
        if len(buf) == window or nxt is None:
            if start + len(buf) > emitted_end:
                yield start, start + len(buf), np.stack(buf)
                emitted_end = start + len(buf)
            if nxt is None:
                return
            buf, start = buf[step:], start + step


class WindowBlender:
    """Blends decoded windows linearly over their overlaps and emits finished frames in order.

    Holds at most one window of frames. `add` gets the start of the next window (None for the last)
    so it knows which frames are final.
    """

    def __init__(self):
        self._acc: dict[int, np.ndarray] = {}
        self._next = 0
        self._prev_end = 0

    def add(self, start: int, frames: np.ndarray, next_start: int | None) -> list[np.ndarray]:
        end = start + len(frames)
        before = max(0, self._prev_end - start)
        after = max(0, end - next_start) if next_start is not None else 0
        weights = blend_weights(end - start, before, after)
        for i, f in enumerate(frames):
            self._acc[start + i] = self._acc.get(start + i, 0) + weights[i] * f.astype(np.float32)
        self._prev_end = end
        done_until = end if next_start is None else next_start
        out = []
        while self._next < done_until:
            out.append(np.clip(np.rint(self._acc.pop(self._next)), 0, 255).astype(np.uint8))
            self._next += 1
        return out


# ------------------------------------------------------------------------------- built-in sample
def synthetic_video(num_frames: int = 33, height: int = 128, width: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic procedural clip [T, H, W, 3] uint8 mixing static and moving content.

    A flat border (pillarbox) and a still textured background occupy most of the frame; a few
    textured objects move across it. The static parts need few tokens, the objects many: the case
    an adaptive tokenizer exists for. Needs no file.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    border = max(1, width // 8)
    base = np.empty((height, width, 3), np.float32)
    freq = rng.uniform(0.02, 0.08, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    for c in range(3):  # smooth still background with a gentle gradient and low-frequency pattern
        base[..., c] = 110 + 60 * np.sin(freq[0] * xx + phase[c]) * np.cos(freq[1] * yy + phase[(c + 1) % 3])
    base[:, :border] = base[:, width - border:] = rng.uniform(200, 255)  # flat pillarbox
    objects = []
    for _ in range(int(rng.integers(2, 4))):
        objects.append(dict(
            r=rng.uniform(0.1, 0.2) * min(height, width),
            pos=rng.uniform([0.3 * height, 0.3 * width], [0.7 * height, 0.7 * width]),
            vel=rng.uniform(-2.0, 2.0, size=2) * min(height, width) / 128,
            color=rng.uniform(30, 255, size=3),
            stripes=rng.uniform(0.2, 0.6),
            square=bool(rng.integers(0, 2)),
        ))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = base.copy()
        for o in objects:
            cy, cx = o["pos"] + o["vel"] * t
            cy = border + (cy - border) % max(1, height - 2 * border)
            cx = border + (cx - border) % max(1, width - 2 * border)
            dy, dx = yy - cy, xx - cx
            inside = (np.maximum(abs(dy), abs(dx)) < o["r"]) if o["square"] else (dy * dy + dx * dx < o["r"] ** 2)
            texture = 0.6 + 0.4 * np.sign(np.sin(o["stripes"] * (dx + dy) + 0.3 * t))
            img[inside] = o["color"][None, :] * texture[inside][:, None]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames
