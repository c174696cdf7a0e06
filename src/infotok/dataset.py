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

import logging
import math
import os
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .extras import require
from .fill import check_fill
from .geometry import check_windowing
from .router import check_rate, check_strategy, uniform_rate
from .selection import check_selection

# memory each video-cutting task reserves (a scheduling hint to Ray). It also makes the cutting
# stage's remote arguments differ from the model actors', which keeps Ray Data from fusing the two:
# videos are read in CPU tasks, never on a model worker.
CUT_TASK_MEMORY = 512 << 20
LIST_SUFFIXES = {".txt", ".lst", ".list"}  # a SRC with one of these is a text file of paths


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
            entries = [line if os.path.isabs(line) else str(p.parent / line)
                       for line in lines if line and not line.startswith("#")]
            found += list_videos(entries)
        else:
            found += list_videos([item])
    return list(dict.fromkeys(Path(os.path.abspath(f)) for f in found))


def tokenize_settings(rate: float = 0.5, strategy: str | None = None, selection: str | None = None,
                      window: int = 33, overlap: int = 5, size: int | None = None, max_size: int | None = None,
                      seed: int = 0, start: int = 0, max_frames: int | None = None, fill: str | None = None) -> dict:
    """The settings of a dataset run (those of `pipeline.TokenStream`), checked; the manifest records
    them and a resumed run must give the same."""
    check_windowing(window, overlap)
    if start < 0:
        raise ValueError(f"start must be a frame index >= 0, got {start}")
    return {"rate": check_rate(rate), "strategy": check_strategy(strategy) if strategy is not None else None,
            "selection": check_selection(selection) if selection is not None else None,  # None: the checkpoint's default
            "fill": check_fill(fill) if fill is not None else None,  # likewise
            "window": int(window), "overlap": int(overlap), "size": size, "max_size": max_size, "seed": int(seed),
            "start": int(start), "max_frames": max_frames}


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
    defaults = {"window": -1, "start": 0, "end": 0, "width": 0, "height": 0, "source_width": 0, "source_height": 0,
                "resize": -1, "fps": 0.0, "frames": b"", "last": False, "draw_rate": math.nan, "draw_seed": 0,
                "error": ""}
    row = {"video": video} | defaults | fields | {"_dpid": os.getpid(), "_drss": _peak_rss()}
    return {k: np.array([v], dtype=object if k == "frames" else None) for k, v in row.items()}


def cut_windows(batch: dict, settings: dict) -> Iterator[dict]:
    """Ray Data stage (a generator over one-row batches of {"video": path}): read each video and yield
    one row per window, frames as raw bytes; a video that cannot be read yields one row whose `error`
    says why (the windows it yielded before are then dropped by the driver)."""
    from .pipeline import video_source
    from .video import iter_windows

    for path in batch["video"]:
        path = str(path)
        try:
            frames, info, resize = video_source(path, settings["size"], None, settings["start"],
                                                settings["max_frames"], settings["max_size"])
            generator = np.random.default_rng(settings["seed"])
            held = None
            for i, (start, end, chunk) in enumerate(iter_windows(frames, settings["window"], settings["overlap"])):
                if held is not None:
                    yield _row(path, **held)
                rate, seed = window_draws(settings, generator)
                held = dict(window=i, start=start, end=end, width=chunk.shape[2], height=chunk.shape[1],
                            source_width=info.width, source_height=info.height,
                            resize=-1 if resize is None else resize, fps=info.fps,
                            frames=np.ascontiguousarray(chunk).tobytes(), draw_rate=rate, draw_seed=seed)
            if held is None:
                raise ValueError(f"{path}: no frames" + (f" at or after frame {settings['start']}"
                                                        if settings["start"] else ""))
            yield _row(path, **held, last=True)
        except Exception as exc:  # a bad video is reported, the others go on
            message = _one_line(exc)
            yield _row(path, error=message if path in message else f"{path}: {message}")


