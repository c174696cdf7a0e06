"""The `.itok` token file format: round trip, versioning, corruption, fuzzing, forged lengths, determinism."""

from __future__ import annotations

import json
import math
import struct
import tempfile
import tracemalloc
import zlib
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infotok.geometry import Geometry, window_spans
from infotok.tokens import (
    FORMAT_VERSION,
    FORMAT_VERSION_1D,
    MAGIC,
    MAX_HEADER_BYTES,
    READ_VERSIONS,
    TRAILER_MAGIC,
    TokenFormatError,
    TokenHeader,
    TokenReader,
    Tokens,
    TokenWindow,
    TokenWriter,
    encode_window,
    window_span,
)
from infotok.video import synthetic_video
from tests.conftest import tiny_model

FUZZ = settings(max_examples=200, deadline=None)
PRELUDE = struct.Struct("<4sHI")  # magic, version, header length (docs: the .itok layout)
RECORD = struct.Struct("<II")  # payload length, crc32
WINDOW = struct.Struct("<IIHHHddIII")  # start, end, t, h, w, rate, score, kept, mask bytes, index bytes
TRAILER = struct.Struct("<4sI")


# ------------------------------------------------------------------------------------ helpers
@lru_cache(maxsize=None)
def sample_tokens(strategy: str = "static", selection: str = "error", rate: float = 0.5) -> Tokens:
    """21 frames of 64x48 in 3 windows (9 frames, overlap 2) from the tiny random model; cached."""
    return tiny_model().tokenize(
        synthetic_video(21, 48, 64, seed=1), rate=rate, strategy=strategy, selection=selection, window=9, overlap=2
    )


@lru_cache(maxsize=None)
def valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return sample_tokens().save(Path(d, "t.itok")).read_bytes()


def layout(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(header bytes, [(start, end) of each window record]) of a valid file."""
    (n,) = struct.unpack_from("<I", data, 6)
    pos = header_bytes = PRELUDE.size + n + 4
    records = []
    while len(data) - pos > TRAILER.size:
        (length,) = struct.unpack_from("<I", data, pos)
        records.append((pos, pos + RECORD.size + length))
        pos += RECORD.size + length
    return header_bytes, records


def forge(
    header: TokenHeader | dict | bytes, payloads: list[bytes], count: int | None = None, version: int = FORMAT_VERSION
) -> bytes:
    """A file with correct checksums around whatever header and window payloads it is given."""
    if isinstance(header, TokenHeader):
        header = asdict(header)
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    out = PRELUDE.pack(MAGIC, version, len(blob)) + blob + struct.pack("<I", zlib.crc32(blob))
    for p in payloads:
        out += RECORD.pack(len(p), zlib.crc32(p)) + p
    return out + TRAILER.pack(TRAILER_MAGIC, len(payloads) if count is None else count)


def raw_payload(
    start=7,
    end=16,
    t=3,
    h=6,
    w=8,
    rate=0.5,
    score=0.0,
    kept=None,
    mask=None,
    indices=None,
    mask_bytes=None,
    index_bytes=None,
) -> bytes:
    """A window record payload with every field under the caller's control."""
    mask = np.ones((t, h, w), bool) if mask is None else mask
    kept = int(mask.sum()) if kept is None else kept
    indices = np.zeros(int(mask.sum()), "<u2") if indices is None else indices
    if mask_bytes is None:
        mask_bytes = zlib.compress(np.packbits(mask.ravel(), bitorder="little").tobytes())
    if index_bytes is None:
        index_bytes = zlib.compress(np.asarray(indices, "<u2").tobytes())
    return (
        WINDOW.pack(start, end, t, h, w, rate, score, kept, len(mask_bytes), len(index_bytes))
        + mask_bytes
        + index_bytes
    )


def payloads(tokens: Tokens) -> list[bytes]:
    return [encode_window(w, tokens.header.codebook_size) for w in tokens.windows]


def read_all(data: bytes, prior=None) -> Tokens:
    with TokenReader(data, prior) as reader:
        return Tokens(reader.header, list(reader))


def load_or_format_error(data: bytes, prior=None) -> Tokens | None:
    """Parse fully (a prior-coded file with `prior`); a TokenFormatError is fine (None), any other exception fails
    the test."""
    try:
        return read_all(data, prior)
    except TokenFormatError:
        return None


def format_error(data: bytes) -> str:
    with pytest.raises(TokenFormatError) as info:
        read_all(data)
    return str(info.value)


def assert_same_tokens(a: Tokens, b: Tokens) -> None:
    assert a.header == b.header
    assert len(a.windows) == len(b.windows)
    for x, y in zip(a.windows, b.windows):
        assert (x.start, x.end) == (y.start, y.end)
        assert x.rate == y.rate
        assert x.score == y.score or (math.isnan(x.score) and math.isnan(y.score))
        assert x.mask.dtype == y.mask.dtype == bool and np.array_equal(x.mask, y.mask)
        assert y.indices.dtype == np.uint16 and np.array_equal(x.indices, y.indices)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# --------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize(
    "strategy,selection,rate",
    [("static", "error", 0.5), ("uniform", "random", 0.3), ("global_elbo", "order", 0.25), ("static", "error", 1.0)],
)
def test_round_trip_keeps_masks_indices_rates_and_header(tmp_path, strategy, selection, rate):
    tokens = sample_tokens(strategy, selection, rate)
    assert len(tokens.windows) == 3
    if strategy == "static":
        assert any(w.kept < w.num_tokens for w in tokens.windows) == (rate < 1)
    path = tokens.save(tmp_path / "t.itok")
    back = Tokens.load(path)
    assert_same_tokens(tokens, back)
    assert back.ledger() == tokens.ledger()
    with TokenReader(path) as reader:
        windows = list(reader)
        header_bytes = reader.header_bytes
    assert [w.nbytes for w in windows] == [w.nbytes for w in tokens.windows]  # the writer's count is the reader's
    assert all(w.nbytes > RECORD.size + WINDOW.size for w in windows)
    assert path.stat().st_size == header_bytes + sum(w.nbytes for w in windows) + 8
    assert TokenReader(path.read_bytes()).header == tokens.header  # bytes and paths read the same


