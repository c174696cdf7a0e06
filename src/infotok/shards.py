"""Tokens of whole datasets as Parquet shards: the schema, the writer, the manifest and a PyTorch reader.

A shard folder holds `shard-NNNNN.parquet` files (one row per window, schema `SCHEMA`, see
docs/FORMAT.md), `manifest.json` and `failures.jsonl`. A video never spans two shards, and it is
*complete* once the manifest lists it: a shard is written under a temporary name, renamed when it is
whole, and only then entered in the manifest (itself replaced atomically). So a run killed at any
point leaves finished shards intact, and a rerun (`ShardWriter` on the same folder) skips the
complete videos, deletes what the killed run left half done, and redoes the rest.

`TokenShards` streams the windows to a training job: row groups are split across data-loader
workers and distributed ranks, each window is yielded once, as a padded grid or as the flat
sequence of kept tokens in raster order. `load_video_tokens` turns one video's rows back into
`Tokens` (header + windows), which `InfoTok.detokenize` decodes exactly like an `.itok` file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .extras import require

pa = require("pyarrow", "infotok.shards")  # the optional extra `scale`
pc = require("pyarrow.compute", "infotok.shards")
pq = require("pyarrow.parquet", "infotok.shards")

from .files import atomic_write  # noqa: E402 (after the extra is checked, so its absence is one clear line)
from .tokens import TokenHeader, Tokens, TokenWindow  # noqa: E402

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


# ------------------------------------------------------------------------------------- rows
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


# --------------------------------------------------------------------------------- manifest
def model_identity(model) -> dict:
    """What the manifest records of the model: name, hashes, config, and what a decoder needs."""
    return {
        "name": model.name,
        "model_hash": model.model_hash,
        "weights_hash": model.weights_hash,
        "config_hash": model.config_hash,
        "levels": list(model.base.levels),
        "temporal_factor": model.geometry.temporal_factor,
        "spatial_factor": model.geometry.spatial_factor,
        "score_mean": float(model.score_mean),
        "config": model.config_dict(),
    }


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


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


class ShardWriter:
    """Writes complete videos into shards of about `windows_per_shard` windows, and the manifest.

    `identity` (`model_identity`) and `settings` (the tokenization settings) must equal those a
    folder was begun with, or it is refused (ShardError); `overwrite` starts the folder afresh
    instead. Opening a folder deletes what a killed run left unfinished (temporary files, shards the
    manifest does not list) and forgets listed shards that are gone or changed size (their videos are
    done again). `add` takes one *whole* video's rows; a shard is written when enough are buffered,
    and by `close`. `fail` records a video that could not be tokenized in failures.jsonl at once.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        identity: dict,
        settings: dict,
        windows_per_shard: int = 2048,
        overwrite: bool = False,
        row_group_windows: int = ROW_GROUP_WINDOWS,
    ):
        if windows_per_shard < 1 or row_group_windows < 1:
            raise ValueError("windows_per_shard and row_group_windows must be positive")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ShardError(f"{self.root}: exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.windows_per_shard, self.row_group_windows = windows_per_shard, row_group_windows
        self.identity, self.settings = identity, settings
        if overwrite:
            for p in self._own_files():
                p.unlink()
        self.manifest = self._open()
        self.failures: list[dict] = []  # this run's, as in failures.jsonl
        self.manifest["failures"] = self.failures
        self._clean()
        self.complete = {v["video"]: v for v in self.manifest["videos"]}
        self._failures = open(self.root / FAILURES, "w")  # the failures of this run
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.written: list[dict] = []  # shards written by this writer

    def _own_files(self) -> list[Path]:
        return [
            p
            for p in self.root.iterdir()
            if p.is_file()
            and (
                p.name in (MANIFEST, FAILURES)
                or (p.name.startswith(SHARD_PREFIX) and p.name.endswith(SHARD_SUFFIX))
                or (
                    p.name.startswith(".")
                    and p.name.endswith(".tmp")
                    and p.name[1:].startswith((SHARD_PREFIX, MANIFEST))
                )
            )
        ]

    def _open(self) -> dict:
        if not (self.root / MANIFEST).exists():
            return {
                "format": SHARD_FORMAT,
                "version": SHARD_VERSION,
                "model": self.identity,
                "settings": self.settings,
                "counts": {},
                "shards": [],
                "videos": [],
                "failures": [],
            }
        manifest = read_manifest(self.root)
        # what encodes: the whole weights file (manifests from before weights_hash name it model_hash)
        theirs = manifest.get("model", {})
        theirs = theirs | {"weights_hash": theirs.get("weights_hash", theirs.get("model_hash"))}
        ours = self.identity
        for key in ("weights_hash", "config_hash"):
            if theirs.get(key) != ours.get(key):
                raise ShardError(
                    f"{self.root} holds tokens of model {theirs.get('name')!r} ({key} "
                    f"{theirs.get(key)}), not of {ours.get('name')!r} ({ours.get(key)}); "
                    "use another output folder, or --overwrite to start it afresh"
                )
        if manifest.get("settings") != self.settings:
            diff = {
                k: (manifest.get("settings", {}).get(k), v)
                for k, v in self.settings.items()
                if manifest.get("settings", {}).get(k) != v
            }
            raise ShardError(
                f"{self.root} was begun with other settings "
                + ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in diff.items())
                + "; use the same ones to resume, another output folder, or --overwrite"
            )
        return manifest

    def _clean(self) -> None:
        """Forget shards that are gone or damaged, delete what no manifest lists."""
        listed = []
        for s in self.manifest["shards"]:
            path = self.root / s["file"]
            if path.is_file() and path.stat().st_size == s["bytes"]:
                listed.append(s)
        if len(listed) != len(self.manifest["shards"]):
            keep = {s["file"] for s in listed}
            self.manifest["shards"] = listed
            self.manifest["videos"] = [v for v in self.manifest["videos"] if v["shard"] in keep]
            self._write_manifest()
        keep = {s["file"] for s in listed} | {MANIFEST, FAILURES}
        for p in self._own_files():
            if p.name not in keep:
                p.unlink()

    def is_complete(self, path: str | os.PathLike) -> bool:
        return os.fspath(path) in self.complete

    # ------------------------------------------------------------------------------- writing
    def add(self, table: pa.Table) -> dict | None:
        """Buffer one whole video's rows (any order, one row per window); returns the shard this
        wrote, if the buffer filled one."""
        videos = set(table.column("video").to_pylist())
        if len(videos) != 1:
            raise ValueError(f"add takes the rows of one video, got {len(videos)} videos")
        (path,) = videos
        windows = sorted(table.column("window").to_pylist())
        if windows != list(range(len(windows))):
            raise ValueError(f"{path}: rows hold windows {windows}, not 0..{len(windows) - 1} once each")
        n = table.num_rows
        num_frames = int(pc.max(table.column("end")).as_py())
        table = table.select(SCHEMA.names).cast(SCHEMA)
        table = table.set_column(SCHEMA.get_field_index("num_windows"), "num_windows", pa.array([n] * n, pa.int32()))
        table = table.set_column(
            SCHEMA.get_field_index("num_frames"), "num_frames", pa.array([num_frames] * n, pa.int32())
        )
        if path in self.complete:
            return None
        self.complete[path] = None  # claimed; the entry comes with its shard
        self._buffer.append(table)
        self._buffered += n
        return self.flush() if self._buffered >= self.windows_per_shard else None

    def add_tokens(self, path: str | os.PathLike, tokens: Tokens) -> dict | None:
        """`add` for a video tokenized in this process (e.g. `model.tokenize`)."""
        return self.add(tokens_table(path, tokens))

    def flush(self) -> dict | None:
        """Write the buffered videos as one shard and enter it in the manifest."""
        if not self._buffer:
            return None
        table = pa.concat_tables(self._buffer).sort_by([("video", "ascending"), ("window", "ascending")])
        number = 1 + max(
            [int(s["file"][len(SHARD_PREFIX) : -len(SHARD_SUFFIX)]) for s in self.manifest["shards"]], default=-1
        )
        name = f"{SHARD_PREFIX}{number:05d}{SHARD_SUFFIX}"
        path = self.root / name
        meta = {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "model": {k: v for k, v in self.identity.items() if k != "config"},
            "settings": self.settings,
        }
        table = table.replace_schema_metadata({"infotok": json.dumps(meta, sort_keys=True)})
        atomic_write(path, lambda f: pq.write_table(table, f, row_group_size=self.row_group_windows, **PARQUET_OPTIONS))
        _sync_dir(self.root)
        entries = []
        for part in self._buffer:
            first = part.slice(0, 1).to_pylist()[0]
            entry = {
                "video": first["video"],
                "video_id": first["video_id"],
                "shard": name,
                "windows": part.num_rows,
                "frames": first["num_frames"],
                "kept": int(pc.sum(part.column("kept")).as_py()),
                "tokens": int(
                    pc.sum(pc.multiply(pc.multiply(part.column("t"), part.column("h")), part.column("w"))).as_py()
                ),
            }
            entries.append(entry)
            self.complete[entry["video"]] = entry
        shard = {
            "file": name,
            "rows": table.num_rows,
            "row_groups": pq.ParquetFile(path).num_row_groups,
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
            "videos": [e["video_id"] for e in entries],
        }
        self.manifest["shards"].append(shard)
        self.manifest["videos"] += entries
        self._write_manifest()
        self.written.append(shard)
        self._buffer, self._buffered = [], 0
        return shard

    def fail(self, path: str | os.PathLike, error: str) -> None:
        record = {"video": os.fspath(path), "error": " ".join(str(error).split())}
        self.failures.append(record)
        self._failures.write(json.dumps(record) + "\n")
        self._failures.flush()

    def close(self) -> dict:
        """Write what is buffered, then the final manifest (with this run's failures); returns it."""
        self.flush()
        self._write_manifest()
        self._failures.close()
        return self.manifest

    def abort(self) -> None:
        """Stop without writing the buffered videos (they are done again on the next run)."""
        self._buffer, self._buffered = [], 0
        self._failures.close()

    def _write_manifest(self) -> None:
        m = self.manifest
        videos = m["videos"]
        m["counts"] = {
            "videos": len(videos),
            "windows": sum(v["windows"] for v in videos),
            "frames": sum(v["frames"] for v in videos),
            "tokens_kept": sum(v["kept"] for v in videos),
            "tokens_total": sum(v["tokens"] for v in videos),
            "shards": len(m["shards"]),
            "shard_bytes": sum(s["bytes"] for s in m["shards"]),
            "failed": len(self.failures),
        }
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _atomic_write(self.root / MANIFEST, (json.dumps(m, indent=1) + "\n").encode())


