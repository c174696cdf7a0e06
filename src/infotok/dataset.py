"""Tokenize whole datasets on Ray Data into Parquet shards (`infotok encode-dataset`).

The pipeline, on this machine (Ray starts itself) or on a cluster (`ray_address`):

1. one row per video (`ray.data.from_items`);
2. CPU tasks read each video and cut it into windows exactly as `infotok encode` does
   (`pipeline.video_source` + `video.iter_windows`), streaming one row per window (`cut_windows`);
3. model actors (`map_batches` with the callable class `WindowTokenizer`: one model load per actor, on
   a CPU or a GPU) tokenize batches of windows from any videos through the batched core
   `InfoTok.encode`;
4. the driver collects each video's windows, writes whole videos into Parquet shards and the
   manifest (`shards.ShardWriter`: temporary names, rename when whole, manifest replaced atomically),
   and lists videos that failed in failures.jsonl.

With `budget="run"` (`--budget run`: exactly `rate` over the whole dataset, still adaptive) a first
pass runs the same stages with `WindowMeasurer` actors, which return a few numbers per window instead
of tokens (`pipeline.window_statistics`: the kept count on a fixed grid of drift thresholds under
`hold`, the predicted curve under `mask`); the driver stores each video's in DIR/budget/ (written atomically, so
a killed run resumes without measuring again), the allocation shares one threshold (or slope) over
all windows of all videos and hands out whole kept counts that add up to round(rate * all tokens)
(`budget_rates`), and the main pass tokenizes each window at its allocated rate.

The shards are written by the driver rather than by Ray's `write_parquet` because a shard must hold
whole videos and be entered in the manifest only once it is complete (that is what makes a rerun
resume safely); Ray's writer names files by block, writes them under their final names and records
nothing until the whole dataset is done. Only tokens reach the driver: a window of 33 frames at
256x448 is ~11 MB of pixels and ~20 KB of tokens.

Tokens are the same as `infotok encode`'s, bit for bit on a CPU: windows are batched across videos
only where their shape agrees, and what the per-video random generator of `pipeline.TokenStream`
decides (the uniform strategy's rates, the seeds of random selection) is drawn per video in step 2,
in the order `InfoTok.select` draws it, and handed to the batched call explicitly. On a GPU, kernels
may round differently for different batch sizes: `batch_size=1` gives `infotok encode --device cuda`'s
tokens exactly, larger batches the same up to such rounding.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import resource
import shutil
import tempfile
import time
import warnings
import zipfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .extras import require
from .files import atomic_write
from .fill import check_fill
from .geometry import check_windowing
from .router import check_rate, check_strategy, hold_grid, shared_rates, uniform_rate
from .selection import check_selection

# memory each video-cutting task reserves (a scheduling hint to Ray). It also makes the cutting
# stage's remote arguments differ from the model actors', which keeps Ray Data from fusing the two:
# videos are read in CPU tasks, never on a model worker.
# Cutting tasks peaked at 601-643 MiB on the evaluation clips at short side 256 (torch and PyAV
# imported, one video's windows), and Ray warns past 80% of the reservation.
CUT_TASK_MEMORY = 1 << 30
LIST_SUFFIXES = {".txt", ".lst", ".list"}  # a SRC with one of these is a text file of paths
# what `rate` means: each window on its own at the checkpoint's calibrated threshold (or slope), or
# exactly `rate` over all the inputs of the run (`budget_rates`)
BUDGETS = ("calibrated", "run")
BUDGET_DIR = "budget"  # DIR/budget/<video_id>.npz: each video's first-pass statistics under --budget run
# what the allocation adds to the settings the manifest records: the shared drift threshold (hold)
# or slope (mask) that it found
SHARED_KEYS = {"hold": "shared_threshold", "mask": "shared_slope"}


def require_scale() -> None:
    """Raise extras.MissingExtra (one line naming `infotok[scale]`) unless Ray Data and pyarrow import."""
    for module in ("pyarrow", "ray", "ray.data"):
        require(module, "`infotok encode-dataset`")


# ------------------------------------------------------------------------------------ inputs
def list_sources(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Folders, glob patterns, video files, and text files of paths (.txt/.lst/.list, one per line,
    blank lines and lines starting with # skipped, relative ones taken from the list's folder) ->
    absolute video paths, each once, in order."""
    from .video import list_videos

    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            lines = [line.strip() for line in p.read_text().splitlines()]
            entries = [
                line if os.path.isabs(line) else str(p.parent / line)
                for line in lines
                if line and not line.startswith("#")
            ]
            found += list_videos(entries)
        else:
            found += list_videos([item])
    return list(dict.fromkeys(Path(os.path.abspath(f)) for f in found))


