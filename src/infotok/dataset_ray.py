"""The Ray side of `encode-dataset`: the session, the stages that run on Ray workers (CPU tasks that cut
videos into windows, model actors that tokenize or measure batches of them) and the pipeline of both.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .rate_policies import RATE_POLICIES

# memory each video-cutting task reserves (a scheduling hint to Ray). It also makes the cutting
# stage's remote arguments differ from the model actors', which keeps Ray Data from fusing the two:
# videos are read in CPU tasks, never on a model worker.
# Cutting tasks peaked at 601-643 MiB on the evaluation clips at short side 256 (torch and PyAV
# imported, one video's windows), and Ray warns past 80% of the reservation.
CUT_TASK_MEMORY = 1 << 30


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def window_draws(settings: dict, generator: np.random.Generator) -> tuple[float, int]:
    """What `InfoTok.encode` draws from a video's generator for its next window, in its order: the
    uniform strategy's rate (NaN for the other strategies, which draw none), then the seed of random
    selection (drawn whatever the selection)."""
    policy = RATE_POLICIES.get((settings["strategy"], None))  # `uniform` draws; static, global_elbo and rd do not
    draw = policy(None, settings["rate"]).draw(generator) if policy else None
    return (math.nan if draw is None else draw), int(generator.integers(2**62))


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
            generator = np.random.default_rng(settings.get("seed", 0))  # a 1D run has no seed: it draws nothing
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
    """Stands in for the per-video generators inside `InfoTok.encode`, which draws each window's
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
    `error` (a row per video whose windows could not be tokenized), the subclass's `extra_fields`, `_last`,
    and for measuring: the worker's peak memory (`_pid`, `_rss`, `_gpu`; the cutting task's `_dpid`, `_drss`),
    when its model was loaded (`_ready`, epoch seconds) and each row's share of the call's time (`_busy`).
    """

    @staticmethod
    def extra_fields() -> tuple:
        """(name, pyarrow type) of the columns a subclass adds for the driver (never stored)."""
        return ()

    def __init__(self, checkpoint: str | None, device: str, settings: dict, weights_hash: str | None = None):
        import torch

        from .checkpoint import CheckpointError

        self.torch = torch
        self.model = self.load_model(checkpoint, device)
        if weights_hash is not None and self.model.weights_hash != weights_hash:
            raise CheckpointError(
                f"{checkpoint}: this worker's copy of the checkpoint has weights "
                f"{self.model.weights_hash}, the driver's {weights_hash}; give every node the same file"
            )
        self.settings = settings
        self.ready = time.time()

    @staticmethod
    def load_model(checkpoint: str | None, device: str):
        from .model import InfoTok

        return InfoTok.from_pretrained(checkpoint, device=device)

    def tokenize_group(self, batch: dict, rows: list[int], x: np.ndarray) -> list[tuple]:
        """Windows `rows` of the batch, their frames `x` [B, T, H, W, 3] (one shape) -> (TokenWindow, fields) a
        row: fields of the row's video that differ from the batch's, and the `extra_fields`."""
        s = self.settings
        drawn = [float(batch["draw_rate"][i]) for i in rows]
        tokens = self.model.encode(
            self.torch.from_numpy(x),
            s["rate"],
            s["strategy"],
            s["selection"],
            _SeedReplay([int(batch["draw_seed"][i]) for i in rows]),
            rates=None if any(math.isnan(r) for r in drawn) else drawn,
            fill=s["fill"],
            key_density=s.get("key_density", 1.0),
        )
        return [(tokens.window(j, int(batch["start"][i]), int(batch["end"][i])), {}) for j, i in enumerate(rows)]

    def __call__(self, batch: dict):
        import pyarrow as pa

        from .shards import SCHEMA, VIDEO_FIELDS, records_table, window_record

        began = time.time()
        records, extra = [], []
        failed, groups = _shape_groups(batch)
        for i in failed:
            records.append(self._error_record(batch["video"][i], batch["error"][i]))
            extra.append(i)
        for (frames, height, width), rows in groups.items():
            try:
                made = self.tokenize_group(batch, rows, _stack_windows(batch, rows, (frames, height, width)))
            except Exception as exc:  # e.g. out of memory on one size: its videos fail, the rest go on
                for i in rows:
                    path = str(batch["video"][i])
                    records.append(self._error_record(path, f"{path}: tokenizing failed ({_one_line(exc)})"))
                    extra.append(i)
                continue
            for i, (window, fields) in zip(rows, made):
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
                video |= {k: v for k, v in fields.items() if k in VIDEO_FIELDS}
                own = {k: v for k, v in fields.items() if k not in VIDEO_FIELDS}
                records.append(window_record(window, int(batch["window"][i]), video) | {"error": ""} | own)
                extra.append(i)
        schema = SCHEMA.append(pa.field("error", pa.string()))
        for name, kind in self.extra_fields():
            schema = schema.append(pa.field(name, kind))
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


class WindowTokenizer1D(WindowTokenizer):
    """Ray Data callable class of a 1D-layout run (`dataset.encode_dataset_1d`): loads a `layout1d.InfoTok1D` and
    makes each window's coarse-to-fine sequence (`InfoTok1D.dataset_window`), its frames first centre-cropped to
    the layout's multiple; under a rate each row also carries the window's PSNR curve and grid positions
    (`_curve`, `_grid`), from which the driver cuts the video's sequences (`layout1d.share_video_rows`)."""

    @staticmethod
    def extra_fields() -> tuple:
        import pyarrow as pa

        return (("_curve", pa.list_(pa.float64())), ("_grid", pa.int64()))

    @staticmethod
    def load_model(checkpoint: str | None, device: str):
        from .layout1d import InfoTok1D

        return InfoTok1D.from_pretrained(checkpoint, device=device)

    def tokenize_group(self, batch: dict, rows: list[int], x: np.ndarray) -> list[tuple]:
        from .layout1d import centre_crop

        top, left, h, w = centre_crop(x.shape[2], x.shape[3], self.model.align)
        x = x[:, :, top : top + h, left : left + w]
        out = []
        for j, i in enumerate(rows):
            window, curve, grid = self.model.dataset_window(
                x[j], int(batch["start"][i]), int(batch["end"][i]), self.settings
            )
            out.append((window, {"width": w, "height": h, "_curve": curve, "_grid": grid}))
        return out


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
                s = self.settings
                stats = window_statistics(self.model, x, s["fill"], s["grid"], s.get("key_density", 1.0))
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
