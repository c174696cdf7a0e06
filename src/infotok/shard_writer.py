"""`ShardWriter`: whole videos into shards, each entered in the manifest once complete, so a killed run
leaves finished shards intact and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .extras import require

pa = require("pyarrow", "infotok.shards")  # the optional extra `scale`
pc = require("pyarrow.compute", "infotok.shards")
pq = require("pyarrow.parquet", "infotok.shards")

from .files import atomic_write  # noqa: E402 (after the extra is checked, so its absence is one clear line)
from .shard_format import (  # noqa: E402
    FAILURES,
    MANIFEST,
    PARQUET_OPTIONS,
    ROW_GROUP_WINDOWS,
    SCHEMA,
    SHARD_FORMAT,
    SHARD_PREFIX,
    SHARD_SUFFIX,
    SHARD_VERSION,
    ShardError,
    _sha256,
    read_manifest,
    tokens_table,
)
from .tokens import Tokens  # noqa: E402


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
