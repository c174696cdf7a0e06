"""Writing videos on PyAV: the container the extension names, its codec, odd sizes kept, atomically."""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from .files import output_path_problem, temp_beside
from .video_read import SIZE_TAG, VideoError

# What `write_video` writes: extension -> FFmpeg muxer (the codec follows from it: `_encoder`)
OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}


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