def tokenize_settings(
    rate: float = 0.5,
    strategy: str | None = None,
    selection: str | None = None,
    window: int = 33,
    overlap: int = 5,
    size: int | None = None,
    max_size: int | None = None,
    seed: int = 0,
    start: int = 0,
    max_frames: int | None = None,
    fill: str | None = None,
    budget: str = "calibrated",
) -> dict:
    """The settings of a dataset run (those of `pipeline.TokenStream`), checked; the manifest records
    them and a resumed run must give the same. `budget` is recorded only when it is "run", so that
    folders begun before it existed resume."""
    check_windowing(window, overlap)
    if start < 0:
        raise ValueError(f"start must be a frame index >= 0, got {start}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    return {
        "rate": check_rate(rate),
        "strategy": check_strategy(strategy) if strategy is not None else None,
        "selection": check_selection(selection) if selection is not None else None,  # None: the checkpoint's default
        "fill": check_fill(fill) if fill is not None else None,  # likewise
        "window": int(window),
        "overlap": int(overlap),
        "size": size,
        "max_size": max_size,
        "seed": int(seed),
        "start": int(start),
        "max_frames": max_frames,
    } | ({"budget": budget} if budget == "run" else {})


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --------------------------------------------------------------- stage 2: cut windows (CPU tasks)
def window_draws(settings: dict, generator: np.random.Generator) -> tuple[float, int]:
    """What `InfoTok.select` draws from a video's generator for its next window, in its order: the
    uniform strategy's rate (NaN for the other strategies, which draw none), then the seed of random
    selection (drawn whatever the selection)."""
    rate = uniform_rate(settings["rate"], generator) if settings["strategy"] == "uniform" else math.nan
    return rate, int(generator.integers(2**62))


def _row(video: str, **fields) -> dict:
    defaults = {
        "window": -1,
        "start": 0,
        "end": 0,
        "width": 0,
        "height": 0,
        "source_width": 0,
        "source_height": 0,
        "resize": -1,
        "fps": 0.0,
        "frames": b"",
        "last": False,
        "draw_rate": math.nan,
        "draw_seed": 0,
        "error": "",
    }
    row = {"video": video} | defaults | fields | {"_dpid": os.getpid(), "_drss": _peak_rss()}
    return {k: np.array([v], dtype=object if k == "frames" else None) for k, v in row.items()}


def cut_windows(batch: dict, settings: dict) -> Iterator[dict]:
    """Ray Data stage (a generator over one-row batches of {"video": path}, with "rates" where the
    run budget allocated each window's): read each video and yield one row per window, frames as
    raw bytes, `draw_rate` the window's rate where it is fixed before the model call (the uniform
    strategy's draw, the run budget's allocation; else NaN); a video that cannot be read yields one
    row whose `error` says why (the windows it yielded before are then dropped by the driver)."""
    from .pipeline import video_source
    from .spec import Windowing
    from .video import iter_windows

    for j, path in enumerate(batch["video"]):
        path = str(path)
        allocated = batch["rates"][j] if "rates" in batch else None
        try:
            windowing = Windowing(
                **{k: settings[k] for k in ("window", "overlap", "size", "max_size", "start", "max_frames")}
            )
            frames, info, resize = video_source(path, windowing)
            generator = np.random.default_rng(settings["seed"])
            held, count = None, 0
            for i, (start, end, chunk) in enumerate(iter_windows(frames, settings["window"], settings["overlap"])):
                if held is not None:
                    yield _row(path, **held)
                rate, seed = window_draws(settings, generator)
                if allocated is not None:
                    rate = float(allocated[i]) if i < len(allocated) else math.nan
                count = i + 1
                held = dict(
                    window=i,
                    start=start,
                    end=end,
                    width=chunk.shape[2],
                    height=chunk.shape[1],
                    source_width=info.width,
                    source_height=info.height,
                    resize=-1 if resize is None else resize,
                    fps=info.fps,
                    frames=np.ascontiguousarray(chunk).tobytes(),
                    draw_rate=rate,
                    draw_seed=seed,
                )
            if held is None:
                raise ValueError(
                    f"{path}: no frames" + (f" at or after frame {settings['start']}" if settings["start"] else "")
                )
            if allocated is not None and count != len(allocated):
                raise ValueError(
                    f"{path}: {count} windows, but the budget's first pass measured {len(allocated)} "
                    "(did the file change?)"
                )
            yield _row(path, **held, last=True)
        except Exception as exc:  # a bad video is reported, the others go on
            message = _one_line(exc)
            yield _row(path, error=message if path in message else f"{path}: {message}")


# ---------------------------------------------------------------- stage 3: tokenize (model actors)
def _shape_groups(batch: dict) -> tuple[list[int], dict[tuple[int, int, int], list[int]]]:
    """A batch's rows that carry an error, and the others by window shape (frames, height, width):
    windows of one shape go through the model together, whatever their video."""
    failed, groups = [], {}
    for i in range(len(batch["video"])):
        if batch["error"][i]:
            failed.append(i)
        else:
            shape = (int(batch["end"][i] - batch["start"][i]), int(batch["height"][i]), int(batch["width"][i]))
            groups.setdefault(shape, []).append(i)
    return failed, groups


def _stack_windows(batch: dict, rows: list[int], shape: tuple[int, int, int]) -> np.ndarray:
    """The frames of `rows` (windows of one shape) as uint8 [B, T, H, W, 3]."""
    return np.stack([np.frombuffer(batch["frames"][i], np.uint8).reshape(*shape, 3) for i in rows])


class _SeedReplay:
    """Stands in for the per-video generators inside `InfoTok.select`, which draws each window's
    seed of random selection with `integers(2**62)`, window by window: hands out the seeds that
    `window_draws` drew from each window's own video generator."""

    def __init__(self, seeds: list[int]):
        self._seeds = iter(seeds)

    def integers(self, high) -> int:
        return next(self._seeds)


