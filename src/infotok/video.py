"""Video I/O on PyAV, resizing, cutting streams into windows and blending them back, the built-in sample.

Frames are uint8 numpy arrays shaped [T, H, W, 3] (RGB). Models see float tensors [B, 3, T, H, W]
in [-1, 1]; `to_model` / `from_model` convert. Reading streams frame by frame so a long video is
never held whole unless the caller asks for it, and always at a constant rate (a variable-rate file is
resampled, see `iter_frames`). Writing picks the container from the extension (`write_video`).

Reading is `video_read`'s, writing `video_write`'s, windows `video_windows`'s; here: frames to and
from the model, resizing, and the built-in sample. Every name is importable from here.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .files import VIDEO_SUFFIXES, list_videos, output_path_problem, temp_beside  # noqa: F401 (re-exported)
from .video_read import (  # noqa: F401 (re-exported)
    REORDER,
    SIZE_TAG,
    VideoError,
    VideoInfo,
    iter_frames,
    probe,
    read_video,
)
from .video_windows import WindowBlender, blend_weights, iter_windows  # noqa: F401 (re-exported)
from .video_write import OUTPUT_FORMATS, check_video_output, write_video  # noqa: F401 (re-exported)


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