# ------------------------------------------------------------------------- reading a video
def load_video_tokens(root: str | os.PathLike, video: str | os.PathLike) -> Tokens:
    """One complete video's tokens from a shard folder, by its path (as stored, or as given to
    `encode-dataset`: relative paths resolve from the current folder as they did there) or its
    video_id; `model.detokenize(tokens)` (or `model.iter_detokenize(tokens.header, tokens.windows)`)
    decodes them exactly as `infotok decode` decodes an `.itok` file of the same video."""
    manifest = read_manifest(root)
    key = os.fspath(video)
    keys = {key, os.path.abspath(key)}
    entry = next((v for v in manifest["videos"] if keys & {v["video"], v["video_id"]}), None)
    if entry is None:
        raise ShardError(f"{root}: no complete video {key!r} in the manifest")
    table = pq.read_table(Path(root) / entry["shard"], filters=[("video_id", "=", entry["video_id"])])
    return table_tokens(table, manifest)


def iter_video_tokens(root: str | os.PathLike) -> Iterator[tuple[str, Tokens]]:
    """(path, Tokens) of every complete video, shard by shard."""
    manifest = read_manifest(root)
    for shard in manifest["shards"]:
        table = pq.read_table(Path(root) / shard["file"])
        videos = table.column("video").to_numpy(zero_copy_only=False)
        for path in dict.fromkeys(videos):
            yield path, table_tokens(table.filter(pc.equal(table.column("video"), path)), manifest)


