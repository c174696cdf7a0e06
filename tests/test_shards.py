"""Parquet token shards without Ray: rows <-> tokens, the writer's resume rules, the training reader."""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq  # noqa: E402
import pytest
import torch

from infotok.pipeline import encode_file  # noqa: E402
from infotok.shards import (
    MANIFEST,
    SCHEMA,
    ShardError,
    ShardWriter,
    TokenShards,
    collate_tokens,  # noqa: E402
    load_video_tokens,
    model_identity,
    read_manifest,
    save_itok,
    shard_files,
    verify_shards,
    video_id,
)
from infotok.spec import TokenizeSpec, Windowing  # noqa: E402
from infotok.video import synthetic_video, write_video  # noqa: E402

from .conftest import tiny_model  # noqa: E402

SETTINGS = dict(rate=0.5, strategy="static", selection="error", window=9, overlap=3)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    """The built-in sample and two short clips of other sizes and lengths."""
    d = tmp_path_factory.mktemp("videos")
    return [
        write_video(d / "sample.mp4", synthetic_video(21, 48, 64, seed=1), fps=12),
        write_video(d / "clip1.mp4", synthetic_video(13, 40, 56, seed=2), fps=8),
        write_video(d / "clip2.mp4", synthetic_video(17, 48, 64, seed=3), fps=10),
    ]


def settings_record() -> dict:
    return SETTINGS | {"size": None, "max_size": None, "seed": 0, "start": 0, "max_frames": None}


def write_folder(root, model, videos, **kwargs) -> ShardWriter:
    writer = ShardWriter(root, model_identity(model), settings_record(), **kwargs)
    for v in videos:
        writer.add_tokens(os.path.abspath(v), model.tokenize(v, **SETTINGS))
    writer.close()
    return writer


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model, videos) -> Path:
    """Shards of the three videos, 4 windows a shard at most (whole videos), 2 windows a row group."""
    root = tmp_path_factory.mktemp("shards")
    write_folder(root, model, videos, windows_per_shard=4, row_group_windows=2)
    return root


def test_rows_give_back_the_tokens_and_the_itok_file_of_encode(tmp_path, folder, model, videos):
    manifest = read_manifest(folder)
    assert manifest["counts"]["videos"] == 3 and manifest["counts"]["windows"] == 3 + 2 + 3
    assert pq.read_schema(shard_files(folder)[0]).remove_metadata() == SCHEMA
    for v in videos:
        tokens = load_video_tokens(folder, os.path.abspath(v))
        assert load_video_tokens(folder, os.path.relpath(v)).header == tokens.header  # as given to encode-dataset
        # the same .itok file `infotok encode` writes, byte for byte, and the same frames decoded
        encode_file(
            model, v, tmp_path / f"{v.stem}.itok", spec=TokenizeSpec(0.5, "static", "error"), windowing=Windowing(9, 3)
        )
        save_itok(folder, os.path.abspath(v), tmp_path / f"{v.stem}-shard.itok")
        assert (tmp_path / f"{v.stem}.itok").read_bytes() == (tmp_path / f"{v.stem}-shard.itok").read_bytes()
        assert np.array_equal(model.detokenize(tokens), model.reconstruct(v, **SETTINGS))
    # dropped tokens really are dropped (rate 0.5), and the manifest's ledger agrees with the rows
    counts = manifest["counts"]
    assert 0 < counts["tokens_kept"] < counts["tokens_total"]
    table = pq.read_table(shard_files(folder))
    assert int(table.column("kept").to_numpy().sum()) == counts["tokens_kept"]


def test_a_video_never_spans_two_shards_and_checksums_match(folder):
    manifest = read_manifest(folder)
    assert len(manifest["shards"]) >= 2
    seen = Counter()
    for shard in manifest["shards"]:
        table = pq.read_table(folder / shard["file"])
        ids = set(table.column("video_id").to_pylist())
        assert ids == set(shard["videos"]) and table.num_rows == shard["rows"]
        seen.update(ids)
    assert all(n == 1 for n in seen.values()) and len(seen) == 3
    assert verify_shards(folder) == []


def _ids(items) -> list[tuple[str, int]]:
    return [(vid, int(w)) for batch in items for vid, w in zip(batch["video_id"], batch["window"])]


def test_reader_over_2_workers_x_2_ranks_yields_every_window_exactly_once(folder):
    everything = sorted(
        zip(*(pq.read_table(shard_files(folder)).column(k).to_pylist() for k in ("video_id", "window")))
    )
    got = []
    for rank in range(2):
        dataset = TokenShards(folder, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=dataset.collate)
        ids = _ids(loader)
        got += ids
        assert len(ids) == len(dataset) > 0  # the rank's own share
    assert sorted(got) == everything and len(got) == dataset.total == 8
    # shuffled: the same windows, each once, in another order
    shuffled = []
    for rank in range(2):
        dataset = TokenShards(folder, rank=rank, world_size=2, shuffle=True, seed=3)
        dataset.set_epoch(1)
        shuffled += _ids(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=dataset.collate))
    assert sorted(shuffled) == everything