class WindowTokenizer:
    """Ray Data callable class: loads the model once per actor and tokenizes batches of window rows.

    Windows of one shape go through `InfoTok.encode` together, whatever their video. The output is
    an Arrow table of shard rows (shards.SCHEMA; the driver fills num_windows and num_frames), plus
    `error` (a row per video whose windows could not be tokenized), `_last`, and for measuring:
    the worker's peak memory (`_pid`, `_rss`, `_gpu`; the cutting task's `_dpid`, `_drss`), when its
    model was loaded (`_ready`, epoch seconds) and each row's share of the call's time (`_busy`).
    """

    def __init__(self, checkpoint: str | None, device: str, settings: dict, weights_hash: str | None = None):
        import torch

        from .checkpoint import CheckpointError
        from .model import InfoTok

        self.torch = torch
        self.model = InfoTok.from_pretrained(checkpoint, device=device)
        if weights_hash is not None and self.model.weights_hash != weights_hash:
            raise CheckpointError(
                f"{checkpoint}: this worker's copy of the checkpoint has weights "
                f"{self.model.weights_hash}, the driver's {weights_hash}; give every node the same file"
            )
        self.settings = settings
        self.ready = time.time()

    def __call__(self, batch: dict):
        import pyarrow as pa

        from .shards import SCHEMA, records_table, window_record

        began = time.time()
        s = self.settings
        records, extra = [], []
        failed, groups = _shape_groups(batch)
        for i in failed:
            records.append(self._error_record(batch["video"][i], batch["error"][i]))
            extra.append(i)
        for (frames, height, width), rows in groups.items():
            try:
                x = _stack_windows(batch, rows, (frames, height, width))
                drawn = [float(batch["draw_rate"][i]) for i in rows]
                rates = None if any(math.isnan(r) for r in drawn) else drawn
                tokens = self.model.encode(
                    self.torch.from_numpy(x),
                    s["rate"],
                    s["strategy"],
                    s["selection"],
                    _SeedReplay([int(batch["draw_seed"][i]) for i in rows]),
                    rates=rates,
                    fill=s["fill"],
                )
            except Exception as exc:  # e.g. out of memory on one size: its videos fail, the rest go on
                for i in rows:
                    path = str(batch["video"][i])
                    records.append(self._error_record(path, f"{path}: tokenizing failed ({_one_line(exc)})"))
                    extra.append(i)
                continue
            for j, i in enumerate(rows):
                resize = int(batch["resize"][i])
                video = {
                    "video": str(batch["video"][i]),
                    "num_windows": -1,
                    "num_frames": -1,
                    "fps": float(batch["fps"][i]),
                    "width": width,
                    "height": height,
                    "source_width": int(batch["source_width"][i]),
                    "source_height": int(batch["source_height"][i]),
                    "resize": None if resize < 0 else resize,
                }
                records.append(
                    window_record(
                        tokens.window(j, int(batch["start"][i]), int(batch["end"][i])), int(batch["window"][i]), video
                    )
                    | {"error": ""}
                )
                extra.append(i)
        schema = SCHEMA.append(pa.field("error", pa.string()))
        table = records_table(records, schema)
        gpu = int(self.torch.cuda.max_memory_allocated()) if self.model.device.type == "cuda" else 0
        busy = (time.time() - began) / max(1, len(extra))
        columns = {
            "_ready": pa.array([self.ready] * len(extra), pa.float64()),
            "_busy": pa.array([busy] * len(extra), pa.float64()),
            "_last": pa.array([bool(batch["last"][i]) for i in extra]),
            "_pid": pa.array([os.getpid()] * len(extra), pa.int64()),
            "_rss": pa.array([_peak_rss()] * len(extra), pa.int64()),
            "_gpu": pa.array([gpu] * len(extra), pa.int64()),
            "_dpid": pa.array([int(batch["_dpid"][i]) for i in extra], pa.int64()),
            "_drss": pa.array([int(batch["_drss"][i]) for i in extra], pa.int64()),
        }
        for name, column in columns.items():
            table = table.append_column(name, column)
        return table

    @staticmethod
    def _error_record(path, message) -> dict:
        return {
            "video": str(path),
            "video_id": "",
            "window": -1,
            "num_windows": -1,
            "start": 0,
            "end": 0,
            "num_frames": -1,
            "fps": 0.0,
            "width": 0,
            "height": 0,
            "source_width": 0,
            "source_height": 0,
            "resize": None,
            "rate": 0.0,
            "score": math.nan,
            "kept": 0,
            "t": 0,
            "h": 0,
            "w": 0,
            "mask": b"",
            "indices": np.zeros(0, np.uint16),
            "error": str(message),
        }