def save_itok(
    root: str | os.PathLike, video: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False
) -> Path:
    """One video of a shard folder as an `.itok` file (the same file `infotok encode` writes)."""
    return load_video_tokens(root, video).save(dst, overwrite=overwrite)


# --------------------------------------------------------------------------- the PyTorch reader
MODES = ("grid", "sequence")
META_COLUMNS = ("video_id", "window", "start", "end", "rate")


class TokenShards(torch.utils.data.IterableDataset):
    """Windows of a shard folder for training, each exactly once per epoch across all readers.

    The units of work are Parquet row groups (`ROW_GROUP_WINDOWS` windows each) of the shards the
    manifest lists. Reader k of K (K = world_size x data-loader workers; rank from `rank`/`world_size`,
    else torch.distributed when it is initialised, else 0 of 1) takes units k, k+K, k+2K, ...; with
    `shuffle` the unit order is shuffled per epoch (`set_epoch`), the same on every rank, and so are
    the windows within a unit.

    `mode="grid"` yields {"indices": int64 [t, h, w] with dropped positions = `pad_value`,
    "mask": bool [t, h, w], ...}; `mode="sequence"` yields {"tokens": int64 [K] (the kept tokens in
    raster order, the order an autoregressive model reads them; in 1D-layout shards the window's
    coarse-to-fine sequence, its grid [1, 1, N]), "positions": int64 [K, 3] (t, y, x),
    "grid": int64 [3], ...}; both also carry the META_COLUMNS. `pad_value` defaults to the codebook
    size (one past the last code, usable as a "dropped" embedding). Batch with `self.collate`.
    `fill` says how a decoder fills dropped positions (`infotok.fill`): under `hold` a dropped
    position stands for the code last kept at it in an earlier latent frame of its window.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        mode: str = "grid",
        pad_value: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
        self.root, self.mode, self.shuffle, self.seed = Path(root), mode, shuffle, seed
        self.manifest = read_manifest(root)
        self.codebook_size = int(math.prod(self.manifest["model"]["levels"]))
        self.pad_value = self.codebook_size if pad_value is None else int(pad_value)
        self._rank, self._world = rank, world_size
        self.units = [(s["file"], g) for s in self.manifest["shards"] for g in range(s["row_groups"])]
        self.total = sum(s["rows"] for s in self.manifest["shards"])  # windows in the folder
        self._unit_rows: dict[tuple[str, int], int] | None = None
        self.epoch = 0

    @property
    def fill(self) -> str:
        return self.manifest["settings"].get("fill") or "mask"  # manifests from before the fill are "mask"

    def __len__(self) -> int:
        """Windows this rank reads this epoch (all its data-loader workers together); ranks differ by
        at most a row group's worth (`total` is the folder's)."""
        if self._unit_rows is None:  # from the Parquet footers
            self._unit_rows = {}
            for s in self.manifest["shards"]:
                meta = pq.ParquetFile(self.root / s["file"]).metadata
                self._unit_rows |= {(s["file"], g): meta.row_group(g).num_rows for g in range(s["row_groups"])}
        rank, world = self.rank_and_world()
        return sum(self._unit_rows[u] for u in self._ordered_units()[rank::world])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_and_world(self) -> tuple[int, int]:
        if self._world is not None:
            return self._rank, self._world
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def my_units(self) -> list[tuple[str, int]]:
        """The (shard file, row group) units this reader (rank, data-loader worker) reads."""
        rank, world = self.rank_and_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # rank r's units are units[r::world]; its workers split those: worker k takes every workers-th
        return self._ordered_units()[rank::world][worker::workers]

    def _ordered_units(self) -> list[tuple[str, int]]:
        units = list(self.units)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(units)
        return units

    def __iter__(self) -> Iterator[dict]:
        files: dict[str, pq.ParquetFile] = {}
        for name, group in self.my_units():
            if name not in files:
                files[name] = pq.ParquetFile(self.root / name)
            table = files[name].read_row_group(group)
            order = list(range(table.num_rows))
            if self.shuffle:
                random.Random(f"{self.seed}/{self.epoch}/{name}/{group}").shuffle(order)
            items = list(self._items(table))
            for i in order:
                yield items[i]

    def _items(self, table: pa.Table) -> Iterator[dict]:
        t, h, w = (table.column(k).to_numpy() for k in ("t", "h", "w"))
        masks = table.column("mask").to_pylist()
        indices = _list_values(table.column("indices"))
        meta = {k: table.column(k).to_pylist() for k in META_COLUMNS}
        for i in range(table.num_rows):
            mask = unpack_mask(masks[i], int(t[i]), int(h[i]), int(w[i]))
            tokens = torch.from_numpy(indices[i].astype(np.int64))
            item = {k: meta[k][i] for k in META_COLUMNS}
            if self.mode == "grid":
                grid = torch.full(mask.shape, self.pad_value, dtype=torch.long)
                m = torch.from_numpy(mask)
                grid[m] = tokens
                item |= {"indices": grid, "mask": m}
            else:
                item |= {
                    "tokens": tokens,
                    "positions": torch.from_numpy(np.argwhere(mask).astype(np.int64)),
                    "grid": torch.tensor(mask.shape, dtype=torch.long),
                }
            yield item

    def collate(self, items: Sequence[dict]) -> dict:
        """`collate_tokens` with this reader's pad value (for `DataLoader(collate_fn=...)`)."""
        return collate_tokens(items, self.pad_value)


