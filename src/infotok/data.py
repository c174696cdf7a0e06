"""Training data: random clips and crops from a folder of videos, plus synthetic clips.

Item k of `VideoClipDataset` is a pure function of (seed, k), so a run is reproducible and a
resumed run sees exactly the data it would have seen. Clips are decoded on demand (seek + a few
frames), never whole videos. `prepare_cache` first re-encodes large sources at a small size with
short keyframe intervals, which makes those seeks cheap on a CPU.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .files import list_videos
from .video import VideoError, iter_frames, probe, synthetic_video, write_video


def prepare_cache(
    paths: list[Path], cache_dir: Path, short_side: int = 256, progress=None, crf: int = 16
) -> list[Path]:
    """Re-encode each video with its short side at `short_side` (never upscaled) into cache_dir, H.264 at `crf`.

    Cached files are named by a hash of the source path, size and mtime, so a changed source is
    re-encoded and an unchanged one is reused.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        st = p.stat()
        # the default CRF adds nothing to the name, so caches written before it was an argument stay valid
        stamp = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{short_side}" + (f"|crf{crf}" if crf != 16 else "")
        key = hashlib.sha1(stamp.encode()).hexdigest()[:16]
        target = cache_dir / f"{p.stem}-{key}.mp4"
        if not target.exists():
            info = probe(p)
            scale = min(1.0, short_side / min(info.width, info.height))
            size = (max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2))
            write_video(target, iter_frames(p, size=size), fps=info.fps, crf=crf)
        out.append(target)
        if progress:
            progress(p)
    return out


class VideoClipDataset(Dataset):
    """Random clips [3, T, crop, crop] in [-1, 1] from videos and synthetic clips.

    With `long_fraction`, that share of the batches (items k // batch share a shape) are elongated
    crops of about the same area, (crop^2 / long_side) x long_side, half landscape, half portrait:
    whole 16:9 frames give 57-token-wide latent grids and wide pillarbox bars, which square crops
    never show the model.

    Augmentations: random rescale (crop covers `scale_range` of the short side, at most 1:1),
    random crop position, horizontal flip, temporal reversal. `synthetic_fraction` of the items are
    procedural clips from `video.synthetic_video`. `border_fraction` of the items get static flat
    borders (letterbox or pillarbox, white, black or gray), common in real video and rare in crops.
    `still_fraction` of the items are held still where nothing should move (`hold_still`): the whole
    clip, or all but a moving box (a fixed camera watching something move), which the value predictor
    must learn to find cheap.
    """

    def __init__(
        self,
        paths: list[Path],
        frames: int = 17,
        crop: int = 128,
        seed: int = 0,
        synthetic_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.35, 1.0),
        length: int = 10**9,
        border_fraction: float = 0.0,
        long_side: int = 0,
        long_fraction: float = 0.0,
        batch: int = 1,
        still_fraction: float = 0.0,
    ):
        self.paths = [Path(p) for p in paths]
        self.infos = [probe(p) for p in self.paths]
        usable = [i for i, info in enumerate(self.infos) if info.num_frames >= frames]
        if not usable and synthetic_fraction < 1:
            raise ValueError(f"no training video has at least {frames} frames")
        self.usable = usable
        self.frames, self.crop, self.seed = frames, crop, seed
        self.synthetic_fraction = synthetic_fraction if usable else 1.0
        self.scale_range = scale_range
        self.length = length
        self.border_fraction = border_fraction
        self.still_fraction = still_fraction
        self.long_side, self.long_fraction, self.batch = long_side, long_fraction, batch
        if long_fraction and long_side < crop:
            raise ValueError(f"long_side ({long_side}) must be at least crop ({crop})")

    def __len__(self) -> int:
        return self.length

    def crop_shape(self, k: int) -> tuple[int, int]:
        """(height, width) of item k: the same for every item of a batch, drawn from its own stream
        so that runs without elongated crops replay exactly."""
        if not self.long_fraction:
            return self.crop, self.crop
        rng = np.random.default_rng([self.seed, k // self.batch, 1])
        if rng.random() >= self.long_fraction:
            return self.crop, self.crop
        short = max(8, round(self.crop * self.crop / self.long_side / 8) * 8)
        return (short, self.long_side) if rng.random() < 0.5 else (self.long_side, short)

    def __getitem__(self, k: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, k])
        height, width = self.crop_shape(k)
        if rng.random() < self.synthetic_fraction:
            clip = synthetic_video(self.frames, height, width, seed=int(rng.integers(2**31)))
        else:
            clip = self._real_clip(rng, height, width)
        if self.border_fraction and rng.random() < self.border_fraction:  # no draw when off: old runs replay
            clip = add_borders(clip, rng)
        if self.still_fraction and rng.random() < self.still_fraction:
            clip = hold_still(clip, rng)
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        if rng.random() < 0.5:
            clip = clip[::-1]
        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2).float()
        return x.div_(127.5).sub_(1.0)

    def _real_clip(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        for _ in range(5):  # a clip that fails to decode (rare) is replaced by another
            i = self.usable[int(rng.integers(len(self.usable)))]
            info = self.infos[i]
            start = int(rng.integers(0, max(1, info.num_frames - self.frames + 1)))
            frac = rng.uniform(*self.scale_range)
            short = min(info.width, info.height)
            # the crop's short side covers `frac` of the frame's short side (upscaled where it must fit)
            scale = max(height / info.height, width / info.width, min(1.0, min(height, width) / (frac * short)))
            w, h = max(width, round(info.width * scale)), max(height, round(info.height * scale))
            try:
                frames = list(iter_frames(self.paths[i], start=start, max_frames=self.frames, size=(w, h)))
            except VideoError:
                continue
            if len(frames) < self.frames:
                continue
            top, left = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
            return np.stack(frames)[:, top : top + height, left : left + width]
        return synthetic_video(self.frames, height, width, seed=int(rng.integers(2**31)))


def add_borders(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint static flat bars (8-30% of the frame each side) over the two opposite edges of a clip."""
    clip = clip.copy()
    colour = rng.choice([255, 0, int(rng.integers(16, 240))], p=[0.4, 0.4, 0.2])
    axis = 2 if rng.random() < 0.5 else 1  # 2: pillarbox (left/right), 1: letterbox (top/bottom)
    size = clip.shape[axis]
    a, b = (int(rng.uniform(0.08, 0.3) * size) for _ in range(2))
    index = [slice(None)] * 4
    for part in (slice(0, a), slice(size - b, size)):
        index[axis] = part
        clip[tuple(index)] = colour
    return clip


def hold_still(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The first frame repeated over the clip; half the time a box (20-60% of each side) keeps moving."""
    still = np.repeat(clip[:1], len(clip), axis=0)
    if rng.random() < 0.5:
        h, w = clip.shape[1:3]
        bh, bw = int(h * rng.uniform(0.2, 0.6)), int(w * rng.uniform(0.2, 0.6))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        still[:, top : top + bh, left : left + bw] = clip[:, top : top + bh, left : left + bw]
    return still


class ResumableSampler(Sampler):
    """Indices start, start+1, ... so a resumed run continues the same data sequence."""

    def __init__(self, start: int = 0, length: int = 10**9):
        self.start, self.length = start, length

    def __iter__(self):
        return iter(range(self.start, self.length))

    def __len__(self) -> int:
        return self.length - self.start


def training_videos(dirs: list[str | os.PathLike]) -> list[Path]:
    paths = list_videos(dirs)
    if not paths:
        raise ValueError(f"no videos found in {', '.join(map(str, dirs))}")
    return paths