# ------------------------------------------------- the first pass of --budget run (model actors)
class WindowMeasurer(WindowTokenizer):
    """Ray Data callable class of the first pass of `--budget run`: like `WindowTokenizer` (one model
    load per actor, windows of one shape batched), but each window gives its token count and
    `window_statistics` instead of tokens: an Arrow table of video, window, tokens, stats, last and
    error (a row per video whose windows could not be measured)."""

    COLUMNS = ("video", "window", "tokens", "stats", "last", "error")

    def __call__(self, batch):
        import pyarrow as pa

        failed, groups = _shape_groups(batch)
        rows = [(str(batch["video"][i]), -1, 0, [], False, str(batch["error"][i])) for i in failed]
        for shape, idx in groups.items():
            try:
                from .pipeline import window_statistics

                x = _stack_windows(batch, idx, shape)
                stats = window_statistics(self.model, x, self.settings["fill"], self.settings["grid"])
                stats = stats.astype(np.float32)
            except Exception as exc:  # as WindowTokenizer: these videos fail, the rest go on
                rows += [
                    (
                        str(batch["video"][i]),
                        -1,
                        0,
                        [],
                        False,
                        f"{batch['video'][i]}: measuring failed ({_one_line(exc)})",
                    )
                    for i in idx
                ]
                continue
            tokens = math.prod(self.model.geometry.latent_shape(*shape))
            rows += [
                (str(batch["video"][i]), int(batch["window"][i]), tokens, stat, bool(batch["last"][i]), "")
                for i, stat in zip(idx, stats)
            ]
        types = (pa.string(), pa.int32(), pa.int64(), pa.list_(pa.float32()), pa.bool_(), pa.string())
        columns = list(zip(*rows)) if rows else [()] * len(types)
        return pa.table(
            {name: pa.array(list(column), kind) for name, column, kind in zip(self.COLUMNS, columns, types)}
        )


class _Measured:
    """The driver's end of the first pass: gathers each video's window statistics as they arrive (in
    any order, from any worker) and stores each whole video's in `folder` at once (`save_statistics`)."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key
        self.videos: dict[str, dict] = {}  # path -> {"rows": {window: (tokens, stats)}, "total": windows or None}
        self.done: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.failed: dict[str, str] = {}
        self.windows = 0  # received

    def add(self, table) -> None:
        columns = (table.column(k).to_pylist() for k in WindowMeasurer.COLUMNS)
        for path, window, tokens, stats, last, error in zip(*columns):
            if path in self.failed or path in self.done:
                continue
            if error:
                self.failed[path] = error
                self.videos.pop(path, None)
                continue
            entry = self.videos.setdefault(path, {"rows": {}, "total": None})
            self.windows += window not in entry["rows"]  # not a retried task's duplicate
            entry["rows"][window] = (tokens, stats)
            if last:
                entry["total"] = window + 1
            if entry["total"] is not None and len(entry["rows"]) == entry["total"]:
                rows = [entry["rows"].pop(w) for w in range(entry["total"])]
                del self.videos[path]
                tokens = np.array([r[0] for r in rows], np.int64)
                stats = np.array([r[1] for r in rows], np.float32)
                save_statistics(self.folder, path, self.key, tokens, stats)
                self.done[path] = (tokens, stats)

    def close(self) -> None:
        for path, entry in self.videos.items():  # cannot happen unless a worker lost rows
            self.failed[path] = f"{path}: incomplete first pass (windows {sorted(entry['rows'])} arrived)"
        self.videos = {}


def _statistics_file(folder: Path, path: str) -> Path:
    from .shards import video_id

    return folder / f"{video_id(path)}.npz"


def save_statistics(folder: Path, path: str, key: str, tokens: np.ndarray, stats: np.ndarray) -> None:
    """Store one video's first-pass statistics (each window's token count and statistic) atomically,
    with the video's path and `key`, what they were measured with."""
    atomic_write(
        _statistics_file(folder, path),
        lambda f: np.savez(f, video=np.array(path), key=np.array(key), tokens=tokens, stats=stats),
    )


def load_statistics(folder: Path, path: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A video's stored (tokens, stats), or None where there are none of this path and `key` (a
    damaged or other file: the video is measured again)."""
    file = _statistics_file(folder, path)
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["video"]) == path and str(z["key"]) == key:
                return z["tokens"], z["stats"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    return None


@dataclass
class Allocation:
    """What `budget_rates` gave: each window's rate, per video; the videos whose first pass failed;
    and what the manifest records of it (the shared threshold or slope)."""

    rates: dict[str, list[float]]
    failures: dict[str, str]
    settings: dict


def budget_rates(
    videos: list[str],
    folder: Path,
    settings: dict,
    key: str,
    measure: Callable[[list[str]], Iterable],
    progress: Callable[["DatasetProgress"], None] | None = None,
) -> Allocation:
    """Each window's rate for `--budget run`: the statistics of every video (stored ones from
    `folder`, the others through `measure(paths)`, which yields `WindowMeasurer` tables), then one
    shared threshold (hold) or slope (mask) over all windows of all videos (`router.shared_rates`),
    whole kept counts that add up to round(rate * all tokens), and each window's rate kept / tokens
    (which `selection.kept_count` turns back into exactly kept).
    The same statistics give the same allocation, however many videos are already tokenized.
    `progress` is called as the first pass's windows arrive."""
    stats = {p: s for p in videos if (s := load_statistics(folder, p, key)) is not None}
    failures: dict[str, str] = {}
    missing = [p for p in videos if p not in stats]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):  # what a killed run left half written
            tmp.unlink()
        measured, state, began = _Measured(folder, key), DatasetProgress(len(missing), stage="measure"), time.time()
        for table in measure(missing):
            measured.add(table)
            state.done, state.failed, state.windows = len(measured.done), len(measured.failed), measured.windows
            state.elapsed = time.time() - began
            if progress:
                progress(state)
        measured.close()
        stats |= measured.done
        failures = measured.failed
    order = [p for p in videos if p in stats]
    shared_key = SHARED_KEYS[settings["fill"]]
    if not order:
        return Allocation({}, failures, {shared_key: None})
    tokens = np.concatenate([stats[p][0] for p in order]).tolist()
    measures = np.concatenate([stats[p][1] for p in order])
    rates, shared = shared_rates(measures, tokens, settings["rate"], json.loads(key)["grid"])
    bounds = np.cumsum([0] + [len(stats[p][0]) for p in order]).tolist()
    return Allocation(
        {p: rates[a:b] for p, a, b in zip(order, bounds[:-1], bounds[1:])}, failures, {shared_key: shared}
    )


