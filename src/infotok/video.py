"""Video I/O on PyAV, resizing, cutting streams into windows and blending them back, the built-in sample.

Frames are uint8 numpy arrays shaped [T, H, W, 3] (RGB). Models see float tensors [B, 3, T, H, W]
in [-1, 1]; `to_model` / `from_model` convert. Reading streams frame by frame so a long video is
never held whole unless the caller asks for it, and always at a constant rate (a variable-rate file is
resampled, see `iter_frames`). Writing picks the container from the extension (`write_video`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import re
import sys
import warnings
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F

from .files import VIDEO_SUFFIXES, list_videos, output_path_problem, temp_beside  # noqa: F401 (re-exported)
from .geometry import check_windowing

# What `write_video` writes: extension -> FFmpeg muxer (the codec follows from it: `_encoder`)
OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
# Container tag "WxH": the true size of frames `write_video` padded to even; `probe`/`iter_frames` crop back
SIZE_TAG = "infotok_size"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class VideoError(ValueError):
    """A video that cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # the constant rate `iter_frames` hands frames on at
    num_frames: int  # an estimate: header duration x fps (or the header's count); 0 if unknown


def _warn(message: str) -> None:
    """Warn at the first caller outside infotok: from a generator, a fixed stacklevel points at
    whichever of our own lines pulled the next frame."""
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, stacklevel=level)


def _cause(exc: Exception) -> str:
    """FFmpeg's reason alone: PyAV's str() adds the errno and repeats the file name (or names the
    libavcodec call), which the message says already or the user cannot act on."""
    return getattr(exc, "strerror", None) or str(exc)


def _mp4_index_missing(path: str | os.PathLike) -> bool:
    """Whether `path` is an MP4/MOV whose index (the moov box) is absent or cut off.

    Most MP4s are written with the index last, after all the frames (a faststart copy moves it to the
    front), so a file cut anywhere before its end has frames but nothing saying where they lie: FFmpeg
    reads no frame of it. Walks the top-level boxes; a file not starting with `ftyp` is not judged.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - pos
            if pos == 0 and kind != b"ftyp" or length < 8:
                return False
            if kind == b"moov":
                return pos + length > size
            pos += length
    return pos > 0  # no moov (in a file long enough to have a first box)


def _unreadable(path: str | os.PathLike, problem: str) -> VideoError:
    """The error for a video that gives no frame: `problem`, unless the file is an MP4 cut before the
    end of its index, where what FFmpeg made of the rest is beside the point."""
    if _mp4_index_missing(path):
        problem = (
            "truncated MP4/MOV: its index (moov box) is missing or cut off, so no frame can be decoded "
            "(most MP4s keep the index at the end; a faststart copy, with the index at the front, keeps "
            "the frames written before a break)"
        )
    return VideoError(f"{path}: {problem}")


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
        problem = f"not a readable video ({_cause(exc)})"
    else:
        stream = container.streams.video[0] if container.streams.video else None
        if stream is None:
            problem = "has no video stream"
        elif stream.codec_context is None:
            problem = "has a video stream FFmpeg cannot identify (unknown codec or corrupt header)"
        elif not stream.width or not stream.height:
            problem = "video stream has no size (corrupt header?)"
        else:
            stream.thread_type = "AUTO"
            return container, stream
        container.close()
    raise _unreadable(path, problem)


def _nominal_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The constant rate frames are handed on at: FFmpeg's guess (what its cfr mode uses), which is the
    exact rate of a constant-rate stream, where an average over a rounded duration would drift by a
    frame now and then; else the average rate, else 25."""
    for rate in (stream.guessed_rate, stream.average_rate):
        if rate and 0 < rate <= 1000:
            return Fraction(rate)
    return Fraction(25)


