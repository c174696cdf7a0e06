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

The schema, rows and manifest are `shard_format`'s, the writer `shard_writer`'s, the readers
`shard_reader`'s; every name of them is importable from here.
"""

from __future__ import annotations

from .shard_format import (  # noqa: F401 (re-exported)
    FAILURES,
    MANIFEST,
    PARQUET_OPTIONS,
    ROW_GROUP_WINDOWS,
    SCHEMA,
    SHARD_FORMAT,
    SHARD_PREFIX,
    SHARD_SUFFIX,
    SHARD_VERSION,
    VIDEO_FIELDS,
    ShardError,
    pack_mask,
    read_manifest,
    records_table,
    shard_files,
    table_tokens,
    table_windows,
    tokens_table,
    unpack_mask,
    verify_shards,
    video_id,
    window_record,
)
from .shard_reader import (  # noqa: F401 (re-exported)
    META_COLUMNS,
    MODES,
    TokenShards,
    collate_tokens,
    iter_video_tokens,
    load_video_tokens,
    save_itok,
)
from .shard_writer import ShardWriter, model_identity  # noqa: F401 (re-exported)
