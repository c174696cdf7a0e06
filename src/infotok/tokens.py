"""Token values (`TokenBatch` on the device, `Tokens` of a video) and the `.itok` file format (docs/FORMAT.md).

A file is a versioned JSON header, then one self-checking record per window (keep-mask bit-packed,
kept indices, both zlib-coded, CRC32), then a trailer with the window count. It is written and read
window by window, so a long video never needs all its tokens in memory. The parser trusts no length
field: every size is checked against the window's own geometry before anything is allocated, and
every window's frames and token grid against the header (its frame size, frame count, window and
overlap), so whatever `TokenReader` accepts can be decoded. Every failure is a `TokenFormatError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from . import geometry
from .files import output_path_problem, temp_beside
from .geometry import Geometry
from .ledger import Ledger
from .names import FILLS

if TYPE_CHECKING:  # the file format needs no torch: `infotok info` starts without it
    import torch

    from .batch import TokenBatch

TOKEN_SUFFIX = ".itok"
MAGIC = b"ITOK"
TRAILER_MAGIC = b"ITND"
FORMAT_VERSION = 1  # grid files (their bytes are unchanged since version 1)
FORMAT_VERSION_1D = 2  # 1D-layout files (`layout`, `registers`, `region` in the header; prefix masks)
READ_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_1D)
LAYOUTS = ("grid", "1d")
MAX_HEADER_BYTES = 1 << 20
MAX_TOKENS_PER_WINDOW = 1 << 24
MAX_RECORD_BYTES = 1 << 26  # a full window of 2**24 tokens codes to ~34 MB at worst
_PRELUDE = struct.Struct("<4sHI")  # magic, version, header length
_RECORD = struct.Struct("<II")  # payload length, crc32
_WINDOW = struct.Struct("<IIHHHddIII")  # start, end, t, h, w, rate, score, kept, mask bytes, index bytes
_TRAILER = struct.Struct("<4sI")


class TokenFormatError(ValueError):
    """A `.itok` file that is truncated, corrupt, from another format version or another model."""


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
    format_version: int = FORMAT_VERSION
    layout: str = "grid"  # "1d": each window a coarse-to-fine token sequence (`layout1d`), its mask a prefix
    registers: int = 0  # 1d: registers per region of region x region latents
    region: int = 0

    def __post_init__(self):
        if self.layout == "1d" and self.format_version == FORMAT_VERSION:
            self.format_version = FORMAT_VERSION_1D

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


@dataclass
class Tokens:
    header: TokenHeader
    windows: list[TokenWindow] = field(default_factory=list)

    def __repr__(self) -> str:
        h, ledger = self.header, self.ledger()
        if h.layout == "1d":
            kept = sorted({w.kept for w in self.windows})
            return (
                f"Tokens(model {h.model!r}, {h.num_frames} frames {h.width}x{h.height}, 1D layout, "
                f"{len(self.windows)} window{'s' if len(self.windows) != 1 else ''} of {kept[0]}"
                f"{'' if len(kept) == 1 else f'-{kept[-1]}'} tokens, {ledger.kept} in all)"
            )
        return (
            f"Tokens(model {h.model!r}, {h.num_frames} frames {h.width}x{h.height}, {len(self.windows)} "
            f"window{'s' if len(self.windows) != 1 else ''}, kept {ledger.kept}/{ledger.total} tokens "
            f"(rate {ledger.realized_rate:.3f}), {h.strategy} + {h.selection} + {h.fill})"
        )

    def batch(self, index: int, device: torch.device | str = "cpu") -> TokenBatch:
        """Window `index` as tensors to compute with: int64 indices and a bool keep-mask [1, t, h, w]
        (uint16 is only the file's storage type)."""
        from .batch import TokenBatch

        return TokenBatch.from_windows(
            [self.windows[index]], self.header.height, self.header.width, device, self.header.fill
        )

    def truncate(self, k: int) -> "Tokens":
        """The same video with each window cut to its first `k` tokens (1D layout: any prefix decodes,
        coarser; a window holding fewer keeps them all). No re-encoding."""
        if self.header.layout != "1d":
            raise ValueError("only 1D-layout tokens can be cut to a prefix; a grid file's tokens have no order")
        if not (_is_int(k) and k >= 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        windows = []
        for w in self.windows:
            n = min(k, w.kept)
            mask = np.zeros_like(w.mask)
            mask.reshape(-1)[:n] = True
            windows.append(
                TokenWindow(w.start, w.end, w.rate * n / max(w.kept, 1), w.score, mask, w.indices[:n].copy())
            )
        header = replace(self.header, avg_rate=float(np.mean([w.rate for w in windows])) if windows else 0.0)
        return Tokens(header, windows)

    def ledger(self, file_bytes: int | None = None) -> Ledger:
        """Kept and total tokens over the video (+ the real bits of its file, when given). A 1D file's total
        is the grid's positions for its windows (so its rate compares with a grid file's) and it has no
        mask: a window's prefix length is all it stores besides its tokens."""
        h, kept = self.header, sum(w.kept for w in self.windows)
        if h.layout == "1d":
            total = len(self.windows) * grid_positions(h)
        else:
            total = sum(w.num_tokens for w in self.windows)
        return Ledger(kept, total, h.num_frames * h.width * h.height, file_bytes, masked=h.layout != "1d")

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write an `.itok` file; an existing one is only replaced with overwrite=True (the CLI's --overwrite)."""
        with TokenWriter(path, self.header, overwrite=overwrite) as writer:
            for w in self.windows:
                writer.write(w)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokens":
        reader = TokenReader(path)
        with reader:
            return cls(reader.header, list(reader))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_header(h: TokenHeader) -> None:
    """Raise ValueError unless every field of `h` has a type and value a decoder can use."""
    for name in ("model", "model_hash", "config_hash", "strategy", "selection", "codec"):
        if not isinstance(getattr(h, name), str):
            raise ValueError(f"{name} must be a string")
    if h.codec != "zlib":
        raise ValueError(f"unknown codec {h.codec!r}")
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
    elif h.format_version != FORMAT_VERSION:
        raise ValueError(f"a grid header is format version {FORMAT_VERSION}, got {h.format_version}")


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


def encode_window(w: TokenWindow, codebook_size: int) -> bytes:
    mask = np.asarray(w.mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError("window mask must be [t, h, w]")
    if not 0 < mask.size <= MAX_TOKENS_PER_WINDOW or max(mask.shape) > 0xFFFF:
        raise ValueError(f"window mask shape {mask.shape} cannot be stored")
    if not 0 <= int(w.start) < int(w.end) <= 0xFFFFFFFF:
        raise ValueError(f"window frames {w.start}-{w.end} are not a valid span")
    if not (math.isfinite(float(w.rate)) and 0 < float(w.rate) <= 1):
        raise ValueError(f"window rate must lie in (0, 1], got {w.rate}")
    indices = np.asarray(w.indices)
    if indices.size != int(mask.sum()):
        raise ValueError(f"window has {int(mask.sum())} kept positions but {indices.size} indices")
    if indices.size and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ValueError(f"token indices must lie in [0, {codebook_size})")
    mask_bytes = zlib.compress(np.packbits(mask.ravel(), bitorder="little").tobytes(), 9)
    index_bytes = zlib.compress(indices.astype("<u2").tobytes(), 9)
    t, h, wd = mask.shape
    head = _WINDOW.pack(
        w.start, w.end, t, h, wd, float(w.rate), float(w.score), indices.size, len(mask_bytes), len(index_bytes)
    )
    return head + mask_bytes + index_bytes


def _inflate(data: bytes, expected: int, what: str) -> bytes:
    """zlib-decode at most `expected` bytes (a forged stream cannot make us allocate more)."""
    d = zlib.decompressobj()
    try:
        # max_length 0 would mean "no limit": ask for one byte more than expected, at least 1
        out = d.decompress(data, expected + 1)
    except zlib.error as exc:
        raise TokenFormatError(f"{what}: corrupt compressed data ({exc})") from None
    if len(out) != expected or d.unconsumed_tail or d.unused_data or not d.eof:
        raise TokenFormatError(f"{what}: compressed data does not hold the expected {expected} bytes")
    return out


def decode_window(payload: bytes, header: TokenHeader, where: str, index: int | None = None) -> TokenWindow:
    """Parse one record; with `index`, also check its frames and grid against the header's geometry."""
    if len(payload) < _WINDOW.size:
        raise TokenFormatError(f"{where}: record too short")
    start, end, t, h, w, rate, score, kept, n_mask, n_idx = _WINDOW.unpack_from(payload)
    n = t * h * w
    if not 0 < n <= MAX_TOKENS_PER_WINDOW or kept > n or not start < end <= header.num_frames:
        raise TokenFormatError(f"{where}: impossible geometry (t={t}, h={h}, w={w}, kept={kept}, frames {start}-{end})")
    if index is not None:
        span = window_span(header, index)
        if (start, end) != span:
            raise TokenFormatError(
                f"{where}: holds frames {start}-{end} but the header's window/overlap/frame "
                f"count place it at frames {span[0]}-{span[1]}"
            )
        grid = window_grid(header, start, end)
        if (t, h, w) != grid:
            raise TokenFormatError(
                f"{where}: token grid {t}x{h}x{w} does not match the header's "
                f"{header.width}x{header.height} frames (expected {grid[0]}x{grid[1]}x{grid[2]})"
            )
    if _WINDOW.size + n_mask + n_idx != len(payload):
        raise TokenFormatError(f"{where}: section lengths do not add up to the record length")
    body = memoryview(payload)[_WINDOW.size :]
    bits = np.frombuffer(_inflate(bytes(body[:n_mask]), (n + 7) // 8, f"{where} mask"), np.uint8)
    mask = np.unpackbits(bits, count=n, bitorder="little").astype(bool).reshape(t, h, w)
    if int(mask.sum()) != kept:
        raise TokenFormatError(f"{where}: mask keeps {int(mask.sum())} positions but the record says {kept}")
    if header.layout == "1d" and not mask.reshape(-1)[:kept].all():
        raise TokenFormatError(f"{where}: a 1D window must keep a prefix of its sequence")
    indices = np.frombuffer(_inflate(bytes(body[n_mask:]), 2 * kept, f"{where} indices"), "<u2").astype(np.uint16)
    if kept and int(indices.max()) >= header.codebook_size:
        raise TokenFormatError(f"{where}: token index out of range for {header.codebook_size} codes")
    if not (np.isfinite(rate) and 0 < rate <= 1):
        raise TokenFormatError(f"{where}: invalid rate {rate}")
    return TokenWindow(start, end, rate, score, mask, indices, nbytes=_RECORD.size + len(payload))


def check_token_output(path: str | os.PathLike) -> Path:
    """The token file `path` names, or ValueError (naming it) if it is a folder or does not end in .itok.

    Requiring the suffix is what lets `decode` and `info` find token files in folders, and catches
    `encode in.mp4 -o out.mp4`.
    """
    problem = output_path_problem(path)
    if problem is None and Path(path).suffix.lower() != ".itok":
        problem = "token files must end in .itok"
    if problem:
        raise ValueError(f"{os.fspath(path)}: {problem}")
    return Path(path)


class TokenWriter:
    """Streams windows to a temporary file; `close` writes header + windows + trailer under `path`.

    The header is written last, through a second temporary file that is renamed into place, so
    `path` only ever holds a complete file. A header whose `num_frames` is 0 (a stream whose length
    is not known yet) gets the end of the last window written; `header` is that final header after
    `close`.
    """

    def __init__(self, path: str | os.PathLike, header: TokenHeader, overwrite: bool = False):
        self.path = check_token_output(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--overwrite on the command line) to replace it"
            )
        self.header = header
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._body = tempfile.TemporaryFile(dir=self.path.parent)
        self.count = 0
        self.header_bytes = 0
        self._last: tuple[int, int] | None = None  # frames of the last window written

    def write(self, window: TokenWindow) -> int:
        check_header(replace(self.header, num_frames=1))  # the frame count is only final at close
        step = self.header.window - self.header.overlap
        if window.start != self.count * step or not 0 < window.end - window.start <= self.header.window:
            raise ValueError(
                f"window {self.count} holds frames {window.start}-{window.end}; with window "
                f"{self.header.window} and overlap {self.header.overlap} it must start at {self.count * step}"
            )
        if self._last is not None and self._last[1] - self._last[0] != self.header.window:
            raise ValueError(
                f"window {self.count - 1} (frames {self._last[0]}-{self._last[1]}) is shorter than "
                f"--window {self.header.window}, so it must be the last one"
            )
        grid = window_grid(self.header, window.start, window.end)
        if np.shape(window.mask) != grid:
            raise ValueError(
                f"window {self.count} has a token grid {np.shape(window.mask)}; "
                f"{self.header.width}x{self.header.height} frames need {grid}"
            )
        payload = encode_window(window, self.header.codebook_size)
        self._body.write(_RECORD.pack(len(payload), zlib.crc32(payload)) + payload)
        self._last = (int(window.start), int(window.end))
        self.count += 1
        window.nbytes = _RECORD.size + len(payload)
        return window.nbytes

    def close(self) -> Path:
        try:
            if not self.header.num_frames and self._last is not None:
                self.header = replace(self.header, num_frames=self._last[1])
            check_header(self.header)
            # starts, and full-length windows before the last, were checked by `write`
            if self.count != window_count(self.header) or self._last[1] != self.header.num_frames:
                raise ValueError(
                    f"{self.count} windows ending at frame {self._last and self._last[1]} were written, "
                    f"but {self.header.num_frames} frames with window {self.header.window} and overlap "
                    f"{self.header.overlap} need {window_count(self.header)} ending at frame "
                    f"{self.header.num_frames}"
                )
        except ValueError:
            self._body.close()
            raise
        fields = asdict(self.header)
        absent_fields = (("target_psnr", None), ("fill", "mask"), ("layout", "grid"), ("registers", 0), ("region", 0))
        for name, absent in absent_fields:  # only files that use them carry them:
            if fields[name] == absent:  # other files stay byte-identical to before these fields
                del fields[name]
        blob = json.dumps(fields, sort_keys=True).encode()
        tmp = temp_beside(self.path)
        try:
            with open(tmp, "wb") as out:
                prelude = _PRELUDE.pack(MAGIC, self.header.format_version, len(blob))
                out.write(prelude + blob + struct.pack("<I", zlib.crc32(blob)))
                self._body.seek(0)
                while chunk := self._body.read(1 << 20):
                    out.write(chunk)
                out.write(_TRAILER.pack(TRAILER_MAGIC, self.count))
            os.replace(tmp, self.path)
        finally:
            self._body.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.header_bytes = _PRELUDE.size + len(blob) + 4
        return self.path

    def abort(self) -> None:
        self._body.close()

    def __enter__(self) -> "TokenWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close() if exc_type is None else self.abort()


class TokenReader:
    """Reads the header at once and the windows one at a time; every failure is a TokenFormatError."""

    def __init__(self, source: str | os.PathLike | bytes):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name, self._f, self.size = "<bytes>", io.BytesIO(bytes(source)), len(source)
        else:
            p = Path(source)
            if not p.is_file():
                raise TokenFormatError(f"{p}: no such token file")
            try:
                self.name, self._f, self.size = str(p), open(p, "rb"), p.stat().st_size
            except OSError as exc:
                raise TokenFormatError(f"{p}: cannot read the token file ({exc.strerror or exc})") from None
        try:
            self.header, self.header_bytes = self._read_header()
        except BaseException:
            self._f.close()
            raise

    def _read_exact(self, n: int, what: str) -> bytes:
        if n > self.size - self._f.tell():
            raise TokenFormatError(f"{self.name}: truncated in {what}")
        data = self._f.read(n)
        if len(data) != n:
            raise TokenFormatError(f"{self.name}: truncated in {what}")
        return data

    def _read_header(self) -> tuple[TokenHeader, int]:
        magic, version, n = _PRELUDE.unpack(self._read_exact(_PRELUDE.size, "the header"))
        if magic != MAGIC:
            raise TokenFormatError(f"{self.name}: not an infotok token file (bad magic)")
        if version not in READ_VERSIONS:
            raise TokenFormatError(
                f"{self.name}: format version {version} is not supported by this infotok "
                f"(reads versions {', '.join(map(str, READ_VERSIONS))}); "
                f"{'upgrade infotok' if version > max(READ_VERSIONS) else 're-encode the video'}"
            )
        if n > MAX_HEADER_BYTES:
            raise TokenFormatError(f"{self.name}: header length {n} is implausible")
        blob = self._read_exact(n, "the header")
        (crc,) = struct.unpack("<I", self._read_exact(4, "the header checksum"))
        if zlib.crc32(blob) != crc:
            raise TokenFormatError(f"{self.name}: header checksum mismatch (file corrupt)")
        try:
            fields = json.loads(blob)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            header = TokenHeader(**fields)
            check_header(header)
            if header.format_version != version:
                raise ValueError(f"format version {header.format_version} in a version {version} file")
        except RecursionError:
            raise TokenFormatError(f"{self.name}: header is not valid (nested too deeply)") from None
        except (ValueError, TypeError) as exc:
            raise TokenFormatError(f"{self.name}: header is not valid ({exc})") from None
        return header, _PRELUDE.size + n + 4

    def __iter__(self) -> Iterator[TokenWindow]:
        self._f.seek(self.header_bytes)
        count = window_count(self.header)
        for index in range(count):
            where = f"{self.name}: window {index}"
            pos = self._f.tell()
            if self.size - pos == _TRAILER.size:
                if self._f.read(4) == TRAILER_MAGIC:
                    raise TokenFormatError(
                        f"{where}: missing; the file ends after {index} of the {count} windows its header calls for"
                    )
                self._f.seek(pos)
            length, crc = _RECORD.unpack(self._read_exact(_RECORD.size, f"window {index}"))
            if length > MAX_RECORD_BYTES:
                raise TokenFormatError(f"{where}: record length {length} is implausible (file corrupt)")
            payload = self._read_exact(length, f"window {index}")
            if zlib.crc32(payload) != crc:
                raise TokenFormatError(f"{where}: checksum mismatch (file corrupt)")
            yield decode_window(payload, self.header, where, index)
        left = self.size - self._f.tell()
        if left < _TRAILER.size:
            raise TokenFormatError(f"{self.name}: truncated in the trailer")
        if left > _TRAILER.size:
            raise TokenFormatError(
                f"{self.name}: {left - _TRAILER.size} unexpected bytes after window {count - 1} "
                f"(the header calls for {count} windows)"
            )
        magic, n = _TRAILER.unpack(self._read_exact(_TRAILER.size, "the trailer"))
        if magic != TRAILER_MAGIC or n != count:
            raise TokenFormatError(
                f"{self.name}: trailer corrupt or window count mismatch (read {count} windows, trailer says {n})"
            )

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TokenReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(path: str | os.PathLike) -> dict:
    """Everything `infotok info` shows about a token file: header, ledger, per-window records."""
    with TokenReader(path) as reader:
        h, windows, header_bytes = reader.header, list(reader), reader.header_bytes
    size = Path(path).stat().st_size
    ledger = Tokens(h, windows).ledger(file_bytes=size)
    window_pixels = sum((w.end - w.start) * h.width * h.height for w in windows)
    return {
        "file": str(path),
        "format_version": h.format_version,
        "model": h.model,
        "model_hash": h.model_hash,
        "config_hash": h.config_hash,
        "levels": h.levels,
        "frames": h.num_frames,
        "fps": h.fps,
        "size": f"{h.width}x{h.height}",
        "source_size": f"{h.source_width}x{h.source_height}",
        "window": h.window,
        "overlap": h.overlap,
        "strategy": h.strategy,
        "selection": h.selection,
        "fill": h.fill,
        **({"layout": h.layout, "registers": h.registers, "region": h.region} if h.layout != "grid" else {}),
        "avg_rate": h.avg_rate,
        "score_mean": h.score_mean,
        "windows": len(windows),
        **ledger.to_dict(),
        "header_bytes": header_bytes,
        "window_bytes": sum(w.nbytes for w in windows),
        "trailer_bytes": _TRAILER.size,
        "file_bpp16_per_window_pixel": size * 8 * 16 / window_pixels,
        "per_window": [
            {
                "frames": [w.start, w.end],
                "rate": round(w.rate, 5),
                "kept": w.kept,
                "tokens": w.num_tokens,
                "bytes": w.nbytes,
            }
            for w in windows
        ],
    }


def __getattr__(name: str):
    """`infotok.tokens.TokenBatch`, where it lived before `infotok.batch`: works for one more release."""
    if name == "TokenBatch":
        import warnings

        from .batch import TokenBatch

        warnings.warn(
            "infotok.tokens.TokenBatch moved to infotok.batch.TokenBatch; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return TokenBatch
    raise AttributeError(f"module 'infotok.tokens' has no attribute {name!r}")