def statistics_key(identity: dict, settings: dict, grid: list[float] | None) -> str:
    """What stored statistics depend on (the model's weights, how videos are cut into windows, the
    fill and the grid of thresholds), as text: stored ones with another key are measured again."""
    cut = {k: settings[k] for k in ("window", "overlap", "size", "max_size", "start", "max_frames")}
    return json.dumps(
        cut | {"weights_hash": identity["weights_hash"], "fill": settings["fill"], "grid": grid}, sort_keys=True
    )


def _resume_view(settings: dict) -> dict:
    """The settings a resumed run must repeat before any pass: all but the allocation's result, the
    budget named even where it is not recorded (calibrated)."""
    return {k: v for k, v in settings.items() if k not in SHARED_KEYS.values()} | {
        "budget": settings.get("budget", "calibrated")
    }


def _check_resumable(root: Path, settings: dict) -> None:
    """Refuse a folder begun with other settings before any pass (ShardWriter refuses it too, but under
    `--budget run` only once the first pass has given the allocation), naming the budget either way."""
    from .shards import MANIFEST, ShardError, read_manifest

    if not (root / MANIFEST).is_file():
        return
    theirs, ours = _resume_view(read_manifest(root).get("settings", {})), _resume_view(settings)
    if theirs != ours:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} (now {ours.get(k)!r})"
            for k in dict.fromkeys([*ours, *theirs])
            if theirs.get(k) != ours.get(k)
        )
        raise ShardError(
            f"{root} was begun with other settings {diff}; use the same ones to resume, another output "
            "folder, or --overwrite"
        )


