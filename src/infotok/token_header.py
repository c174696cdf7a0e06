"""What a tokenized video's header and window records hold (`TokenHeader`, `TokenWindow`), the header's
checks, and the windows and token grids it implies. No torch, as the whole `.itok` format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import geometry
from .geometry import Geometry
from .names import FILLS

FORMAT_VERSION = 1  # grid files (their bytes are unchanged since version 1)
FORMAT_VERSION_1D = 2  # 1D-layout files (`layout`, `registers`, `region` in the header; prefix masks)
FORMAT_VERSION_CONTINUED = 3  # grid files whose windows continue each other (`refresh` > 1 in the header)
# prior-coded grid files: the header zlib-coded, window heads without what the header determines (any refresh).
# Prior-coded files of versions 1 and 3 (written before it) still read
FORMAT_VERSION_COMPACT = 4
# prior-coded as version 4, but a window that keeps every token or none codes no mask: its kept count says it
FORMAT_VERSION_PRIOR = 5
PRIOR_VERSIONS = (FORMAT_VERSION_COMPACT, FORMAT_VERSION_PRIOR)  # the compact prior-coded layout
LAYOUTS = ("grid", "1d")
CODECS = ("zlib", "prior")  # how window records store tokens: zlib-packed, or range-coded with a learned prior


@dataclass
class TokenHeader:
    """What a decoder needs besides the windows, and where the tokens came from."""

    model: str
    model_hash: str
    config_hash: str
    levels: list[int]
    temporal_factor: int
    spatial_factor: int
    width: int  # size of the frames that were tokenized (after an optional resize, before padding)
    height: int
    source_width: int
    source_height: int
    fps: float
    num_frames: int
    window: int
    overlap: int
    strategy: str
    selection: str
    avg_rate: float
    score_mean: float
    resize: int | None = None  # short side the source was resized to, if any
    target_psnr: float | None = None  # strategy "target": the PSNR each window's rate was chosen to reach
    fill: str = "mask"  # how dropped tokens decode (`infotok.fill`); files from before it are "mask"
    codec: str = "zlib"
    prior_hash: str = ""  # codec "prior": the hash of the `prior.TokenPrior` the windows were coded with
    format_version: int = FORMAT_VERSION
    layout: str = "grid"  # "1d": each window a coarse-to-fine token sequence (`layout1d`), its mask a prefix
    registers: int = 0  # 1d: registers per region of region x region latents
    region: int = 0
    # windows 0, refresh, 2 refresh, ... start afresh and each other window continues the one before
    # (`fill.Carry`): a decode of window i starts at window i - i % refresh. 1: independent windows
    refresh: int = 1

    def __post_init__(self):
        """The format version follows the layout and refresh (a reader still checks it against the file's); a value
        that is not an integer (JSON true equals 1) is left for `check_header` to refuse."""
        if not _is_int(self.format_version):
            return
        if self.layout == "1d" and self.format_version == FORMAT_VERSION:
            self.format_version = FORMAT_VERSION_1D
        elif self.layout == "grid" and self.format_version in (FORMAT_VERSION, FORMAT_VERSION_CONTINUED):
            continued = _is_int(self.refresh) and self.refresh > 1
            self.format_version = FORMAT_VERSION_CONTINUED if continued else FORMAT_VERSION

    def continues(self, index: int) -> bool:
        """Whether window `index` continues the one before (and a decoder must carry its state in)."""
        return geometry.continues(index, self.refresh)

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.levels))


@dataclass
class TokenWindow:
    start: int  # frames [start, end) of the tokenized video
    end: int
    rate: float
    score: float
    mask: np.ndarray  # bool [t, h, w]
    indices: np.ndarray  # uint16 [kept], raster order of the kept positions
    nbytes: int = 0  # bytes of its record in a file (0 before it is written)

    @property
    def kept(self) -> int:
        return int(self.indices.size)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.size)

    def __repr__(self) -> str:
        return (
            f"TokenWindow(frames {self.start}-{self.end - 1}, rate {self.rate:.4f}, kept {self.kept}/{self.num_tokens})"
        )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_header(h: TokenHeader) -> None:
    """Raise ValueError unless every field of `h` has a type and value a decoder can use."""
    for name in ("model", "model_hash", "config_hash", "strategy", "selection", "codec"):
        if not isinstance(getattr(h, name), str):
            raise ValueError(f"{name} must be a string")
    if h.codec not in CODECS:
        raise ValueError(f"unknown codec {h.codec!r}")
    if not isinstance(h.prior_hash, str) or bool(h.prior_hash) != (h.codec == "prior"):
        raise ValueError("a prior-coded file names its prior's hash (prior_hash), and only such a file does")
    if h.codec == "prior" and h.layout != "grid":
        raise ValueError("the prior codes grid files only")
    if not isinstance(h.levels, list) or not h.levels or not all(_is_int(v) and v >= 1 for v in h.levels):
        raise ValueError("levels must be a list of positive integers")
    size = 1
    for v in h.levels:  # plain ints, stopping early: a forged list cannot overflow or blow up
        size *= v
        if size > 65536:
            raise ValueError("the codebook has more than 65536 codes")
    for name in (
        "temporal_factor",
        "spatial_factor",
        "width",
        "height",
        "source_width",
        "source_height",
        "num_frames",
        "window",
    ):
        if not (_is_int(getattr(h, name)) and getattr(h, name) >= 1):
            raise ValueError(f"{name} must be a positive integer, got {getattr(h, name)!r}")
    if h.num_frames > 0xFFFFFFFF:
        raise ValueError(f"num_frames {h.num_frames} is more than a file can hold")
    if not (_is_int(h.overlap) and 0 <= h.overlap < h.window):
        raise ValueError(f"overlap must be an integer in [0, window), got {h.overlap!r}")
    if not (_is_number(h.fps) and math.isfinite(h.fps) and h.fps > 0):
        raise ValueError(f"fps must be a positive number, got {h.fps!r}")
    if not (_is_number(h.avg_rate) and _is_number(h.score_mean)):
        raise ValueError("avg_rate and score_mean must be numbers")
    if h.resize is not None and not (_is_int(h.resize) and h.resize >= 1):
        raise ValueError(f"resize must be null or a positive integer, got {h.resize!r}")
    if h.fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {h.fill!r}")
    if not _is_int(h.format_version):
        raise ValueError("format_version must be an integer")
    if h.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {h.layout!r}")
    if h.layout == "1d":
        if not all(_is_int(v) and 1 <= v <= 0xFFFF for v in (h.registers, h.region)):
            raise ValueError("a 1D header needs registers and region, positive integers")
        side = h.spatial_factor * h.region
        if h.width % side or h.height % side:
            raise ValueError(f"1D frames must be multiples of {side} pixels, got {h.width}x{h.height}")
        if h.format_version != FORMAT_VERSION_1D:
            raise ValueError(f"a 1D header is format version {FORMAT_VERSION_1D}, got {h.format_version}")
    if not (_is_int(h.refresh) and 1 <= h.refresh <= 0xFFFFFFFF):
        raise ValueError(f"refresh must be a positive integer, got {h.refresh!r}")
    if h.refresh > 1 and (h.layout != "grid" or h.fill != "hold"):
        raise ValueError("only grid windows under the hold fill continue each other (refresh > 1)")
    if h.layout == "grid":
        version = FORMAT_VERSION_CONTINUED if h.refresh > 1 else FORMAT_VERSION
        if h.format_version in PRIOR_VERSIONS and h.codec != "prior":
            raise ValueError(f"format version {h.format_version} holds prior-coded files only")
        if h.format_version not in (version, *PRIOR_VERSIONS):
            raise ValueError(
                f"a grid header of refresh {h.refresh} is format version {version}, got {h.format_version}"
            )


def header_geometry(h: TokenHeader) -> Geometry:
    return Geometry(h.temporal_factor, h.spatial_factor)


def grid_positions(h: TokenHeader) -> int:
    """Positions of the 4x8x8 token grid of one whole window of the header's frame size: what a 1D
    window's rate counts its tokens against, so 1D and grid rates share one axis."""
    return math.prod(header_geometry(h).latent_shape(h.window, h.height, h.width))


def window_span(h: TokenHeader, index: int) -> tuple[int, int]:
    """Frames [start, end) of window `index` (assumes a final num_frames)."""
    return geometry.window_span(index, h.num_frames, h.window, h.overlap)


def window_count(h: TokenHeader) -> int:
    return geometry.window_count(h.num_frames, h.window, h.overlap)


def window_grid(h: TokenHeader, start: int, end: int) -> tuple[int, int, int]:
    """Latent (t, h, w) of frames [start, end): the padded model grid of the header's frame size. A 1D
    window is (1, 1, its token positions)."""
    if h.layout == "1d":
        side = h.spatial_factor * h.region
        return 1, 1, h.registers * (h.height // side) * (h.width // side)
    return header_geometry(h).latent_shape(end - start, h.height, h.width)
