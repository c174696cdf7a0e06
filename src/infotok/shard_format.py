"""What a shard folder holds: the Parquet schema, shard rows to and from token windows and `Tokens`, the
manifest and its checks (docs/FORMAT.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .extras import require

pa = require("pyarrow", "infotok.shards")  # the optional extra `scale`
pc = require("pyarrow.compute", "infotok.shards")
pq = require("pyarrow.parquet", "infotok.shards")

from .tokens import TokenHeader, Tokens, TokenWindow  # noqa: E402 (after the extra is checked, so its absence is one clear line)

SHARD_FORMAT = "infotok-shards"
SHARD_VERSION = 1
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
SHARD_PREFIX, SHARD_SUFFIX = "shard-", ".parquet"
ROW_GROUP_WINDOWS = 256  # windows per Parquet row group: the unit `TokenShards` hands to a reader

SCHEMA = pa.schema(
    [
        ("video", pa.string()),  # path of the source video (absolute)
        ("video_id", pa.string()),  # 16 hex digits of the SHA-256 of `video`
        ("window", pa.int32()),  # index of the window in its video, from 0
        ("num_windows", pa.int32()),  # windows of the video
        ("start", pa.int32()),  # first frame of the window
        ("end", pa.int32()),  # one past its last frame
        ("num_frames", pa.int32()),  # frames of the tokenized video
        ("fps", pa.float64()),
        ("width", pa.int32()),  # size of the tokenized frames (after resize, before padding)
        ("height", pa.int32()),
        ("source_width", pa.int32()),  # size of the source video
        ("source_height", pa.int32()),
        ("resize", pa.int32()),  # short side the source was resized to, or null
        ("rate", pa.float64()),  # the window's rate
        ("score", pa.float64()),  # the router's clip score (NaN where no router pass ran)
        ("kept", pa.int32()),  # kept tokens K
        ("t", pa.int32()),  # token grid of the window
        ("h", pa.int32()),
        ("w", pa.int32()),
        ("mask", pa.binary()),  # keep-mask, t*h*w bits in raster order, np.packbits little bit order
        ("indices", pa.list_(pa.uint16())),  # the K kept indices, raster order of the kept positions
    ]
)
# zstd 9; no dictionary for token columns (16-bit codes and mask bits do not repeat as whole values)
# and no min/max statistics of the mask and indices (they would store blobs of them): 1.5-2x smaller
# than pyarrow's defaults, about the size of the same windows' .itok files
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=9,
    use_dictionary=["video", "video_id"],
    write_statistics=[n for n in SCHEMA.names if n not in ("mask", "indices")],
)
# what a shard row says about its video as a whole (the same on every row of it)
VIDEO_FIELDS = (
    "video",
    "video_id",
    "num_windows",
    "num_frames",
    "fps",
    "width",
    "height",
    "source_width",
    "source_height",
    "resize",
)


class ShardError(ValueError):
    """A shard folder that is missing, damaged, or made with another model or other settings."""


def video_id(path: str | os.PathLike) -> str:
    """The id of a video in shards: 16 hex digits of the SHA-256 of its path as stored."""
    return hashlib.sha256(os.fspath(path).encode()).hexdigest()[:16]


def pack_mask(mask: np.ndarray) -> bytes:
    """bool [t, h, w] -> raster-order bits, little bit order (as in `.itok` records, before zlib)."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="little").tobytes()


def unpack_mask(data: bytes, t: int, h: int, w: int) -> np.ndarray:
    n = t * h * w
    bits = np.frombuffer(data, np.uint8)
    if bits.size != (n + 7) // 8:
        raise ShardError(f"a keep-mask of a {t}x{h}x{w} grid takes {(n + 7) // 8} bytes, not {bits.size}")
    return np.unpackbits(bits, count=n, bitorder="little").astype(bool).reshape(t, h, w)


def window_record(window: TokenWindow, index: int, video: dict) -> dict:
    """One shard row (a dict of SCHEMA's fields) from a window and its video's fields (VIDEO_FIELDS
    less video_id, which follows from the path)."""
    mask = np.asarray(window.mask, dtype=bool)
    t, h, w = mask.shape
    return {
        **{k: video.get(k) for k in VIDEO_FIELDS},
        "video_id": video_id(video["video"]),
        "window": index,
        "start": int(window.start),
        "end": int(window.end),
        "rate": float(window.rate),
        "score": float(window.score),
        "kept": window.kept,
        "t": t,
        "h": h,
        "w": w,
        "mask": pack_mask(mask),
        "indices": np.asarray(window.indices, np.uint16),
    }