# ------------------------------------------------------------------------------- the driver
@dataclass
class DatasetProgress:
    """Where a run stands (handed to `progress` after each batch of windows the driver receives)."""

    videos: int  # videos to tokenize in this run (inputs less those complete before it)
    done: int = 0
    failed: int = 0
    windows: int = 0
    frames: int = 0  # frames of the tokenized videos (overlaps counted once)
    elapsed: float = 0.0
    # "tokenize", or "measure": the first pass of --budget run (videos: those without stored statistics;
    # frames stay 0)
    stage: str = "tokenize"

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class DatasetRun:
    """What `encode_dataset` did."""

    out: Path
    inputs: int
    skipped: int  # complete before this run
    completed: int  # completed by this run
    failures: list[dict]
    windows: int
    frames: int
    tokens_kept: int
    tokens_total: int
    shards: list[dict]  # written by this run
    elapsed: float  # seconds, end to end (Ray start and model loads included)
    pipeline_s: float = 0.0  # seconds from the dataset's execution start to the last shard
    first_rows_s: float = 0.0  # seconds from the execution start to the first tokens received
    ready_s: float = 0.0  # seconds from the execution start until the first model worker had loaded its model
    # per worker process id: peak resident bytes ("tokenizer", "decoder"), peak GPU bytes ("gpu"), and
    # the model workers' seconds spent in their calls ("busy")
    workers: dict = field(default_factory=dict)
    rate: float = 0.0  # the rate asked for
    budget: str = "calibrated"  # what it meant (BUDGETS)
    measure_s: float = 0.0  # seconds of the first pass of --budget run (0 where every video's statistics were stored)
    # kept and total tokens of every complete video in `out`, this run's and earlier ones' (the manifest's counts)
    folder_kept: int = 0
    folder_tokens: int = 0

    @property
    def shard_bytes(self) -> int:
        return sum(s["bytes"] for s in self.shards)

    @property
    def realized_rate(self) -> float:
        """The rate the folder's complete videos have: under --budget run, `rate` once every input is
        done (as close as [1/16, 1] per window allows)."""
        return self.folder_kept / self.folder_tokens if self.folder_tokens else 0.0


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None):
    """Use the Ray session this process already has; else join the cluster at `address` (or
    $RAY_ADDRESS); else start Ray on this machine (`num_cpus`, `object_store_memory` bytes), its
    workers importing this infotok. A session started here is shut down on the way out."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **quiet)
    else:
        here = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
            **quiet,
        )
    try:
        yield
    finally:
        ray.shutdown()


def _check_resources(concurrency: int, cpus_per_worker: float, num_gpus_per_worker: float, decode_cpus: float) -> None:
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    if concurrency * cpus_per_worker + decode_cpus > cpus:
        raise ValueError(
            f"{concurrency} model workers x {cpus_per_worker:g} CPUs + {decode_cpus:g} for reading "
            f"videos need {concurrency * cpus_per_worker + decode_cpus:g} CPUs; the Ray cluster has "
            f"{cpus:g} (lower --concurrency or --cpus-per-worker, or give Ray more with --num-cpus)"
        )
    if concurrency * num_gpus_per_worker > gpus:
        raise ValueError(
            f"{concurrency} model workers x {num_gpus_per_worker:g} GPUs need "
            f"{concurrency * num_gpus_per_worker:g} GPUs; the Ray cluster has {gpus:g}"
        )


class _Collector:
    """The driver's end of the pipeline: gathers each video's windows as they arrive (in any order, from
    any worker), hands whole videos to the shard writer, records failures and the workers' figures."""

    def __init__(self, writer, state: DatasetProgress, overlap: int, on_shard: Callable[[dict], None] | None):
        self.writer, self.state, self.overlap, self.on_shard = writer, state, overlap, on_shard
        self.videos: dict[str, dict] = {}  # path -> {"rows": {window: one-row table}, "total": windows or None}
        self.failed: set[str] = set()
        self.peaks: dict[str, dict] = {"tokenizer": {}, "decoder": {}, "gpu": {}, "busy": {}}
        self.ready = math.inf  # when the first model worker had loaded its model (epoch seconds)

    def add(self, table) -> None:
        import pyarrow.compute as pc

        peaks = self.peaks
        for pid, rss, dpid, drss, gpu, ready, busy in zip(
            *(table.column(k).to_pylist() for k in ("_pid", "_rss", "_dpid", "_drss", "_gpu", "_ready", "_busy"))
        ):
            self.ready = min(self.ready, ready)
            peaks["busy"][pid] = peaks["busy"].get(pid, 0.0) + busy
            peaks["tokenizer"][pid] = max(rss, peaks["tokenizer"].get(pid, 0))
            peaks["decoder"][dpid] = max(drss, peaks["decoder"].get(dpid, 0))
            if gpu:
                peaks["gpu"][pid] = max(gpu, peaks["gpu"].get(pid, 0))
        for path, error in zip(table.column("video").to_pylist(), table.column("error").to_pylist()):
            if error:
                self.fail(path, error)
        good = table.filter(pc.equal(table.column("error"), ""))
        for path in dict.fromkeys(good.column("video").to_pylist()):
            if path not in self.failed:
                self._add_video_rows(path, good.filter(pc.equal(good.column("video"), path)))

    def _add_video_rows(self, path: str, rows) -> None:
        import pyarrow as pa

        entry = self.videos.setdefault(path, {"rows": {}, "total": None})
        columns = (rows.column(k).to_pylist() for k in ("window", "start", "end", "_last"))
        for i, (window, start, end, last) in enumerate(zip(*columns)):
            if window in entry["rows"]:  # a retried task's duplicate
                continue
            entry["rows"][window] = rows.slice(i, 1)
            self.state.windows += 1
            self.state.frames += end - start - (self.overlap if window > 0 else 0)
            if last:
                entry["total"] = window + 1
        if entry["total"] is not None and len(entry["rows"]) == entry["total"]:
            del self.videos[path]
            self._shard(self.writer.add(pa.concat_tables([entry["rows"][w] for w in range(entry["total"])])))
            self.state.done += 1

    def fail(self, path: str, error: str) -> None:
        if path not in self.failed:
            self.failed.add(path)
            self.videos.pop(path, None)
            self.writer.fail(path, error)
            self.state.failed += 1

    def _shard(self, shard: dict | None) -> None:
        if shard is not None and self.on_shard:
            self.on_shard(shard)

    def close(self) -> None:
        for path in list(self.videos):  # cannot happen unless a worker lost rows
            self.fail(path, f"{path}: incomplete (windows {sorted(self.videos[path]['rows'])} arrived)")
        shards = len(self.writer.written)
        self.writer.close()
        for shard in self.writer.written[shards:]:
            self._shard(shard)


def _ray_stages(ray_data, items: list[dict], actor: type, settings: dict, workers: dict) -> Iterable:
    """The pipeline of both passes: a row per video (`items`, {"video": path, ...}) cut into windows by
    CPU tasks (`cut_windows`), batches of windows through model actors of class `actor`
    (`WindowTokenizer` or `WindowMeasurer`; `workers`: their keyword arguments and resources);
    yields the actors' Arrow tables as they arrive."""
    ds = ray_data.from_items(items, override_num_blocks=min(len(items), 10_000))
    ds = ds.map_batches(
        cut_windows,
        fn_kwargs={"settings": settings},
        batch_size=1,
        batch_format="numpy",
        num_cpus=workers["decode_cpus"],
        memory=CUT_TASK_MEMORY,
    )
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for max_restarts yet
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            actor,
            batch_size=workers["batch_size"],
            batch_format="numpy",
            fn_constructor_kwargs={
                "checkpoint": workers["checkpoint"],
                "device": workers["device"],
                "settings": settings,
                "weights_hash": workers["weights_hash"],
            },
            compute=ray_data.ActorPoolStrategy(size=workers["concurrency"]),
            # no silent restarts: a dead worker fails the run, which a rerun resumes (and Ray's warning
            # about restarting actors whose arguments live in the object store is not printed every run)
            max_restarts=0,
            num_cpus=workers["cpus_per_worker"],
            num_gpus=workers["num_gpus_per_worker"] or None,
        )
    return ds.iter_batches(batch_size=None, batch_format="pyarrow")


