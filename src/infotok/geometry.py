"""Where frames and pixels land on the token grid, and how long videos are cut into windows.

One `Geometry` per model (4x8x8 for both bases): frame 0 is its own latent frame, then every group
of `temporal_factor` frames is one more; `spatial_factor` x `spatial_factor` pixels are one token.
Inputs off that grid are padded by edge replication and cropped back after decoding. Window spans
are the one rule that the streaming pipeline, the token format and progress totals all share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensors only pass through pad and crop: token files are read without torch
    import torch


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    temporal_factor: int = 4
    spatial_factor: int = 8

    @property
    def min_window(self) -> int:
        """The shortest window worth a token grid: frame 0 plus one latent step."""
        return 1 + self.temporal_factor

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames covering `num_frames` frames (after padding to 1 + temporal_factor * k)."""
        return 1 + _ceil_div(max(num_frames, 1) - 1, self.temporal_factor)

    def latent_frame_of(self, frame: int) -> int:
        """The latent frame that frame `frame` (0-based, within a window) belongs to."""
        return 0 if frame == 0 else 1 + (frame - 1) // self.temporal_factor

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (t, h, w) of a clip of any size (it is padded to the model grid first)."""
        return (
            self.latent_frames(num_frames),
            _ceil_div(height, self.spatial_factor),
            _ceil_div(width, self.spatial_factor),
        )

    def padded_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Smallest (T, H, W) >= the input with T = 1 + temporal_factor * k and H, W multiples of spatial_factor."""
        t, h, w = self.latent_shape(num_frames, height, width)
        return 1 + self.temporal_factor * (t - 1), h * self.spatial_factor, w * self.spatial_factor

    def on_grid(self, num_frames: int, height: int, width: int) -> bool:
        return self.padded_shape(num_frames, height, width) == (num_frames, height, width)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> the model grid, by edge replication (undo with `crop`)."""
        t, h, w = x.shape[2:]
        tt, hh, ww = self.padded_shape(t, h, w)
        if (tt, hh, ww) == (t, h, w):
            return x
        import torch.nn.functional as F

        return F.pad(x, (0, ww - w, 0, hh - h, 0, tt - t), mode="replicate")

    @staticmethod
    def crop(x: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        return x[:, :, :num_frames, :height, :width]

    def token_pixels(self) -> int:
        """Pixels one token stands for in one frame (the BPP16 ledger counts per 16 of them)."""
        return self.spatial_factor * self.spatial_factor


# ------------------------------------------------------------------------------------ windows
def check_windowing(window: int, overlap: int, geometry: Geometry | None = None) -> None:
    minimum = geometry.min_window if geometry else 1
    if window < minimum:
        raise ValueError(
            f"window must be at least {minimum} frames"
            + (" (frame 0 plus one latent step)" if geometry else "")
            + f", got {window}"
        )
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be at least 0 and smaller than window ({window}), got {overlap}")


def window_span(index: int, num_frames: int, window: int, overlap: int) -> tuple[int, int]:
    """Frames [start, end) of window `index`."""
    start = index * (window - overlap)
    return start, min(start + window, num_frames)


def window_count(num_frames: int, window: int, overlap: int) -> int:
    """How many windows cover `num_frames` frames; the last one ends at the last frame."""
    return 1 + max(0, _ceil_div(num_frames - window, window - overlap))


def continues(index: int, refresh: int) -> bool:
    """Whether window `index` continues the one before (`fill.Carry`): all but windows 0, refresh, 2 refresh, ..."""
    return index % refresh != 0


def window_spans(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of `window` frames overlapping by `overlap`."""
    check_windowing(window, overlap)
    return [window_span(i, num_frames, window, overlap) for i in range(window_count(num_frames, window, overlap))]