def _header_end(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Fraction | None:
    """Where the header says the video stream ends, in seconds on the stream's clock; None if unsaid.

    The container's duration stands in (Matroska has no per-stream one) only when the video is the
    file's one stream: another one, such as longer audio, would stretch it.
    """
    if stream.duration and stream.time_base:
        return ((stream.start_time or 0) + stream.duration) * stream.time_base
    if container.duration and len(container.streams) == 1:
        return Fraction(container.duration + (container.start_time or 0), av.time_base)
    return None


def _true_size(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> tuple[int, int]:
    """(width, height) with what `write_video` padded to even cropped off again (its SIZE_TAG), if the
    tag is at most one pixel smaller each way: a stray tag can neither grow a frame nor cut more."""
    tag = next((str(v) for k, v in container.metadata.items() if k.lower() == SIZE_TAG), "")
    m = re.fullmatch(r"(\d+)x(\d+)", tag.strip())
    if m and 0 <= stream.width - int(m[1]) <= 1 and 0 <= stream.height - int(m[2]) <= 1:
        return int(m[1]), int(m[2])
    return stream.width, stream.height


def _slot(t: Fraction, fps: Fraction) -> int:
    """The output frame nearest time `t` (seconds from frame 0); halves round up."""
    return math.floor(t * fps + Fraction(1, 2))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and an estimated frame count from the header (cheap: decodes nothing).

    `num_frames` is the header's duration times `fps`, the count `iter_frames` yields give or take a
    frame (more if the file is truncated), or the header's own count when it gives no duration: fit for
    progress totals. `read_video` gives the exact count.
    """
    container, stream = _open_video(path)
    with container:
        fps = _nominal_rate(stream)
        end = _header_end(container, stream)
        if end is None and container.duration:  # for an estimate a duration that covers other streams will do
            end = Fraction(container.duration + (container.start_time or 0), av.time_base)
        begin = (stream.start_time or 0) * stream.time_base if stream.time_base else 0
        n = round((end - begin) * fps) if end is not None else stream.frames
        width, height = _true_size(container, stream)
        return VideoInfo(width, height, float(fps), max(0, int(n or 0)))


REORDER = 4  # how many frames ahead `_in_time_order` sorts timestamps over


def _in_time_order(frames: Iterator[av.VideoFrame]) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """Each decoded frame with its timestamp, the timestamps sorted: the k-th frame gets the k-th earliest.

    A decoder hands frames on in presentation order, but may tag them with timestamps out of order:
    MPEG-4 Part 2 with packed B-frames (`_packed_b_frames`) gives frames in order stamped 1, 2, 3, 5,
    4, 6, ..., which taken as they are make a constant-rate file look variable-rate and lose frames.
    Sorting looks REORDER frames ahead; timestamps that already rise, or repeat (duplicated frames),
    are unchanged. A decoding error is raised after the frames before it.
    """
    ahead: deque[av.VideoFrame] = deque()
    times: list[int] = []  # a heap of the timestamps of the frames in `ahead`

    def oldest() -> tuple[av.VideoFrame, int | None]:
        frame = ahead.popleft()
        return frame, (heapq.heappop(times) if frame.pts is not None else None)

    while True:
        try:
            frame = next(frames, None)
        except av.error.FFmpegError:
            while ahead:
                yield oldest()
            raise
        if frame is None:
            break
        ahead.append(frame)
        if frame.pts is not None:
            heapq.heappush(times, frame.pts)
        if len(ahead) > REORDER:
            yield oldest()
    while ahead:
        yield oldest()


def _packed_b_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> bool:
    """Whether an MPEG-4 Part 2 stream stores its B-frames packed, as Xvid and DivX AVIs do (UCF-101,
    HMDB): each B-frame rides in the chunk of the frame before it. The header's user data says so
    ("DivX503b1393p": the p). After a seek FFmpeg's decoder loses a B-frame of every group for the rest
    of such a stream, so it is read from the top. Leaves the container at its start."""
    if stream.codec_context.name != "mpeg4":
        return False
    container.seek(0)
    first = next((p for p in container.demux(stream) if p.size), None)
    head = bytes(stream.codec_context.extradata or b"") + (bytes(first) if first is not None else b"")
    container.seek(0)
    return re.search(rb"DivX\d+(?:Build|b)\d+p", head) is not None


def _decode_from(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: int, fps: Fraction
) -> tuple[Iterator[tuple[av.VideoFrame, int | None]], int | None]:
    """(frame, timestamp) pairs (`_in_time_order`) from the keyframe at or before output frame `start`,
    and frame 0's timestamp.

    Frame 0 is the first decoded frame, not the header's start time (FFmpeg times H.264 in AVI a frame
    late), so a seek first decodes that one frame to learn it. A seek that lands past `start` (a file
    without an index) falls back to decoding from the top, as does a stream with packed B-frames.
    """
    frames = _in_time_order(container.decode(stream))
    first = next(frames, None)
    if first is None:
        return iter(()), None
    origin, tb = first[1], stream.time_base
    if start == 0 or origin is None:
        return itertools.chain([first], frames), origin
    try:
        if not _packed_b_frames(container, stream):
            container.seek(origin + int(start / fps / tb), stream=stream, backward=True, any_frame=False)
            frames = _in_time_order(container.decode(stream))
            landed = next(frames, None)
            if landed is not None and landed[1] is not None and _slot((landed[1] - origin) * tb, fps) <= start:
                return itertools.chain([landed], frames), origin
    except av.error.FFmpegError:
        pass
    container.seek(0)
    return _in_time_order(container.decode(stream)), origin


def iter_frames(
    path: str | os.PathLike, start: int = 0, max_frames: int | None = None, size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames [H, W, 3] at the constant rate `probe` reports, from frame `start` on.

    Frame k is the picture on show at time k / fps, counted from the decoded stream's timestamps (put
    in order: `_in_time_order`), never from the header's frame count. A variable-frame-rate stream is
    resampled as FFmpeg's cfr mode does it: each decoded frame takes the output slot nearest its
    timestamp, the latest of several in one slot wins (the others are dropped) and a frame fills the
    slots up to the next one (duplicated); one warning says how many, and frame count / fps stays the
    true duration. A stream that ends before the end its header declares by more than its longest
    pause between frames (and two frame periods) is reported as truncated and read up to the cut; a
    shorter shortfall is a still ending (dropped frames at the end of an AVI), and the last frame is
    held to the declared end.

    Any pixel format (gray, RGBA, 10-bit) is converted to RGB24; `size=(width, height)` rescales in
    FFmpeg while decoding, which is much cheaper than decoding at full size. A stream that breaks part
    way is decoded up to the break, with a warning (an MP4 cut before the end of its index gives no
    frame at all: `_mp4_index_missing`). A `start` past the last frame is a VideoError giving the count.
    """
    container, stream = _open_video(path)
    with container:
        fps, tb = _nominal_rate(stream), stream.time_base
        width, height = _true_size(container, stream)
        crop = (width, height) != (stream.width, stream.height)
        header_end = _header_end(container, stream)
        try:
            frames, origin = _decode_from(container, stream, start, fps)
        except av.error.FFmpegError as exc:
            raise _unreadable(path, f"cannot decode any frame ({_cause(exc)})") from None

        def rgb(frame: av.VideoFrame) -> np.ndarray:
            if crop:  # cut the padding off before any resize
                array = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:height, :width])
                if size is None:
                    return array
                frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1])
            return frame.to_ndarray(format="rgb24")

        held = None  # the latest decoded frame, its slot, time and duration
        pos = 0  # the next output slot to fill
        decoded = emitted = duplicated = dropped = 0
        longest = Fraction(0)  # the longest time between two decoded frames

        def show(until: int) -> Iterator[np.ndarray]:
            """The held frame in output slots [pos, until), those from `start` on, up to max_frames."""
            nonlocal pos, emitted, duplicated, dropped
            if until <= pos and held[1] >= start:
                dropped += 1
            array = None
            for _ in range(max(pos, start), until):
                if max_frames is not None and emitted >= max_frames:
                    break
                if array is None:
                    array = rgb(held[0])
                    yield array
                else:
                    duplicated += 1
                    yield array.copy()
                emitted += 1
            pos = max(pos, until)

        while max_frames is None or emitted < max_frames:
            try:
                frame, pts = next(frames, (None, None))
            except av.error.FFmpegError as exc:
                if held is None:
                    raise _unreadable(path, f"cannot decode any frame ({_cause(exc)})") from None
                _warn(f"{path}: stream broken after {decoded} frames ({_cause(exc)}); using those")
                header_end = None  # it ends at the break, wherever the header says
                frame = None
            if frame is None:  # the end: the last frame lasts its duration, or to the declared end
                if held is not None:
                    end = held[2] + held[3]
                    if header_end is not None and origin is not None:
                        declared = header_end - origin * tb
                        if declared - end > max(longest, 2 / fps):
                            _warn(
                                f"{path}: stream ended at {float(end):.2f} s of the {float(declared):.2f} s "
                                "its header declares (truncated file?); using those"
                            )
                        elif declared > end:
                            end = declared
                    yield from show(max(held[1] + 1, _slot(end, fps)))
                break
            decoded += 1
            if pts is not None and origin is not None:
                t = (pts - origin) * tb
            else:  # no timestamps: one frame after the other
                t = held[2] + 1 / fps if held is not None else Fraction(0)
            slot = _slot(t, fps)
            if held is None:
                pos = slot
            else:
                longest = max(longest, t - held[2])
                yield from show(slot)
            held = (frame, slot, t, frame.duration * tb if frame.duration else 1 / fps)
    if emitted == 0 and max_frames != 0:
        if held is None:
            raise _unreadable(path, "contains no decodable frames")
        raise VideoError(f"{path}: start {start} is past the end of the video ({pos} frames)")
    if duplicated or dropped:
        _warn(
            f"{path}: variable frame rate; resampled to a constant {float(fps):g} fps "
            f"({duplicated} frames duplicated, {dropped} dropped)"
        )


