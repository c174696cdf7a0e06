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
in the order `InfoTok.encode` draws it, and handed to the batched call explicitly. On a GPU, kernels
may round differently for different batch sizes: `batch_size=1` gives `infotok encode --device cuda`'s
tokens exactly, larger batches the same up to such rounding.

Here: the driver (`encode_dataset`, `measure_throughput`). The Ray stages are `dataset_ray`'s, the
first pass `dataset_budget`'s, the settings and results `dataset_run`'s; their names are importable
from here too.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable

from .dataset_budget import (  # noqa: F401 (re-exported)
    BUDGET_DIR,
    Allocation,
    budget_rates,
    load_statistics,
    save_statistics,
    statistics_key,
)
from .dataset_ray import (  # noqa: F401 (re-exported)
    CUT_TASK_MEMORY,
    WindowMeasurer,
    WindowTokenizer,
    WindowTokenizer1D,
    _check_resources,
    _ray_stages,
    cut_windows,
    ray_session,
    window_draws,
)
from .dataset_run import (  # noqa: F401 (re-exported)
    BUDGETS,
    LIST_SUFFIXES,
    SHARED_KEYS,
    DatasetProgress,
    DatasetRun,
    _check_resumable,
    list_sources,
    require_scale,
    tokenize_settings,
)
from .geometry import check_windowing
from .router import hold_grid
from .spec import TokenizeSpec, Windowing


class _Collector:
    """The driver's end of the pipeline: gathers each video's windows as they arrive (in any order, from
    any worker), hands whole videos to the shard writer, records failures and the workers' figures."""

    def __init__(
        self,
        writer,
        state: DatasetProgress,
        overlap: int,
        on_shard: Callable[[dict], None] | None,
        finish: Callable | None = None,
    ):
        """`finish`: a whole video's rows -> the rows to store (the 1D layout's shared rate cuts them there)."""
        self.writer, self.state, self.overlap, self.on_shard, self.finish = writer, state, overlap, on_shard, finish
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
            rows = pa.concat_tables([entry["rows"][w] for w in range(entry["total"])])
            self._shard(self.writer.add(self.finish(rows) if self.finish else rows))
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


def encode_dataset(
    sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    spec: TokenizeSpec = TokenizeSpec(),
    windowing: Windowing = Windowing(),
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
    one_d: dict | None = None,
    **settings,
) -> DatasetRun:
    """Tokenize every video of `sources` (see `list_sources`) into Parquet shards in `out`.

    `spec` and `windowing` as for `infotok encode` (`pipeline.TokenStream`; their fields may also be
    given as keywords, `rate=0.5, window=17`; not per-window rates, a target PSNR or fps). Videos
    complete in `out`'s manifest are skipped (a rerun resumes), `overwrite` starts `out` afresh.
    `budget` says what `rate` means:
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
    `one_d`: the settings of a 1D-layout run (`encode_dataset_1d`), which replace `spec` and `windowing`.
    """
    require_scale()
    began = time.time()
    from .checkpoint import default_checkpoint
    from .model import InfoTok
    from .shards import ShardWriter, model_identity

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
    root, actor, finish = Path(out), WindowTokenizer, None
    if one_d is not None:
        from . import layout1d

        if budget != "calibrated" or settings:
            raise ValueError("a 1D-layout run takes its settings from encode_dataset_1d")
        checkpoint = os.path.abspath(checkpoint or layout1d.SHIPPED_1D)
        probe_model = layout1d.InfoTok1D.from_pretrained(checkpoint, device="cpu")
        identity, settings, actor = layout1d.shard_identity(probe_model), one_d, WindowTokenizer1D
        if settings["rate"] is not None:
            finish = functools.partial(layout1d.share_video_rows, rate=settings["rate"])
    else:
        settings = tokenize_settings(spec, windowing, budget, **settings)
        # every worker loads the checkpoint the driver resolved (on a cluster: the same path on every node)
        checkpoint = os.path.abspath(checkpoint or default_checkpoint())
        probe_model = InfoTok.from_pretrained(checkpoint, device="cpu")  # checks the checkpoint before Ray starts
        identity = model_identity(probe_model)
        settings["strategy"], settings["selection"], settings["fill"] = probe_model.choices(
            settings["strategy"], settings["selection"], settings["fill"]
        )
        density = probe_model.resolve_key_density(
            settings.pop("key_density", None), settings["fill"], settings["selection"]
        )
        settings |= {"key_density": density} if density != 1 else {}  # sparse key frames (`fill.key_lattice`)
        probe_model.check_rates(settings["rate"], fill=settings["fill"])
        check_windowing(settings["window"], settings["overlap"], probe_model.geometry)
        if budget == "run":
            if settings["strategy"] != "rd":
                raise ValueError(
                    "budget run shares one budget by rate-distortion: use it with strategy rd "
                    f"(not {settings['strategy']})"
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
        rate=settings["rate"] or 0.0,
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
        collector = _Collector(writer, state, settings["overlap"], on_shard, finish)
        try:
            if pending:
                items = [{"video": p} | ({"rates": allocation.rates[p]} if budget == "run" else {}) for p in pending]
                t0 = time.time()
                for table in _ray_stages(ray_data(), items, actor, settings, workers):
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


def encode_dataset_1d(
    sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    tokens: int | None = None,
    rate: float | None = None,
    target_psnr: float | None = None,
    size: int | None = None,
    max_size: int | None = 256,
    start: int = 0,
    max_frames: int | None = None,
    **run_options,
) -> DatasetRun:
    """`encode_dataset` for the 1D layout (`infotok encode-dataset --layout 1d`): a 1D checkpoint (default: the
    installed infotok-1d) writes each window's coarse-to-fine sequence, as `infotok encode --layout 1d` does:
    its first `tokens`, or the fewest that reach `target_psnr` there, or `rate` x the grid's positions shared
    among each video's windows (the windows' PSNR curves go to the driver, which cuts a video's sequences once
    all its windows are in); none of them: whole sequences. Windows of 33 frames overlapping by 1, frames
    resized as `size` / `max_size` say and centre-cropped to the layout's multiple, from frame `start`, at
    most `max_frames`. `run_options`: the workers, resuming, progress and Ray options of `encode_dataset`."""
    from .layout1d import dataset_settings

    one_d = dataset_settings(tokens, rate, target_psnr, size, max_size, start, max_frames)
    return encode_dataset(sources, out, checkpoint, one_d=one_d, **run_options)


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
