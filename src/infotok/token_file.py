"""The `.itok` file format (docs/FORMAT.md): window records, `TokenWriter` and `TokenReader`.

A file is a versioned JSON header, then one self-checking record per window (keep-mask bit-packed,
kept indices, both zlib-coded, CRC32; or, versions 4 and 5, both range-coded with a learned prior under a
compact head), then a trailer with the window count. It is written and read
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .files import output_path_problem, temp_beside
from .token_header import (
    FORMAT_VERSION,
    FORMAT_VERSION_1D,
    FORMAT_VERSION_CONTINUED,
    FORMAT_VERSION_PRIOR,
    PRIOR_VERSIONS,
    TokenHeader,
    TokenWindow,
    check_header,
    window_count,
    window_grid,
    window_span,
)

TOKEN_SUFFIX = ".itok"
MAGIC = b"ITOK"
TRAILER_MAGIC = b"ITND"
READ_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_1D, FORMAT_VERSION_CONTINUED, *PRIOR_VERSIONS)
MAX_HEADER_BYTES = 1 << 20
MAX_TOKENS_PER_WINDOW = 1 << 24
MAX_RECORD_BYTES = 1 << 26  # a full window of 2**24 tokens codes to ~34 MB at worst
_PRELUDE = struct.Struct("<4sHI")  # magic, version, header length
_RECORD = struct.Struct("<II")  # payload length, crc32
_WINDOW = struct.Struct("<IIHHHddIII")  # start, end, t, h, w, rate, score, kept, mask bytes, index bytes
_COMPACT_WINDOW = struct.Struct("<ddI")  # versions 4 and 5: rate, score, kept (frames and grid follow from the header)
_TRAILER = struct.Struct("<4sI")
# A prior-coded file's header (versions 4 and 5) is zlib-coded with this preset dictionary: the keys and the usual
# values of a header, so that what is left to code is mostly the hashes and sizes (about 100 bytes instead of 510).
# Part of the format: never change it, add a version.
HEADER_DICTIONARY = (
    b'"target_psnr":null,"strategy":"global_elbo","static","uniform","target","selection":"error","value",'
    b'"order","random","temporal","fill":"mask",{"avg_rate":0.5,"codec":"prior","config_hash":"","fill":"hold",'
    b'"format_version":4,"fps":25.0,"height":256,"levels":[8,8,8,5,5,5],"model":"infotok-flex","model_hash":"",'
    b'"num_frames":97,"overlap":1,"prior_hash":"","refresh":10,"resize":256,"score_mean":0.07,"selection":"drift",'
    b'"source_height":256,"source_width":256,"spatial_factor":8,"strategy":"rd","temporal_factor":4,"width":256,'
    b'"window":33}'
)


class TokenFormatError(ValueError):
    """A `.itok` file that is truncated, corrupt, from another format version or another model."""


def encode_window(w: TokenWindow, codebook_size: int, coder=None) -> bytes:
    """A window's record; with an `entropy.PriorCoder`, version 5's: a compact head, then its mask and indices
    range-coded in one section."""
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
    if coder is not None:
        return _COMPACT_WINDOW.pack(float(w.rate), float(w.score), indices.size) + coder.encode(mask, indices)
    mask_bytes = zlib.compress(np.packbits(mask.ravel(), bitorder="little").tobytes(), 9)
    index_bytes = zlib.compress(indices.astype("<u2").tobytes(), 9)
    t, h, wd = mask.shape
    head = _WINDOW.pack(
        w.start, w.end, t, h, wd, float(w.rate), float(w.score), indices.size, len(mask_bytes), len(index_bytes)
    )
    return head + mask_bytes + index_bytes


def _inflate(data: bytes, expected: int, what: str, at_most: bool = False, zdict: bytes = b"") -> bytes:
    """zlib-decode `expected` bytes (`at_most`: up to that many); a forged stream cannot make us allocate more."""
    d = zlib.decompressobj(zdict=zdict)
    try:
        # max_length 0 would mean "no limit": ask for one byte more than expected, at least 1
        out = d.decompress(data, expected + 1)
    except zlib.error as exc:
        raise TokenFormatError(f"{what}: corrupt compressed data ({exc})") from None
    if len(out) > expected or (len(out) != expected and not at_most) or d.unconsumed_tail or d.unused_data or not d.eof:
        raise TokenFormatError(
            f"{what}: compressed data does not hold {'at most' if at_most else 'the expected'} {expected} bytes"
        )
    return out


@dataclass(frozen=True)
class WindowHead:
    """What a window's record says before its tokens (frames, grid, rate, kept count, sizes): enough for `infotok
    info` and the ledger, so a prior-coded file is described without its prior and without decoding."""

    start: int
    end: int
    rate: float
    score: float
    kept: int
    shape: tuple[int, int, int]  # the token grid [t, h, w]
    size: int  # bytes of the head in the payload
    mask_bytes: int  # versions 1-3: the zlib mask section's bytes (0 in prior-coded records)
    nbytes: int  # bytes of the whole record in the file

    @property
    def num_tokens(self) -> int:
        return math.prod(self.shape)


def window_head(payload: bytes, header: TokenHeader, where: str, index: int | None = None) -> WindowHead:
    """Parse and check one record's head; with `index` (which versions 4 and 5 need: their frames and grid follow
    from it), also its frames and grid against the header's geometry."""
    if header.format_version in PRIOR_VERSIONS:
        if index is None:
            raise ValueError(f"pass index: a version-{header.format_version} record's frames follow from it")
        if len(payload) < _COMPACT_WINDOW.size:
            raise TokenFormatError(f"{where}: record too short")
        rate, score, kept = _COMPACT_WINDOW.unpack_from(payload)
        start, end = window_span(header, index)
        shape, size, n_mask = window_grid(header, start, end), _COMPACT_WINDOW.size, 0
        if kept > math.prod(shape):
            raise TokenFormatError(f"{where}: keeps {kept} of its {math.prod(shape)} positions")
    else:
        if len(payload) < _WINDOW.size:
            raise TokenFormatError(f"{where}: record too short")
        start, end, t, h, w, rate, score, kept, n_mask, n_idx = _WINDOW.unpack_from(payload)
        shape, size, n = (t, h, w), _WINDOW.size, t * h * w
        if not 0 < n <= MAX_TOKENS_PER_WINDOW or kept > n or not start < end <= header.num_frames:
            raise TokenFormatError(
                f"{where}: impossible geometry (t={t}, h={h}, w={w}, kept={kept}, frames {start}-{end})"
            )
        if index is not None:
            span = window_span(header, index)
            if (start, end) != span:
                raise TokenFormatError(
                    f"{where}: holds frames {start}-{end} but the header's window/overlap/frame "
                    f"count place it at frames {span[0]}-{span[1]}"
                )
            grid = window_grid(header, start, end)
            if shape != grid:
                raise TokenFormatError(
                    f"{where}: token grid {t}x{h}x{w} does not match the header's "
                    f"{header.width}x{header.height} frames (expected {grid[0]}x{grid[1]}x{grid[2]})"
                )
        if _WINDOW.size + n_mask + n_idx != len(payload):
            raise TokenFormatError(f"{where}: section lengths do not add up to the record length")
    if not (np.isfinite(rate) and 0 < rate <= 1):
        raise TokenFormatError(f"{where}: invalid rate {rate}")
    return WindowHead(start, end, rate, score, kept, shape, size, n_mask, _RECORD.size + len(payload))


def decode_window(payload: bytes, header: TokenHeader, where: str, index: int | None = None, coder=None) -> TokenWindow:
    """Parse one record (`window_head`, then its tokens). A prior-coded file's records need the
    `entropy.PriorCoder` that decoded the windows before it."""
    head = window_head(payload, header, where, index)
    body = bytes(memoryview(payload)[head.size :])
    if header.codec == "prior":
        mask, indices = _prior_sections(body, head.mask_bytes, head.shape, head.kept, coder, where)
    else:
        mask, indices = _zlib_sections(body, head.mask_bytes, head.shape, head.kept, where)
    if header.layout == "1d" and not mask.reshape(-1)[: head.kept].all():
        raise TokenFormatError(f"{where}: a 1D window must keep a prefix of its sequence")
    if indices.size and int(indices.max()) >= header.codebook_size:
        raise TokenFormatError(f"{where}: token index out of range for {header.codebook_size} codes")
    return TokenWindow(head.start, head.end, head.rate, head.score, mask, indices, nbytes=head.nbytes)


def _zlib_sections(body: bytes, n_mask: int, shape: tuple, kept: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The zlib-coded mask, checked against `kept` before the indices are inflated, then the indices."""
    n = math.prod(shape)
    bits = np.frombuffer(_inflate(body[:n_mask], (n + 7) // 8, f"{where} mask"), np.uint8)
    mask = np.unpackbits(bits, count=n, bitorder="little").astype(bool).reshape(shape)
    _check_kept(mask, kept, where)
    indices = np.frombuffer(_inflate(body[n_mask:], 2 * kept, f"{where} indices"), "<u2").astype(np.uint16)
    return mask, indices


def _prior_sections(body: bytes, n_mask: int, shape: tuple, kept: int, coder, where: str):
    """The range-coded mask and indices, decoded by `coder` (an `entropy.PriorCoder`, in file order)."""
    if n_mask:
        raise TokenFormatError(f"{where}: a prior-coded record has no separate mask section")
    try:
        mask, indices = coder.decode(body, shape, kept)
    except (ValueError, RuntimeError, AssertionError) as exc:  # constriction asserts on data no model can decode
        raise TokenFormatError(f"{where}: corrupt prior-coded data ({exc})") from None
    _check_kept(mask, kept, where)
    return mask, indices


def _check_kept(mask: np.ndarray, kept: int, where: str) -> None:
    if int(mask.sum()) != kept:
        raise TokenFormatError(f"{where}: mask keeps {int(mask.sum())} positions but the record says {kept}")


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

    def __init__(self, path: str | os.PathLike, header: TokenHeader, overwrite: bool = False, prior=None):
        self.path = check_token_output(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--overwrite on the command line) to replace it"
            )
        self.header, self._coder = header, None
        if header.codec != "zlib":  # tokens read from a prior-coded file, stored without a prior: zlib
            self.header = replace(header, codec="zlib", prior_hash="", format_version=FORMAT_VERSION)
        if prior is not None:  # entropy-coded windows (version 5): the header names the prior a reader needs
            from .entropy import PriorCoder

            if header.layout != "grid":
                raise ValueError("the prior codes grid files only; 1D files are stored with zlib")
            if list(prior.config.levels) != list(header.levels):
                raise ValueError(f"the prior models codes of FSQ levels {prior.config.levels}, not {header.levels}")
            self.header, self._coder = (
                replace(header, codec="prior", prior_hash=prior.hash, format_version=FORMAT_VERSION_PRIOR),
                PriorCoder.for_file(prior, header),
            )
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
        payload = encode_window(window, self.header.codebook_size, self._coder)
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
        absent_fields = (
            ("target_psnr", None),
            ("fill", "mask"),
            ("layout", "grid"),
            ("registers", 0),
            ("region", 0),
            ("prior_hash", ""),
            ("refresh", 1),
        )
        for name, absent in absent_fields:  # only files that use them carry them:
            if fields[name] == absent:  # other files stay byte-identical to before these fields
                del fields[name]
        if self.header.format_version in PRIOR_VERSIONS:
            deflate = zlib.compressobj(9, zdict=HEADER_DICTIONARY)
            blob = deflate.compress(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
            blob += deflate.flush()
        else:
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
    """Reads the header at once and the windows one at a time; every failure is a TokenFormatError. A prior-coded
    file's windows need its prior: `prior` (a `prior.TokenPrior`), else an installed one with the hash its header
    names; without it the reader refuses at once, or with `need_prior=False` only when windows are read (`heads`
    needs no prior)."""

    def __init__(self, source: str | os.PathLike | bytes, prior=None, need_prior: bool = True):
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
            self.prior, self.missing_prior = None, ""
            if self.header.codec == "prior":
                from .entropy import find_prior

                try:
                    self.prior = find_prior(self.header.prior_hash, prior, self.name)
                except ValueError as exc:
                    if need_prior:
                        raise TokenFormatError(str(exc)) from None
                    self.missing_prior = str(exc)
                if self.prior is not None and list(self.prior.config.levels) != self.header.levels:
                    raise TokenFormatError(f"{self.name}: its prior models other FSQ levels than the header's")
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
        if version in PRIOR_VERSIONS:
            blob = _inflate(blob, MAX_HEADER_BYTES, f"{self.name}: header", at_most=True, zdict=HEADER_DICTIONARY)
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
        if self.missing_prior:
            raise TokenFormatError(self.missing_prior)
        coder = None
        if self.prior is not None:
            from .entropy import PriorCoder

            coder = PriorCoder.for_file(self.prior, self.header, self.header.format_version)
        for index, payload, where in self._records():
            yield decode_window(payload, self.header, where, index, coder)

    def heads(self) -> Iterator[WindowHead]:
        """Each window's record head (`window_head`), every record and the trailer checked as `__iter__` checks them,
        nothing decoded."""
        for index, payload, where in self._records():
            yield window_head(payload, self.header, where, index)

    def _records(self) -> Iterator[tuple[int, bytes, str]]:
        """(index, payload, where) of each window record, its length and CRC checked; then the trailer."""
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
            yield index, payload, where
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