def test_streaming_writer_round_trip_and_header_written_last(tmp_path):
    model = tiny_model()
    path = tmp_path / "sub" / "stream.itok"
    writer = None
    stream = model.iter_tokenize(synthetic_video(21, 48, 64, seed=2), rate=0.5, strategy="static", window=9, overlap=2)
    for window in stream:
        if writer is None:
            first = stream.header
            assert first.num_frames == 0  # the frame count is only known at the end...
            writer = TokenWriter(path, first)
        writer.write(window)
        assert not path.exists()  # ...so nothing is at `path` before close
    writer.close()
    assert first.num_frames == 0 and stream.header.num_frames == 21  # headers handed out never change
    assert writer.header == stream.header
    back = Tokens.load(path)
    assert back.header.num_frames == 21 and [(w.start, w.end) for w in back.windows] == window_spans(21, 9, 2)
    assert writer.header_bytes + sum(w.nbytes for w in back.windows) + 8 == path.stat().st_size
    assert sorted(p.name for p in path.parent.iterdir()) == ["stream.itok"]  # no temporary files left


def test_writer_refuses_to_overwrite_and_leaves_nothing_on_error(tmp_path):
    tokens = sample_tokens()
    path = tokens.save(tmp_path / "t.itok")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        TokenWriter(path, tokens.header)
    assert path.read_bytes() == before
    with pytest.raises(RuntimeError):
        with TokenWriter(tmp_path / "new.itok", tokens.header) as writer:
            writer.write(tokens.windows[0])
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.itok"]


