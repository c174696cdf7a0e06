"""Reading videos on PyAV: the header (`probe`), and frames streamed at a constant rate (`iter_frames`;
a variable-rate file is resampled), from any frame on, with one clear `VideoError` for a file that
gives none.
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
from typing import Iterator

import av
import numpy as np

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