# ---------------------------------------------------------------- stage 3: tokenize (model actors)
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
            raise CheckpointError(f"{checkpoint}: this worker's copy of the checkpoint has weights "
                                  f"{self.model.weights_hash}, the driver's {weights_hash}; give every node the same file")
        self.settings = settings
        self.ready = time.time()

    def __call__(self, batch: dict):
        import pyarrow as pa

        from .shards import SCHEMA, records_table, window_record

        began = time.time()
        s = self.settings
        n = len(batch["video"])
        records, extra = [], []
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            if batch["error"][i]:
                records.append(self._error_record(batch["video"][i], batch["error"][i]))
                extra.append(i)
                continue
            shape = (int(batch["end"][i] - batch["start"][i]), int(batch["height"][i]), int(batch["width"][i]))
            groups.setdefault(shape, []).append(i)
        for (frames, height, width), rows in groups.items():
            try:
                x = np.stack([np.frombuffer(batch["frames"][i], np.uint8).reshape(frames, height, width, 3)
                              for i in rows])
                rates = [float(batch["draw_rate"][i]) for i in rows] if s["strategy"] == "uniform" else None
                tokens = self.model.encode(self.torch.from_numpy(x), s["rate"], s["strategy"], s["selection"],
                                           _SeedReplay([int(batch["draw_seed"][i]) for i in rows]), rates=rates,
                                           fill=s["fill"])
            except Exception as exc:  # e.g. out of memory on one size: its videos fail, the rest go on
                for i in rows:
                    path = str(batch["video"][i])
                    records.append(self._error_record(path, f"{path}: tokenizing failed ({_one_line(exc)})"))
                    extra.append(i)
                continue
            for j, i in enumerate(rows):
                resize = int(batch["resize"][i])
                video = {"video": str(batch["video"][i]), "num_windows": -1, "num_frames": -1,
                         "fps": float(batch["fps"][i]), "width": width, "height": height,
                         "source_width": int(batch["source_width"][i]), "source_height": int(batch["source_height"][i]),
                         "resize": None if resize < 0 else resize}
                records.append(window_record(tokens.window(j, int(batch["start"][i]), int(batch["end"][i])),
                                             int(batch["window"][i]), video) | {"error": ""})
                extra.append(i)
        schema = SCHEMA.append(pa.field("error", pa.string()))
        table = records_table(records, schema)
        gpu = int(self.torch.cuda.max_memory_allocated()) if self.model.device.type == "cuda" else 0
        busy = (time.time() - began) / max(1, len(extra))
        columns = {"_ready": pa.array([self.ready] * len(extra), pa.float64()),
                   "_busy": pa.array([busy] * len(extra), pa.float64()),
                   "_last": pa.array([bool(batch["last"][i]) for i in extra]),
                   "_pid": pa.array([os.getpid()] * len(extra), pa.int64()),
                   "_rss": pa.array([_peak_rss()] * len(extra), pa.int64()),
                   "_gpu": pa.array([gpu] * len(extra), pa.int64()),
                   "_dpid": pa.array([int(batch["_dpid"][i]) for i in extra], pa.int64()),
                   "_drss": pa.array([int(batch["_drss"][i]) for i in extra], pa.int64())}
        for name, column in columns.items():
            table = table.append_column(name, column)
        return table

    @staticmethod
    def _error_record(path, message) -> dict:
        return {"video": str(path), "video_id": "", "window": -1, "num_windows": -1, "start": 0, "end": 0,
                "num_frames": -1, "fps": 0.0, "width": 0, "height": 0, "source_width": 0, "source_height": 0,
                "resize": None, "rate": 0.0, "score": math.nan, "kept": 0, "t": 0, "h": 0, "w": 0, "mask": b"",
                "indices": np.zeros(0, np.uint16), "error": str(message)}


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

    @property
    def shard_bytes(self) -> int:
        return sum(s["bytes"] for s in self.shards)


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
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory,
                 runtime_env={"env_vars": {"PYTHONPATH": path}}, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