def encode_dataset(
    sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    rate: float = 0.5,
    strategy: str | None = None,
    selection: str | None = None,
    fill: str | None = None,
    window: int = 33,
    overlap: int = 5,
    size: int | None = None,
    max_size: int | None = None,
    seed: int = 0,
    start: int = 0,
    max_frames: int | None = None,
    budget: str = "calibrated",
    batch_size: int | None = None,
    concurrency: int = 1,
    num_gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    decode_cpus: float = 1.0,
    device: str | None = None,
    windows_per_shard: int = 2048,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    overwrite: bool = False,
    progress: Callable[[DatasetProgress], None] | None = None,
    on_shard: Callable[[dict], None] | None = None,
) -> DatasetRun:
    """Tokenize every video of `sources` (see `list_sources`) into Parquet shards in `out`.

    Settings as for `infotok encode` (`pipeline.TokenStream`); videos complete in `out`'s manifest
    are skipped (a rerun resumes), `overwrite` starts `out` afresh. `budget` says what `rate` means:
    "calibrated", each window on its own at the threshold (or slope) calibrated in the checkpoint on
    its training clips, so the average differs from `rate` on other data; "run" (strategy rd only),
    exactly `rate` over all the inputs, still adaptive, from a first pass (`budget_rates`; its
    statistics stay in `out`/budget, so a rerun resumes without measuring again and allocates the
    same). `batch_size` windows per model call (default: 8 on GPUs; 1 on CPUs, where batching saves
    no time and costs memory), `concurrency` model actors of `cpus_per_worker` CPUs and
    `num_gpus_per_worker` GPUs each (device: "cuda" when they have GPUs, else "cpu"), cutting tasks
    of `decode_cpus` CPUs. `progress` is called as windows arrive, `on_shard` after each shard enters
    the manifest. A video that fails is listed in `out`/failures.jsonl and in the result; the others
    go on.
    """
    require_scale()
    began = time.time()
    from .checkpoint import default_checkpoint
    from .model import InfoTok
    from .shards import ShardWriter, model_identity

    settings = tokenize_settings(
        rate, strategy, selection, window, overlap, size, max_size, seed, start, max_frames, fill, budget
    )
    if batch_size is None:
        batch_size = 8 if num_gpus_per_worker or str(device or "").startswith("cuda") else 1
    for name, value in (
        ("batch_size", batch_size),
        ("concurrency", concurrency),
        ("windows_per_shard", windows_per_shard),
    ):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if cpus_per_worker < 0 or num_gpus_per_worker < 0 or decode_cpus <= 0:
        raise ValueError("cpus_per_worker and num_gpus_per_worker must be >= 0, decode_cpus > 0")
    device = device or ("cuda" if num_gpus_per_worker > 0 else "cpu")
    videos = [str(p) for p in list_sources(sources)]
    if not videos:
        raise ValueError(f"no videos found in {' '.join(map(str, sources))}")
    # every worker loads the checkpoint the driver resolved (on a cluster: the same path on every node)
    checkpoint = os.path.abspath(checkpoint or default_checkpoint())
    probe_model = InfoTok.from_pretrained(checkpoint, device="cpu")  # checks the checkpoint before Ray starts
    identity = model_identity(probe_model)
    probe_model.check_rates(settings["rate"])
    settings["strategy"], settings["selection"], settings["fill"] = probe_model.choices(
        settings["strategy"], settings["selection"], settings["fill"]
    )
    check_windowing(window, overlap, probe_model.geometry)
    root = Path(out)
    if budget == "run":
        if settings["strategy"] != "rd":
            raise ValueError(
                f"budget run shares one budget by rate-distortion: use it with strategy rd (not {settings['strategy']})"
            )
        if settings["fill"] != "hold":
            probe_model.check_predictor("a run budget under the mask fill")
        grid = hold_grid(probe_model.code_range()).tolist() if settings["fill"] == "hold" else None
        key = statistics_key(identity, settings, grid)
        if overwrite:
            shutil.rmtree(root / BUDGET_DIR, ignore_errors=True)
    del probe_model
    if not overwrite:
        _check_resumable(root, settings)
    workers = dict(
        checkpoint=checkpoint,
        device=device,
        weights_hash=identity["weights_hash"],
        batch_size=batch_size,
        concurrency=concurrency,
        cpus_per_worker=cpus_per_worker,
        num_gpus_per_worker=num_gpus_per_worker,
        decode_cpus=decode_cpus,
    )
    run = DatasetRun(
        out=root,
        inputs=len(videos),
        skipped=0,
        completed=0,
        failures=[],
        windows=0,
        frames=0,
        tokens_kept=0,
        tokens_total=0,
        shards=[],
        elapsed=0.0,
        rate=settings["rate"],
        budget=budget,
    )

    with ExitStack() as stack:

        @functools.cache
        def ray_data():
            """Ray Data, Ray started (or joined) and checked on first use: a run with nothing to do never starts it."""
            stack.enter_context(ray_session(ray_address, num_cpus, object_store_memory))
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.enable_auto_log_stats = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": ours show
            _check_resources(concurrency, cpus_per_worker, num_gpus_per_worker, decode_cpus)
            return ray.data

        allocation = Allocation({}, {}, {})
        if budget == "run":

            def measure(paths: list[str]) -> Iterable:
                return _ray_stages(
                    ray_data(), [{"video": p} for p in paths], WindowMeasurer, settings | {"grid": grid}, workers
                )

            t0 = time.time()
            allocation = budget_rates(videos, root / BUDGET_DIR, settings, key, measure, progress)
            settings |= allocation.settings
            run.measure_s = time.time() - t0
        writer = ShardWriter(out, identity, settings, windows_per_shard=windows_per_shard, overwrite=overwrite)
        for path, error in allocation.failures.items():
            writer.fail(path, error)
        pending = [p for p in videos if not writer.is_complete(p) and p not in allocation.failures]
        state = DatasetProgress(videos=len(pending))
        run.skipped = sum(writer.is_complete(p) for p in videos)
        run.failures, run.shards = writer.failures, writer.written
        collector = _Collector(writer, state, settings["overlap"], on_shard)
        try:
            if pending:
                items = [{"video": p} | ({"rates": allocation.rates[p]} if budget == "run" else {}) for p in pending]
                t0 = time.time()
                for table in _ray_stages(ray_data(), items, WindowTokenizer, settings, workers):
                    run.first_rows_s = run.first_rows_s or time.time() - t0
                    collector.add(table)
                    state.elapsed = time.time() - t0
                    if progress:
                        progress(state)
                run.pipeline_s = time.time() - t0
                run.ready_s = max(0.0, collector.ready - t0) if collector.ready < math.inf else 0.0
            collector.close()
        except BaseException:
            writer.abort()
            raise
    counts = writer.manifest["counts"]
    run.folder_kept, run.folder_tokens = counts["tokens_kept"], counts["tokens_total"]
    counted = [writer.complete[p] for p in pending if writer.complete.get(p)]
    run.completed = len(counted)
    run.windows = sum(v["windows"] for v in counted)
    run.frames = sum(v["frames"] for v in counted)
    run.tokens_kept = sum(v["kept"] for v in counted)
    run.tokens_total = sum(v["tokens"] for v in counted)
    run.workers = collector.peaks
    run.elapsed = time.time() - began
    if progress and pending:
        state.elapsed = run.pipeline_s
        progress(state)
    return run