@pytest.mark.parametrize("case", ["gap", "short middle", "grid", "too few", "too many", "bad rate", "indices"])
def test_writer_refuses_windows_a_reader_would_reject(tmp_path, case):
    tokens = sample_tokens()
    w0, w1, w2 = tokens.windows
    windows = {
        "gap": [w0, replace(w1, start=8, end=17), w2],
        "grid": [replace(w0, mask=w0.mask[:, :5], indices=w0.indices[: int(w0.mask[:, :5].sum())])],
        "short middle": [replace(w0, end=8), w1, w2],
        "too few": [w0, w1],
        "too many": [w0, w1, w2, replace(w2, start=21, end=22)],
        "bad rate": [replace(w0, rate=float("nan"))],
        "indices": [replace(w0, indices=w0.indices[:-1])],
    }[case]
    with pytest.raises(ValueError):
        Tokens(tokens.header, windows).save(tmp_path / "t.itok")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_round_trip_of_arbitrary_valid_windows(data):
    n = data.draw(st.integers(1, 40), "frames")
    window = data.draw(st.integers(1, 12), "window")
    overlap = data.draw(st.integers(0, window - 1), "overlap")
    width, height = data.draw(st.integers(1, 40), "width"), data.draw(st.integers(1, 40), "height")
    levels = data.draw(st.sampled_from([[8, 8, 8, 5, 5, 5], [2], [4, 4], [65536]]), "levels")
    header = replace(
        sample_tokens().header,
        num_frames=n,
        window=window,
        overlap=overlap,
        width=width,
        height=height,
        levels=levels,
        fps=data.draw(st.floats(0.5, 240)),
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    windows = []
    for start, end in window_spans(n, window, overlap):
        shape = Geometry(4, 8).latent_shape(end - start, height, width)
        mask = rng.random(shape) < data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
        indices = rng.integers(0, header.codebook_size, int(mask.sum())).astype(np.uint16)
        rate = data.draw(st.floats(1 / 16, 1))
        score = data.draw(st.one_of(st.just(float("nan")), st.floats(-1e9, 1e9)))
        windows.append(TokenWindow(start, end, rate, score, mask, indices))
    tokens = Tokens(header, windows)
    with tempfile.TemporaryDirectory() as d:
        data_bytes = tokens.save(Path(d, "t.itok")).read_bytes()
    assert_same_tokens(tokens, read_all(data_bytes))


# --------------------------------------------------------------------------- version and magic
@pytest.mark.parametrize(
    "version,advice", [(max(READ_VERSIONS) + 1, "upgrade infotok"), (0, "re-encode"), (65535, "upgrade infotok")]
)
def test_other_format_versions_are_refused_by_number(version, advice):
    data = bytearray(valid_bytes())
    struct.pack_into("<H", data, 4, version)
    message = format_error(bytes(data))
    assert f"format version {version} is not supported" in message and advice in message


def test_a_grid_file_claiming_version_2_is_refused():
    data = bytearray(valid_bytes())
    struct.pack_into("<H", data, 4, FORMAT_VERSION_1D)
    assert "format version 1 in a version 2 file" in format_error(bytes(data))


@pytest.mark.parametrize("magic", [b"ITOX", b"\x00\x00\x00\x00", b"itok", b"\x89PNG"])
def test_bad_magic_is_refused(magic):
    assert "bad magic" in format_error(magic + valid_bytes()[4:])


def test_other_files_are_refused_cleanly(tmp_path):
    assert "no such token file" in str(pytest.raises(TokenFormatError, Tokens.load, tmp_path / "none.itok").value)
    assert "no such token file" in str(pytest.raises(TokenFormatError, Tokens.load, tmp_path).value)
    mp4 = tmp_path / "video.itok"
    mp4.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(100))
    assert "bad magic" in str(pytest.raises(TokenFormatError, Tokens.load, mp4).value)
    assert "truncated" in format_error(b"")


# ------------------------------------------------------------------------------- corruption
def test_header_corruption_is_caught_by_its_checksum():
    header_bytes, _ = layout(valid_bytes())
    for offset in (PRELUDE.size, PRELUDE.size + 20, header_bytes - 5, header_bytes - 1):
        assert "header checksum mismatch" in format_error(flip(valid_bytes(), offset, 3))