def test_reader_takes_rank_and_world_size_from_torch_distributed(folder, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    dataset = TokenShards(folder)
    assert dataset.rank_and_world() == (1, 3) and dataset.my_units() == dataset.units[1::3]
    assert len(dataset) == sum(
        pq.ParquetFile(folder / f).metadata.row_group(g).num_rows for f, g in dataset.units[1::3]
    )
    with pytest.raises(ValueError, match="rank"):
        TokenShards(folder, rank=2, world_size=2)


def test_the_reader_and_the_rebuilt_tokens_say_how_dropped_positions_decode(folder, model, videos, tmp_path):
    assert TokenShards(folder).fill == "mask"  # a manifest from before the fill
    writer = ShardWriter(tmp_path, model_identity(model), settings_record() | {"fill": "hold"})
    writer.add_tokens(os.path.abspath(videos[1]), model.tokenize(videos[1], **SETTINGS, fill="hold"))
    writer.close()
    assert TokenShards(tmp_path).fill == "hold"
    assert load_video_tokens(tmp_path, os.path.abspath(videos[1])).header.fill == "hold"


def test_grid_and_sequence_items_hold_the_windows_tokens_and_collate_pads(folder, videos):
    tokens = load_video_tokens(folder, os.path.abspath(videos[1]))  # the 40x56 clip: a smaller grid
    vid = video_id(os.path.abspath(videos[1]))
    grid = {(it["video_id"], it["window"]): it for it in TokenShards(folder)}
    seq = {(it["video_id"], it["window"]): it for it in TokenShards(folder, mode="sequence")}
    pad = 8 * 8 * 8 * 5 * 5 * 5
    for i, w in enumerate(tokens.windows):
        g, s = grid[(vid, i)], seq[(vid, i)]
        assert torch.equal(g["mask"], torch.from_numpy(w.mask))
        assert torch.equal(g["indices"][g["mask"]], torch.from_numpy(w.indices.astype(np.int64)))
        assert bool((g["indices"][~g["mask"]] == pad).all())
        # raster order (t, y, x): the order the kept indices are stored in, and an AR model reads them
        assert torch.equal(s["tokens"], torch.from_numpy(w.indices.astype(np.int64)))
        assert torch.equal(s["positions"], torch.from_numpy(np.argwhere(w.mask)))
        assert s["positions"].tolist() == sorted(s["positions"].tolist())
    items = list(grid.values())
    batch = collate_tokens(items, pad)
    t, h, w = (max(it["mask"].shape[d] for it in items) for d in range(3))
    assert batch["indices"].shape == (len(items), t, h, w) and batch["mask"].sum() == sum(
        it["mask"].sum() for it in items
    )
    small = [i for i, it in enumerate(items) if it["mask"].shape[1] < h][0]
    assert not batch["mask"][small, :, items[small]["mask"].shape[1] :].any()
    seqs = collate_tokens(list(seq.values()), pad)
    assert seqs["tokens"].shape[1] == int(seqs["lengths"].max())
    assert torch.equal(seqs["attention_mask"].sum(1), seqs["lengths"])
    assert bool((seqs["tokens"][~seqs["attention_mask"]] == pad).all())


def test_writer_resumes_cleans_a_killed_runs_leftovers_and_refuses_other_settings(tmp_path, model, videos):
    root = tmp_path / "out"
    write_folder(root, model, videos[:1], windows_per_shard=1)
    first = root / "shard-00000.parquet"
    before = first.read_bytes()
    # what a run killed later leaves: a half-written temporary shard, and a whole one it renamed but never
    # entered in the manifest (killed between the two)
    (root / ".shard-00001.parquet.dead.tmp").write_bytes(before[: len(before) // 2])
    shutil.copy(first, root / "shard-00001.parquet")
    writer = ShardWriter(root, model_identity(model), settings_record(), windows_per_shard=1)
    assert writer.is_complete(os.path.abspath(videos[0])) and not writer.is_complete(os.path.abspath(videos[1]))
    assert sorted(p.name for p in root.iterdir()) == ["failures.jsonl", MANIFEST, "shard-00000.parquet"]
    writer.add_tokens(os.path.abspath(videos[1]), model.tokenize(videos[1], **SETTINGS))
    writer.fail("/nowhere/bad.mp4", "/nowhere/bad.mp4: not a readable video\n(details)")
    manifest = writer.close()
    assert first.read_bytes() == before and [v["video"] for v in manifest["videos"]] == [
        os.path.abspath(v) for v in videos[:2]
    ]
    assert [json.loads(line) for line in (root / "failures.jsonl").read_text().splitlines()] == [
        {"video": "/nowhere/bad.mp4", "error": "/nowhere/bad.mp4: not a readable video (details)"}
    ]
    assert manifest["counts"]["failed"] == 1 and verify_shards(root) == []

    # a listed shard that is gone: its videos are forgotten (done again), the others kept
    (root / "shard-00001.parquet").unlink()
    writer = ShardWriter(root, model_identity(model), settings_record())
    assert writer.is_complete(os.path.abspath(videos[0])) and not writer.is_complete(os.path.abspath(videos[1]))
    writer.close()
    # a damaged shard is found by its checksum
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    assert verify_shards(root) == [f"{first}: checksum mismatch (damaged or replaced)"]

    with pytest.raises(ShardError, match="other settings.*window 9 \\(now 17\\)"):
        ShardWriter(root, model_identity(model), settings_record() | {"window": 17})
    with pytest.raises(ShardError, match="tokens of model"):
        ShardWriter(root, model_identity(tiny_model(seed=1)) | {"weights_hash": "0" * 16}, settings_record())
    writer = ShardWriter(root, model_identity(model), settings_record() | {"window": 17}, overwrite=True)
    assert not writer.is_complete(os.path.abspath(videos[0])) and not list(root.glob("shard-*"))
    writer.close()


def test_writer_takes_only_whole_videos(tmp_path, model, videos):
    from infotok.shards import tokens_table

    writer = ShardWriter(tmp_path, model_identity(model), settings_record())
    table = tokens_table(os.path.abspath(videos[0]), model.tokenize(videos[0], **SETTINGS))
    with pytest.raises(ValueError, match="not 0..1 once each"):
        writer.add(table.slice(1, 2))
    writer.abort()