# ------------------------------------------------------------------------------- throughput
def measure_throughput(
    videos: Iterable[str | os.PathLike],
    checkpoint: str | os.PathLike | None,
    workers: int,
    *,
    batch_size: int = 8,
    device: str | None = None,
    num_gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    out: str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Tokenize `videos` into a fresh shard folder with `workers` model actors and report the speed.

    Starts its own local Ray (with workers x cpus_per_worker + 1 CPUs) unless this process already has
    a session. `settings` as for `encode_dataset` (rate, strategy, window, size, max_size, ...).
    Returns frames/s and windows/s over the pipeline (from the dataset's execution start to the last
    shard, model loads included) and after the first model worker had loaded its model, end-to-end
    seconds (with Ray's start-up), each model worker's busy seconds, each worker's peak resident memory
    in MiB (and GPU memory, on GPUs), and the bytes per window of the Parquet shards against those of
    the same tokens as one `.itok` file per video. Frames are the videos' (overlaps counted once).
    """
    from .shards import iter_video_tokens

    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="infotok-throughput-"))
    try:
        run = encode_dataset(
            videos,
            folder,
            checkpoint,
            batch_size=batch_size,
            concurrency=workers,
            num_gpus_per_worker=num_gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            device=device,
            num_cpus=math.ceil(workers * cpus_per_worker + 1),
            overwrite=True,
            **settings,
        )
        itok_bytes = 0
        with tempfile.TemporaryDirectory() as d:
            for i, (_, tokens) in enumerate(iter_video_tokens(folder)):
                itok_bytes += tokens.save(Path(d, f"{i}.itok")).stat().st_size
        loaded_s = run.pipeline_s - run.ready_s
        mib = 1 << 20

        def per_s(n: int, seconds: float) -> float | None:
            return n / seconds if seconds > 0 else None

        return {
            "workers": workers,
            "batch_size": batch_size,
            "device": device or ("cuda" if num_gpus_per_worker else "cpu"),
            "videos": run.completed,
            "failed": len(run.failures),
            "windows": run.windows,
            "frames": run.frames,
            "elapsed_s": run.elapsed,
            "pipeline_s": run.pipeline_s,
            "model_load_s": run.ready_s,
            "frames_per_s": per_s(run.frames, run.pipeline_s),
            "windows_per_s": per_s(run.windows, run.pipeline_s),
            "frames_per_s_after_load": per_s(run.frames, loaded_s),
            "windows_per_s_after_load": per_s(run.windows, loaded_s),
            "busy_s": {str(pid): round(v, 2) for pid, v in run.workers["busy"].items()},
            "peak_rss_mib": {
                kind: {str(pid): round(v / mib, 1) for pid, v in run.workers[kind].items()}
                for kind in ("tokenizer", "decoder")
            },
            "peak_gpu_mib": {str(pid): round(v / mib, 1) for pid, v in run.workers["gpu"].items()},
            "shard_bytes": run.shard_bytes,
            "itok_bytes": itok_bytes,
            "shard_bytes_per_window": run.shard_bytes / run.windows if run.windows else None,
            "itok_bytes_per_window": itok_bytes / run.windows if run.windows else None,
        }
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