def read_video(
    path: str | os.PathLike, start: int = 0, max_frames: int | None = None, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, VideoInfo]:
    """Read frames [T, H, W, 3] uint8 and the header info (holds the frames in memory).

    After a whole read, the info's `num_frames` is the exact count rather than probe's estimate.
    """
    info = probe(path)
    frames = list(iter_frames(path, start=start, max_frames=max_frames, size=size))
    if not frames:
        raise VideoError(f"{path}: no frames at or after frame {start}")
    if start == 0 and max_frames is None:
        info = replace(info, num_frames=len(frames))
    return np.stack(frames), info


def check_video_output(path: str | os.PathLike) -> Path:
    """The video file `path` names, or VideoError (naming it) if it names a folder or a container
    `write_video` cannot write (the message lists those it can). Call it before any work."""
    problem = output_path_problem(path)
    suffix = Path(path).suffix.lower()
    if problem is None and suffix not in OUTPUT_FORMATS:
        problem = (
            f"cannot write {suffix} videos" if suffix else "has no extension"
        ) + f"; use one of {', '.join(sorted(OUTPUT_FORMATS))}"
    if problem:
        raise VideoError(f"{os.fspath(path)}: {problem}")
    return Path(path)


def _encoder(fmt: str, lossless: bool, crf: int) -> tuple[str, str, dict[str, str]]:
    """(codec, pixel format, options) `write_video` uses in FFmpeg container `fmt`."""
    if fmt == "webm":  # WebM holds VP8/VP9/AV1 only; VP9 codes odd sizes, and exact RGB as gbrp + lossless
        speed = {"deadline": "good", "cpu-used": "4", "row-mt": "1"}
        if lossless:
            return "libvpx-vp9", "gbrp", {"lossless": "1", **speed}
        return "libvpx-vp9", "yuv420p", {"crf": str(crf), "b": "0", **speed}
    if fmt == "avi":  # AVI stores no presentation times, and FFmpeg reads H.264 in it a frame late (it
        # assumes a reorder delay); MPEG-4 Part 2 (no B-frames) and FFV1 read back on time, at any size
        if lossless:
            return "ffv1", "bgr0", {}
        quantiser = min(31, max(1, round(crf / 6)))  # crf 12 -> 2, near MPEG-4's best
        return "mpeg4", "yuv420p", {"flags": "+qscale", "global_quality": str(quantiser * 118)}  # FF_QP2LAMBDA
    if lossless:
        return "libx264rgb", "rgb24", {"qp": "0", "preset": "medium"}
    return "libx264", "yuv420p", {"crf": str(crf), "preset": "medium"}


