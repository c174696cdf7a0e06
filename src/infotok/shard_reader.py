"""Reading shard folders: one video's `Tokens` back (`load_video_tokens`), and `TokenShards`, the PyTorch
dataset that streams every window once across data-loader workers and ranks.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .extras import require

pa = require("pyarrow", "infotok.shards")  # the optional extra `scale`
pc = require("pyarrow.compute", "infotok.shards")
pq = require("pyarrow.parquet", "infotok.shards")

from .shard_format import (  # noqa: E402 (after the extra is checked, so its absence is one clear line)
    ShardError,
    _list_values,
    read_manifest,
    table_tokens,
    unpack_mask,
)
from .tokens import Tokens  # noqa: E402


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
