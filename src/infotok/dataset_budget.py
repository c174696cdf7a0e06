"""The first pass of `encode-dataset --budget run` on the driver: each video's window statistics, stored
so a killed run resumes without measuring again, and one allocation of exactly `rate` over all of them.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .dataset_ray import WindowMeasurer
from .dataset_run import SHARED_KEYS, DatasetProgress
from .files import atomic_write
from .router import shared_rates

BUDGET_DIR = "budget"  # DIR/budget/<video_id>.npz: each video's first-pass statistics under --budget run


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
    fill, the sparse key frames and the grid of thresholds), as text: stored ones with another key are measured
    again."""
    cut = {k: settings[k] for k in ("window", "overlap", "size", "max_size", "start", "max_frames")}
    key = {"key_density": settings["key_density"]} if "key_density" in settings else {}  # as older keys without
    return json.dumps(
        cut | key | {"weights_hash": identity["weights_hash"], "fill": settings["fill"], "grid": grid}, sort_keys=True
    )