def collate_tokens(items: Sequence[dict], pad_value: int) -> dict:
    """Pad a list of `TokenShards` items into a batch.

    Grids: indices [B, T, H, W] (pad_value beyond a window's grid and where dropped), mask [B, T, H, W]
    (False there), grid [B, 3] (each window's own t, h, w). Sequences: tokens [B, L] (pad_value after
    each window's K), positions [B, L, 3] (0 there), lengths [B], attention_mask [B, L]. The
    META_COLUMNS come along as lists (video_id) and tensors (the numbers).
    """
    if not items:
        raise ValueError("nothing to collate")
    out: dict = {"video_id": [it["video_id"] for it in items]}
    for k in ("window", "start", "end"):
        out[k] = torch.tensor([it[k] for it in items], dtype=torch.long)
    out["rate"] = torch.tensor([it["rate"] for it in items], dtype=torch.float64)
    b = len(items)
    if "indices" in items[0]:
        shapes = torch.tensor([list(it["mask"].shape) for it in items], dtype=torch.long)
        t, h, w = (int(v) for v in shapes.max(dim=0).values)
        indices = torch.full((b, t, h, w), pad_value, dtype=torch.long)
        mask = torch.zeros((b, t, h, w), dtype=torch.bool)
        for i, it in enumerate(items):
            tt, hh, ww = it["mask"].shape
            indices[i, :tt, :hh, :ww] = it["indices"]
            mask[i, :tt, :hh, :ww] = it["mask"]
        return out | {"indices": indices, "mask": mask, "grid": shapes}
    lengths = torch.tensor([it["tokens"].numel() for it in items], dtype=torch.long)
    n = int(lengths.max())
    tokens = torch.full((b, n), pad_value, dtype=torch.long)
    positions = torch.zeros((b, n, 3), dtype=torch.long)
    for i, it in enumerate(items):
        k = it["tokens"].numel()
        tokens[i, :k] = it["tokens"]
        positions[i, :k] = it["positions"]
    return out | {
        "tokens": tokens,
        "positions": positions,
        "lengths": lengths,
        "attention_mask": torch.arange(n)[None] < lengths[:, None],
        "grid": torch.stack([it["grid"] for it in items]),
    }