def records_table(records: Sequence[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rows as dicts (indices as uint16 arrays) -> an Arrow table of `schema` (SCHEMA, or SCHEMA plus
    extra columns), the kept indices as one list column without a Python object per token."""
    columns = {}
    for field in schema:
        if field.name == "indices":
            parts = [np.asarray(r["indices"], np.uint16) for r in records]
            offsets = np.zeros(len(parts) + 1, np.int32)
            np.cumsum([p.size for p in parts], out=offsets[1:])
            values = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
            columns[field.name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint16()))
        else:
            columns[field.name] = pa.array([r.get(field.name) for r in records], field.type)
    return pa.table(columns, schema=schema)


def tokens_table(path: str | os.PathLike, tokens: Tokens) -> pa.Table:
    """A whole video's `Tokens` (e.g. from `model.tokenize`) as shard rows; `path` as stored."""
    h = tokens.header
    video = {
        "video": os.fspath(path),
        "num_windows": len(tokens.windows),
        "num_frames": h.num_frames,
        "fps": h.fps,
        "width": h.width,
        "height": h.height,
        "source_width": h.source_width,
        "source_height": h.source_height,
        "resize": h.resize,
    }
    return records_table([window_record(w, i, video) for i, w in enumerate(tokens.windows)])


def table_windows(table: pa.Table) -> list[TokenWindow]:
    """Shard rows -> TokenWindows, in the order of the rows."""
    t, h, w = (table.column(k).to_numpy() for k in ("t", "h", "w"))
    masks = table.column("mask").to_pylist()
    indices = _list_values(table.column("indices"))
    rate, score, start, end = (table.column(k).to_numpy() for k in ("rate", "score", "start", "end"))
    out = []
    for i in range(table.num_rows):
        mask = unpack_mask(masks[i], int(t[i]), int(h[i]), int(w[i]))
        idx = indices[i]
        if idx.size != int(mask.sum()):
            raise ShardError(f"a row's mask keeps {int(mask.sum())} positions but it holds {idx.size} indices")
        out.append(TokenWindow(int(start[i]), int(end[i]), float(rate[i]), float(score[i]), mask, idx))
    return out


def _list_values(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A list<uint16> column -> one uint16 array per row (views of the column's buffers)."""
    out = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False)
        out += [values[offsets[i] : offsets[i + 1]] for i in range(len(chunk))]
    return out


def table_tokens(table: pa.Table, manifest: dict) -> Tokens:
    """The rows of one video (any order) -> `Tokens`: the header an `.itok` file of the same video,
    model and settings would have, and its windows in order."""
    if table.num_rows == 0:
        raise ShardError("no rows to make tokens from")
    if len(set(table.column("video").to_pylist())) != 1:
        raise ShardError("rows of several videos given; pass one video's rows")
    table = table.sort_by([("window", "ascending")])
    row = table.slice(0, 1).to_pylist()[0]
    if table.column("window").to_pylist() != list(range(row["num_windows"])):
        raise ShardError(
            f"{row['video']}: the rows hold windows {table.column('window').to_pylist()} of its {row['num_windows']}"
        )
    model, s = manifest["model"], manifest["settings"]
    windows = table_windows(table)
    one_d = {k: model[k] for k in ("layout", "registers", "region")} if model.get("layout") == "1d" else {}
    header = TokenHeader(
        model=model["name"],
        model_hash=model["model_hash"],
        config_hash=model["config_hash"],
        levels=list(model["levels"]),
        temporal_factor=model["temporal_factor"],
        spatial_factor=model["spatial_factor"],
        width=row["width"],
        height=row["height"],
        source_width=row["source_width"],
        source_height=row["source_height"],
        fps=row["fps"],
        num_frames=row["num_frames"],
        window=s["window"],
        overlap=s["overlap"],
        strategy=s["strategy"],
        selection=s["selection"],
        # a 1D run's rate is each video's own (its windows' mean), as in its .itok file
        avg_rate=float(np.mean([w.rate for w in windows])) if one_d else s["rate"],
        score_mean=model["score_mean"],
        resize=row["resize"],
        fill=s.get("fill", "mask"),  # manifests from before the fill are "mask"
        target_psnr=s.get("target_psnr"),
        **one_d,
    )
    return Tokens(header, windows)


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{root}: no {MANIFEST}; not a shard folder (or no shard was finished yet)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: not an infotok shard manifest")
    if manifest.get("version") != SHARD_VERSION:
        raise ShardError(
            f"{path}: shard format version {manifest.get('version')} is not supported by this "
            f"infotok (reads version {SHARD_VERSION})"
        )
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shard_files(root: str | os.PathLike, manifest: dict | None = None) -> list[Path]:
    """The finished shards of a folder, in order (for `datasets.load_dataset("parquet", data_files=...)`):
    only those the manifest lists, never a file a killed run left behind."""
    manifest = manifest or read_manifest(root)
    return [Path(root) / s["file"] for s in manifest["shards"]]


def verify_shards(root: str | os.PathLike) -> list[str]:
    """Check every listed shard against the manifest (bytes and SHA-256); returns the problems found."""
    manifest = read_manifest(root)
    problems = []
    for s in manifest["shards"]:
        path = Path(root) / s["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != s["bytes"] or _sha256(path) != s["sha256"]:
            problems.append(f"{path}: checksum mismatch (damaged or replaced)")
    return problems