@pytest.mark.parametrize("k", [0, 1, 2])
def test_a_flipped_byte_in_window_k_names_window_k(tmp_path, k):
    data = valid_bytes()
    _, records = layout(data)
    start, end = records[k]
    for offset in (start + RECORD.size, start + RECORD.size + 7, (start + end) // 2, end - 1):
        for bit in (0, 7):
            bad = tmp_path / f"bad{offset}_{bit}.itok"
            bad.write_bytes(flip(data, offset, bit))
            with pytest.raises(TokenFormatError, match=f"window {k}: checksum mismatch"):
                Tokens.load(bad)
    for offset in range(start, start + RECORD.size):  # the length and checksum fields of window k
        assert f"window {k}" in format_error(flip(data, offset, 5))


def test_the_reader_streams_good_windows_before_a_corrupt_one():
    data = valid_bytes()
    _, records = layout(data)
    reader = TokenReader(flip(data, records[2][0] + 40))
    it = iter(reader)
    assert [next(it).start, next(it).start] == [0, 7]
    with pytest.raises(TokenFormatError, match="window 2"):
        next(it)


def test_truncation_at_every_offset_raises_token_format_error_naming_the_part():
    data = valid_bytes()
    header_bytes, records = layout(data)
    for cut in range(len(data)):
        message = format_error(data[:cut])
        if cut < header_bytes:
            assert "header" in message, (cut, message)
        elif cut < records[-1][1]:
            k = next(i for i, (s, e) in enumerate(records) if s <= cut < e)
            assert f"window {k}" in message, (cut, message)
        else:
            assert "trailer" in message, (cut, message)


def test_truncated_files_on_disk(tmp_path):
    data = valid_bytes()
    _, records = layout(data)
    for cut in (1, 10, records[0][0], records[1][0] + 3, records[2][1] - 1, len(data) - 4):
        path = tmp_path / f"cut{cut}.itok"
        path.write_bytes(data[:cut])
        with pytest.raises(TokenFormatError):
            Tokens.load(path)


def test_missing_extra_and_reordered_windows_are_refused():
    tokens = sample_tokens()
    p = payloads(tokens)
    assert "window 2: missing; the file ends after 2 of the 3 windows" in format_error(forge(tokens.header, p[:2]))
    assert "window 0: missing" in format_error(forge(tokens.header, []))
    assert "window 1: holds frames 14-21" in format_error(forge(tokens.header, [p[0], p[2]]))
    assert "window 0: holds frames 7-16" in format_error(forge(tokens.header, [p[1], p[0], p[2]]))
    assert "window 1: holds frames 0-9" in format_error(forge(tokens.header, [p[0], p[0], p[1], p[2]]))
    assert "unexpected bytes after window 2" in format_error(forge(tokens.header, p + [p[2]]))
    assert "unexpected bytes after window 2" in format_error(valid_bytes() + b"\x00")
    assert "window count mismatch" in format_error(forge(tokens.header, p, count=4))
    assert "trailer corrupt" in format_error(valid_bytes()[:-8] + b"ITNX" + valid_bytes()[-4:])


# ------------------------------------------------------- forged files (checksums made to match)
def header_dict(**changes) -> dict:
    return asdict(sample_tokens().header) | changes


HEADER_CASES = [
    (b"[1, 2]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b"\xff\xfe{", "header is not valid"),
    (b"{", "header is not valid"),
    (b"[" * 100_000, "nested too deeply"),
    (json.dumps(header_dict(levels=[1e308, 1e308])).encode(), "levels"),
    (json.dumps(header_dict(levels=[float("inf")])).encode(), "levels"),
    (json.dumps(header_dict(levels=[256, 256, 2])).encode(), "more than 65536 codes"),
    (json.dumps(header_dict(levels=[2**62 + 1, 4])).encode(), "more than 65536 codes"),
    (json.dumps(header_dict(levels="88")).encode(), "levels"),
    (json.dumps(header_dict(levels=[])).encode(), "levels"),
    (json.dumps(header_dict(levels=[[8], 8])).encode(), "levels"),
    (json.dumps(header_dict(codec="lzma")).encode(), "unknown codec"),
    (json.dumps(header_dict(width=0)).encode(), "width must be a positive integer"),
    (json.dumps(header_dict(height=-48)).encode(), "height must be a positive integer"),
    (json.dumps(header_dict(width=64.5)).encode(), "width must be a positive integer"),
    (json.dumps(header_dict(num_frames="21")).encode(), "num_frames must be a positive integer"),
    (json.dumps(header_dict(num_frames=True)).encode(), "num_frames must be a positive integer"),
    (json.dumps(header_dict(spatial_factor=0)).encode(), "spatial_factor"),
    (json.dumps(header_dict(window=0)).encode(), "window must be a positive integer"),
    (json.dumps(header_dict(overlap=9)).encode(), "overlap must be"),
    (json.dumps(header_dict(overlap=-1)).encode(), "overlap must be"),
    (json.dumps(header_dict(fps=0)).encode(), "fps"),
    (json.dumps(header_dict(fps=float("nan"))).encode(), "fps"),
    (json.dumps(header_dict(fps=float("inf"))).encode(), "fps"),
    (json.dumps(header_dict(model=None)).encode(), "model must be a string"),
    (json.dumps(header_dict(resize=0)).encode(), "resize"),
    (json.dumps(header_dict(unknown_field=1)).encode(), "unknown_field"),
    (json.dumps({k: v for k, v in header_dict().items() if k != "width"}).encode(), "width"),
    (json.dumps(header_dict(num_frames=10**400)).encode(), "more than a file can hold"),
    (json.dumps(header_dict(num_frames=2**32)).encode(), "more than a file can hold"),
]


@pytest.mark.parametrize("blob,expected", HEADER_CASES, ids=[e for _, e in HEADER_CASES])
def test_forged_headers_are_refused_with_the_reason(blob, expected):
    message = format_error(forge(blob, payloads(sample_tokens())))
    assert expected in message and message.startswith("<bytes>: header is not valid")


def test_header_geometry_must_match_the_windows():
    tokens = sample_tokens()
    p = payloads(tokens)
    assert "window 0: token grid 3x6x8 does not match the header's 64x100 frames" in format_error(
        forge(header_dict(height=100), p)
    )
    assert "window 0: token grid" in format_error(forge(header_dict(width=8), p))
    assert (
        "window 2: holds frames 14-21 but the header's window/overlap/frame count place it at frames 14-22"
        in format_error(forge(header_dict(num_frames=22), p))
    )
    assert "window 2: impossible geometry" in format_error(forge(header_dict(num_frames=20), p))
    assert "window 0: holds frames 0-9 but" in format_error(forge(header_dict(window=10), p))


PAYLOAD_CASES = [
    (raw_payload()[: WINDOW.size - 1], "record too short"),
    (raw_payload(t=0), "impossible geometry"),
    (raw_payload(t=65535, h=65535, w=65535, mask=np.ones((3, 6, 8), bool)), "impossible geometry"),
    (raw_payload(kept=145), "impossible geometry"),
    (raw_payload(start=9, end=9), "impossible geometry"),
    (raw_payload(end=22), "impossible geometry"),
    (raw_payload(kept=100), "mask keeps 144 positions but the record says 100"),
    (raw_payload(indices=np.full(144, 64000)), "token index out of range for 64000 codes"),
    (raw_payload(rate=0.0), "invalid rate"),
    (raw_payload(rate=float("nan")), "invalid rate"),
    (raw_payload(rate=1.5), "invalid rate"),
    (raw_payload() + b"\x00", "section lengths do not add up"),
    (raw_payload(mask_bytes=b"not zlib"), "mask: corrupt compressed data"),
    (raw_payload(mask_bytes=zlib.compress(bytes(17))), "mask: compressed data does not hold the expected 18 bytes"),
    (raw_payload(mask_bytes=zlib.compress(bytes(19))), "mask: compressed data does not hold"),
    (raw_payload(mask_bytes=zlib.compress(b"\xff" * 18)[:-3]), "mask: compressed data does not hold"),
    (raw_payload(mask_bytes=zlib.compress(b"\xff" * 18) + b"junk"), "mask: compressed data does not hold"),
    (raw_payload(index_bytes=zlib.compress(bytes(290))), "indices: compressed data does not hold the expected 288"),
    (raw_payload(mask=np.zeros((3, 6, 8), bool), index_bytes=zlib.compress(b"x")), "indices: compressed data"),
]


@pytest.mark.parametrize("payload,expected", PAYLOAD_CASES, ids=[e for _, e in PAYLOAD_CASES])
def test_forged_window_payloads_are_refused_naming_the_window(payload, expected):
    p = payloads(sample_tokens())
    message = format_error(forge(sample_tokens().header, [p[0], payload, p[2]]))
    assert message.startswith("<bytes>: window 1") and expected in message, message


def test_a_window_of_only_dropped_tokens_is_valid():
    tokens = sample_tokens()
    empty = replace(tokens.windows[1], mask=np.zeros_like(tokens.windows[1].mask), indices=np.zeros(0, np.uint16))
    back = read_all(forge(tokens.header, [payloads(tokens)[0], encode_window(empty, 64000), payloads(tokens)[2]]))
    assert back.windows[1].kept == 0 and back.windows[1].indices.dtype == np.uint16


# ------------------------------------------------------------ forged lengths: refused, memory bounded
def assert_refused_cheaply(data: bytes, expected: str, peak_limit: int = 4 << 20) -> None:
    """Refused with the expected message and without allocating what the forged fields claim (how
    fast is measured by `make bench`, not asserted here)."""
    tracemalloc.start()
    try:
        message = format_error(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert expected in message
    assert peak < peak_limit + 2 * len(data), f"allocated {peak / 1e6:.1f} MB for a {len(data)} byte file"


@pytest.mark.parametrize("length", [0xFFFFFFF0, 0xFFFFFFFF, 2**31, 2**26 + 1, 10**6])
def test_forged_record_length_is_refused_without_allocating_it(length):
    data = bytearray(valid_bytes())
    _, records = layout(bytes(data))
    struct.pack_into("<I", data, records[1][0], length)
    assert_refused_cheaply(bytes(data), "window 1")


@pytest.mark.parametrize("length", [2**31, 0xFFFFFFFF, MAX_HEADER_BYTES + 1, MAX_HEADER_BYTES, 10**5])
def test_forged_header_length_is_refused_without_allocating_it(length):
    data = bytearray(valid_bytes())
    struct.pack_into("<I", data, 6, length)
    assert_refused_cheaply(bytes(data), "header")


def test_zlib_bomb_in_an_empty_index_section_is_not_inflated():
    """A window keeping 0 tokens expects 0 index bytes; zlib's max_length=0 means *no limit*."""
    c = zlib.compressobj(9)
    bomb = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()  # 64 MB of zeros in ~64 kB
    payload = raw_payload(mask=np.zeros((3, 6, 8), bool), index_bytes=bomb)
    p = payloads(sample_tokens())
    assert_refused_cheaply(forge(sample_tokens().header, [p[0], payload, p[2]]), "window 1 indices")


def test_zlib_bomb_in_the_mask_section_is_not_inflated():
    c = zlib.compressobj(9)
    bomb = b"".join(c.compress(b"\xff" * (1 << 20)) for _ in range(64)) + c.flush()
    payload = raw_payload(mask_bytes=bomb)
    p = payloads(sample_tokens())
    assert_refused_cheaply(forge(sample_tokens().header, [p[0], payload, p[2]]), "window 1 mask")


def test_largest_allowed_window_geometry_with_tiny_streams_is_bounded():
    """t*h*w = 2**24 passes the size check; the streams still cannot make the reader allocate much."""
    header = header_dict(width=8 * 4096, height=8 * 4096, num_frames=1, window=1, overlap=0)
    payload = raw_payload(
        start=0,
        end=1,
        t=1,
        h=4096,
        w=4096,
        kept=2**24,
        mask_bytes=zlib.compress(b"\xff" * 100),
        index_bytes=zlib.compress(b"\x00" * 100),
    )
    assert_refused_cheaply(forge(header, [payload]), "mask: compressed data does not hold", peak_limit=8 << 20)


@FUZZ
@given(field=st.sampled_from(["header", "record"]), value=st.integers(0, 2**32 - 1))
def test_any_forged_length_field_fails_fast_or_parses(field, value):
    data = bytearray(valid_bytes())
    _, records = layout(bytes(data))
    struct.pack_into("<I", data, 6 if field == "header" else records[0][0], value)
    tokens = load_or_format_error(bytes(data))
    assert tokens is None or bytes(data) == valid_bytes()


# --------------------------------------------------------------------------------- fuzzing
@FUZZ
@given(
    st.one_of(
        st.binary(max_size=1200),
        st.binary(max_size=1200).map(lambda b: MAGIC + struct.pack("<H", FORMAT_VERSION) + b),
        st.binary(max_size=600).map(
            lambda b: PRELUDE.pack(MAGIC, FORMAT_VERSION, len(b)) + b + struct.pack("<I", zlib.crc32(b))
        ),
        st.binary(max_size=600).map(  # version 4: a zlib-coded header
            lambda b: PRELUDE.pack(MAGIC, 4, len(b)) + b + struct.pack("<I", zlib.crc32(b))
        ),
    )
)
def test_random_bytes_raise_only_token_format_error(data):
    assert load_or_format_error(data) is None


MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
    st.integers(0, 2**20),
    st.integers(0, 255),
)


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for op, pos, value in mutations:
        pos %= len(out) + 1
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << (value % 8)
        elif op == "set" and pos < len(out):
            out[pos] = value
        elif op == "insert":
            out[pos:pos] = bytes([value]) * (1 + value % 4)
        elif op == "delete":
            del out[pos : pos + 1 + value % 16]
        elif op == "truncate":
            del out[pos:]
        elif op == "duplicate":
            out[pos:pos] = out[pos : pos + 1 + value]
    return bytes(out)


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_every_change_to_a_valid_file_is_detected(mutations):
    data = mutate(valid_bytes(), mutations)
    tokens = load_or_format_error(data)
    if data == valid_bytes():
        assert_same_tokens(tokens, sample_tokens())
    else:
        assert tokens is None, "a changed file was accepted"


@FUZZ
@given(st.integers(0, 2), st.lists(MUTATION, min_size=1, max_size=3))
def test_window_payload_mutations_behind_a_valid_checksum(k, mutations):
    """Checksums recomputed, so the record parser itself meets the damage."""
    p = payloads(sample_tokens())
    p[k] = mutate(p[k], mutations)
    assert_self_consistent(load_or_format_error(forge(sample_tokens().header, p)))


def assert_self_consistent(tokens: Tokens | None) -> None:
    """Whatever a reader accepted of a damaged `sample_tokens()` file is self-consistent and decodable."""
    for i, w in enumerate(tokens.windows if tokens is not None else []):
        assert (w.start, w.end) == window_span(tokens.header, i)
        assert w.mask.shape == sample_tokens().windows[i].mask.shape
        assert w.kept == int(w.mask.sum()) and (w.indices < tokens.header.codebook_size).all()
        assert 0 < w.rate <= 1


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_header_json_mutations_behind_a_valid_checksum(mutations):
    blob = json.dumps(asdict(sample_tokens().header)).encode()
    load_or_format_error(forge(mutate(blob, mutations), payloads(sample_tokens())))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(sorted(asdict(sample_tokens().header))), JSON)
def test_header_fields_of_any_json_type(field, value):
    tokens = load_or_format_error(forge(header_dict(**{field: value}), payloads(sample_tokens())))
    if tokens is not None:
        assert json.dumps(getattr(tokens.header, field)) == json.dumps(value)


@pytest.mark.parametrize("value", [True, 1.0])
def test_a_format_version_that_is_not_an_integer_is_refused(value):  # true and 1.0 equal 1 in Python
    assert load_or_format_error(forge(header_dict(format_version=value), payloads(sample_tokens()))) is None


# ------------------------------------------------------------------------------ determinism
def test_encoding_the_same_array_twice_gives_identical_files(tmp_path):
    video = synthetic_video(21, 48, 64, seed=5)
    model = tiny_model()
    files = []
    for i, m in enumerate([model, model, tiny_model()]):  # the same model twice, then a rebuilt one
        tokens = m.tokenize(video, rate=0.4, strategy="uniform", selection="random", window=9, overlap=2, seed=3)
        files.append(tokens.save(tmp_path / f"{i}.itok").read_bytes())
    assert files[0] == files[1] == files[2]
    other = model.tokenize(video, rate=0.4, strategy="uniform", selection="random", window=9, overlap=2, seed=4)
    assert other.save(tmp_path / "other.itok").read_bytes() != files[0]  # the seed does matter


def test_cli_encode_is_deterministic(tmp_path, tiny_checkpoint, sample_video):
    from infotok.cli import main

    for name in ("a.itok", "b.itok"):
        assert (
            main(
                [
                    "encode",
                    str(sample_video),
                    "-o",
                    str(tmp_path / name),
                    "--checkpoint",
                    str(tiny_checkpoint),
                    "--window",
                    "9",
                    "--overlap",
                    "2",
                    "--rate",
                    "0.5",
                ]
            )
            == 0
        )
    assert (tmp_path / "a.itok").read_bytes() == (tmp_path / "b.itok").read_bytes()


def test_the_old_path_of_token_batch_still_works_with_a_deprecation_warning():
    from infotok.batch import TokenBatch

    with pytest.warns(DeprecationWarning, match="infotok.batch.TokenBatch"):
        from infotok.tokens import TokenBatch as old
    assert old is TokenBatch