def _rgb_frame(path: Path, frame) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(f"{path}: frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    return frame


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0, crf: int = 12, lossless: bool = False
) -> Path:
    """Write RGB uint8 frames in the container the extension names, atomically (temporary name, renamed
    when complete; the file gets the mode a plain open() would give).

    .mp4/.mov/.mkv hold H.264, .webm VP9, .avi MPEG-4 Part 2 (see `_encoder`), in yuv420p: the
    format browsers and QuickTime play (`crf` sets the quality; lower is better). H.264 4:2:0 cannot
    code an odd width or height (even its crop fields count in 2-pixel steps; MP4 and Matroska crop
    boxes cannot be written through PyAV and few players honour them), so odd-sized frames get their
    last column/row repeated and their true size stored in the SIZE_TAG container tag: `probe` and
    `iter_frames` crop it off again, other players show the one extra line. VP9 and MPEG-4 code odd
    sizes as they are. `lossless` stores the RGB frames exactly (libx264rgb qp 0; FFV1 in .avi, VP9
    lossless in .webm): reading back gives the same bytes, at any size.
    """
    path = check_video_output(path)
    fmt = OUTPUT_FORMATS[path.suffix.lower()]
    codec, pix_fmt, options = _encoder(fmt, lossless, crf)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"{path}: no frames to write")
    height, width = _rgb_frame(path, first).shape[:2]
    pad_h, pad_w = (height % 2, width % 2) if codec == "libx264" else (0, 0)  # the one that needs even sizes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        tags = {"movflags": "+use_metadata_tags"} if (pad_h or pad_w) and fmt in ("mp4", "mov") else {}
        with av.open(str(tmp), mode="w", format=fmt, container_options=tags) as out:
            if pad_h or pad_w:
                out.metadata[SIZE_TAG] = f"{width}x{height}"
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = width + pad_w, height + pad_h
            stream.pix_fmt, stream.options = pix_fmt, options
            for frame in itertools.chain([first], frames):
                frame = _rgb_frame(path, frame)
                if frame.shape[:2] != (height, width):
                    raise VideoError(
                        f"{path}: frame size changed from {width}x{height} to {frame.shape[1]}x{frame.shape[0]}"
                    )
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------------- geometry
def to_model(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] (one clip) or [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if x.dim() == 4:
        x = x[None]
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] or [B, T, H, W, 3], got {x.dtype} {list(x.shape)}")
    return unit_range(x.permute(0, 4, 1, 2, 3))


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1] in x's layout (float x is returned as it is): one float copy,
    divided then shifted in place. The model's sums follow the layout, so `to_model` converts the
    permuted frames, and the base tokenizer and the router convert slices of them the same way."""
    return x.float().div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else x


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
    return frames[:, top : top + height, left : left + width]


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
        w[length - overlap_after :] = np.arange(overlap_after, 0, -1, dtype=np.float32) / (overlap_after + 1)
    return w


def iter_windows(frames: Iterable[np.ndarray], window: int, overlap: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream (start, end, frames[start:end]) with the spans of `geometry.window_spans`, holding one
    window: frames are read straight into the window's array (no list of frames beside a stacked
    copy), and each window is a new array, so a caller may keep the ones it was given."""
    check_windowing(window, overlap)
    step = window - overlap
    it = iter(frames)
    nxt = next(it, None)
    win, n, start, emitted_end = None, 0, 0, 0
    while nxt is not None:
        if win is None:
            win = np.empty((window, *np.shape(nxt)), np.asarray(nxt).dtype)
        win[n] = nxt
        n += 1
        nxt = next(it, None)
        if n == window or nxt is None:
            if start + n > emitted_end:
                yield start, start + n, win[:n]
                emitted_end = start + n
            if nxt is None:
                return
            fresh = np.empty_like(win)  # the overlap is copied over: no view keeps the old array alive
            fresh[: n - step] = win[step:n]
            win, n, start = fresh, n - step, start + step


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
    base[:, :border] = base[:, width - border :] = rng.uniform(200, 255)  # flat pillarbox
    objects = []
    for _ in range(int(rng.integers(2, 4))):
        objects.append(
            dict(
                r=rng.uniform(0.1, 0.2) * min(height, width),
                pos=rng.uniform([0.3 * height, 0.3 * width], [0.7 * height, 0.7 * width]),
                vel=rng.uniform(-2.0, 2.0, size=2) * min(height, width) / 128,
                color=rng.uniform(30, 255, size=3),
                stripes=rng.uniform(0.2, 0.6),
                square=bool(rng.integers(0, 2)),
            )
        )
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