def _check_resources(concurrency: int, cpus_per_worker: float, num_gpus_per_worker: float,
                     decode_cpus: float) -> None:
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    if concurrency * cpus_per_worker + decode_cpus > cpus:
        raise ValueError(f"{concurrency} model workers x {cpus_per_worker:g} CPUs + {decode_cpus:g} for reading "
                         f"videos need {concurrency * cpus_per_worker + decode_cpus:g} CPUs; the Ray cluster has "
                         f"{cpus:g} (lower --concurrency or --cpus-per-worker, or give Ray more with --num-cpus)")
    if concurrency * num_gpus_per_worker > gpus:
        raise ValueError(f"{concurrency} model workers x {num_gpus_per_worker:g} GPUs need "
                         f"{concurrency * num_gpus_per_worker:g} GPUs; the Ray cluster has {gpus:g}")


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
        for pid, rss, dpid, drss, gpu, ready, busy in zip(*(table.column(k).to_pylist() for k in (
                "_pid", "_rss", "_dpid", "_drss", "_gpu", "_ready", "_busy"))):
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


def encode_dataset(sources: Iterable[str | os.PathLike], out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                   *, rate: float = 0.5, strategy: str | None = None, selection: str | None = None,
                   fill: str | None = None, window: int = 33,
                   overlap: int = 5, size: int | None = None, max_size: int | None = None, seed: int = 0,
                   start: int = 0, max_frames: int | None = None, batch_size: int = 8, concurrency: int = 1,
                   num_gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, decode_cpus: float = 1.0,
                   device: str | None = None, windows_per_shard: int = 2048, ray_address: str | None = None,
                   num_cpus: int | None = None, object_store_memory: int | None = None, overwrite: bool = False,
                   progress: Callable[[DatasetProgress], None] | None = None,
                   on_shard: Callable[[dict], None] | None = None) -> DatasetRun:
    """Tokenize every video of `sources` (see `list_sources`) into Parquet shards in `out`.

    Settings as for `infotok encode` (`pipeline.TokenStream`); videos complete in `out`'s manifest
    are skipped (a rerun resumes), `overwrite` starts `out` afresh. `batch_size` windows per model
    call, `concurrency` model actors of `cpus_per_worker` CPUs and `num_gpus_per_worker` GPUs each
    (device: "cuda" when they have GPUs, else "cpu"), cutting tasks of `decode_cpus` CPUs.
    `progress` is called as windows arrive, `on_shard` after each shard enters the manifest.
    A video that fails is listed in `out`/failures.jsonl and in the result; the others go on.
    """
    require_scale()
    began = time.time()
    from .checkpoint import default_checkpoint
    from .model import InfoTok
    from .shards import ShardWriter, model_identity

    settings = tokenize_settings(rate, strategy, selection, window, overlap, size, max_size, seed, start, max_frames,
                                 fill)
    for name, value in (("batch_size", batch_size), ("concurrency", concurrency), ("windows_per_shard", windows_per_shard)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if cpus_per_worker < 0 or num_gpus_per_worker < 0 or decode_cpus <= 0:
        raise ValueError("cpus_per_worker and num_gpus_per_worker must be >= 0, decode_cpus > 0")
    device = device or ("cuda" if num_gpus_per_worker > 0 else "cpu")
    videos = list_sources(sources)
    if not videos:
        raise ValueError(f"no videos found in {' '.join(map(str, sources))}")
    # every worker loads the checkpoint the driver resolved (on a cluster: the same path on every node)
    checkpoint = os.path.abspath(checkpoint or default_checkpoint())
    probe_model = InfoTok.from_pretrained(checkpoint, device="cpu")  # checks the checkpoint before Ray starts
    identity = model_identity(probe_model)
    probe_model.check_rates(settings["rate"])
    settings["strategy"], settings["selection"], settings["fill"] = probe_model.choices(
        settings["strategy"], settings["selection"], settings["fill"])
    check_windowing(window, overlap, probe_model.geometry)
    del probe_model
    writer = ShardWriter(out, identity, settings, windows_per_shard=windows_per_shard, overwrite=overwrite)
    pending = [str(p) for p in videos if not writer.is_complete(str(p))]
    state = DatasetProgress(videos=len(pending))
    run = DatasetRun(out=Path(out), inputs=len(videos), skipped=len(videos) - len(pending), completed=0,
                     failures=writer.failures, windows=0, frames=0, tokens_kept=0, tokens_total=0,
                     shards=writer.written, elapsed=0.0)
    if not pending:
        writer.close()
        run.elapsed = time.time() - began
        return run

    collector = _Collector(writer, state, settings["overlap"], on_shard)
    try:
        with ray_session(ray_address, num_cpus, object_store_memory):
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.enable_auto_log_stats = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": ours show
            _check_resources(concurrency, cpus_per_worker, num_gpus_per_worker, decode_cpus)
            ds = ray.data.from_items([{"video": p} for p in pending], override_num_blocks=min(len(pending), 10_000))
            ds = ds.map_batches(cut_windows, fn_kwargs={"settings": settings}, batch_size=1, batch_format="numpy",
                                num_cpus=decode_cpus, memory=CUT_TASK_MEMORY)
            ds = ds.map_batches(WindowTokenizer, batch_size=batch_size, batch_format="numpy",
                                fn_constructor_kwargs={"checkpoint": checkpoint, "device": device, "settings": settings,
                                                       "weights_hash": identity["weights_hash"]},
                                compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=cpus_per_worker,
                                num_gpus=num_gpus_per_worker or None)
            t0 = time.time()
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                run.first_rows_s = run.first_rows_s or time.time() - t0
                collector.add(table)
                state.elapsed = time.time() - t0
                if progress:
                    progress(state)
            collector.close()
            run.pipeline_s = time.time() - t0
            run.ready_s = max(0.0, collector.ready - t0) if collector.ready < math.inf else 0.0
    except BaseException:
        writer.abort()
        raise
    counted = [writer.complete[p] for p in pending if writer.complete.get(p)]
    run.completed = len(counted)
    run.windows = sum(v["windows"] for v in counted)
    run.frames = sum(v["frames"] for v in counted)
    run.tokens_kept = sum(v["kept"] for v in counted)
    run.tokens_total = sum(v["tokens"] for v in counted)
    run.workers = collector.peaks
    run.elapsed = time.time() - began
    if progress:
        state.elapsed = run.pipeline_s
        progress(state)
    return run


# ------------------------------------------------------------------------------- throughput
def measure_throughput(videos: Iterable[str | os.PathLike], checkpoint: str | os.PathLike | None, workers: int,
                       *, batch_size: int = 8, device: str | None = None, num_gpus_per_worker: float = 0.0,
                       cpus_per_worker: float = 1.0, out: str | os.PathLike | None = None, **settings) -> dict:
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
        run = encode_dataset(videos, folder, checkpoint, batch_size=batch_size, concurrency=workers,
                             num_gpus_per_worker=num_gpus_per_worker, cpus_per_worker=cpus_per_worker, device=device,
                             num_cpus=math.ceil(workers * cpus_per_worker + 1), overwrite=True, **settings)
        itok_bytes = 0
        with tempfile.TemporaryDirectory() as d:
            for i, (_, tokens) in enumerate(iter_video_tokens(folder)):
                itok_bytes += tokens.save(Path(d, f"{i}.itok")).stat().st_size
        loaded_s = run.pipeline_s - run.ready_s
        mib = 1 << 20

        def per_s(n: int, seconds: float) -> float | None:
            return n / seconds if seconds > 0 else None

        return {
            "workers": workers, "batch_size": batch_size, "device": device or ("cuda" if num_gpus_per_worker else "cpu"),
            "videos": run.completed, "failed": len(run.failures), "windows": run.windows, "frames": run.frames,
            "elapsed_s": run.elapsed, "pipeline_s": run.pipeline_s, "model_load_s": run.ready_s,
            "frames_per_s": per_s(run.frames, run.pipeline_s), "windows_per_s": per_s(run.windows, run.pipeline_s),
            "frames_per_s_after_load": per_s(run.frames, loaded_s),
            "windows_per_s_after_load": per_s(run.windows, loaded_s),
            "busy_s": {str(pid): round(v, 2) for pid, v in run.workers["busy"].items()},
            "peak_rss_mib": {kind: {str(pid): round(v / mib, 1) for pid, v in run.workers[kind].items()}
                             for kind in ("tokenizer", "decoder")},
            "peak_gpu_mib": {str(pid): round(v / mib, 1) for pid, v in run.workers["gpu"].items()},
            "shard_bytes": run.shard_bytes, "itok_bytes": itok_bytes,
            "shard_bytes_per_window": run.shard_bytes / run.windows if run.windows else None,
            "itok_bytes_per_window": itok_bytes / run.windows if run.windows else None,
        }
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
