"""`infotok encode-dataset`: many videos into Parquet token shards, grid or 1D layout, on Ray Data."""

from __future__ import annotations

import sys

from .common import EXIT_BAD_INPUT, Progress, UsageError, _check_grid_rate, _one_d_options, _positive, _share, _specs
from .options import add_layout_options, add_tokenize_options


class _DatasetBar(Progress):
    """Videos done of the run's total, with windows and frames/s in the status line."""

    extra = ""

    def status(self) -> str:
        return super().status() + (f", {self.extra}" if self.extra else "")


def cmd_encode_dataset(args) -> int:
    one_d = args.layout == "1d"
    if one_d and args.budget == "run":
        raise UsageError("--budget run shares one budget over grid tokens; --layout 1d shares --rate within each video")
    if not one_d:
        _check_grid_rate(args)
    from ..dataset import require_scale

    require_scale()  # before any work; main reports a missing extra in one line
    import ray.exceptions

    from ..dataset import encode_dataset, encode_dataset_1d

    spec, windowing = _specs(args)
    bars: list[_DatasetBar] = []

    def progress(p) -> None:
        if not bars or bars[-1].stage != p.stage:  # a bar per stage: --budget run's first pass, then tokenizing
            if bars:
                bars[-1].close()
            bars.append(
                _DatasetBar(
                    p.videos, "encode-dataset" + (" (first pass)" if p.stage == "measure" else ""), unit="video"
                )
            )
            bars[-1].stage = p.stage
        bar = bars[-1]
        bar.extra = (
            f"{p.windows} windows measured"
            if p.stage == "measure"
            else f"{p.windows} windows, {p.frames_per_s:.1f} frames/s"
        ) + (f", {p.failed} failed" if p.failed else "")
        if bar.bar is not None:
            bar.bar.set_postfix_str(bar.extra, refresh=False)
        bar.update(p.done + p.failed - bar.count)

    options = dict(
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_gpus_per_worker=args.num_gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        device=args.device,
        windows_per_shard=args.windows_per_shard,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        overwrite=args.overwrite,
        progress=progress,
    )
    try:
        if one_d:
            run = encode_dataset_1d(
                args.inputs, args.out, args.checkpoint, **_one_d_options(args, windowing), **options
            )
        else:
            run = encode_dataset(
                args.inputs, args.out, args.checkpoint, spec=spec, windowing=windowing, budget=args.budget, **options
            )
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        print(
            f"infotok: error: the Ray pipeline failed ({lines[-1] if lines else exc.__class__.__name__}); "
            f"finished shards are kept: rerun the same command to resume",
            file=sys.stderr,
        )
        return 1
    finally:
        for bar in bars:
            bar.close()
    rate = run.frames / run.pipeline_s if run.pipeline_s else 0.0
    if one_d:  # a 1D rate counts against the grid's positions, which the run does not total
        kept = f"{run.tokens_kept} tokens (1D layout)"
    else:
        kept = (
            f"kept {run.tokens_kept}/{run.tokens_total} tokens, rate {run.realized_rate:.3f} realized"
            + (" over all complete videos" if run.skipped else "")
            + f" (asked {run.rate:g}, {run.budget})"
        )
    print(
        f"{run.out}: {run.completed} videos tokenized"
        + (f", {run.skipped} already complete" if run.skipped else "")
        + (f", {len(run.failures)} failed" if run.failures else "")
        + f"; {run.windows} windows, {run.frames} frames in {run.elapsed:.1f} s ({rate:.1f} frames/s), {kept}, "
        f"{len(run.shards)} new shards ({run.shard_bytes} bytes); manifest {run.out / 'manifest.json'}"
    )
    if run.failures:
        print(
            f"infotok: encode-dataset: {len(run.failures)} of {run.inputs} inputs failed "
            f"(listed in {run.out / 'failures.jsonl'}):",
            file=sys.stderr,
        )
        for failure in run.failures:
            print(f"  {failure['error']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def add_encode_dataset(sub) -> None:
    p = sub.add_parser(
        "encode-dataset",
        help="videos -> Parquet token shards, on Ray Data (resumable)",
        description="Tokenize many videos on Ray Data: CPU tasks read and cut them into windows, "
        "model actors tokenize batches of windows, and whole videos are written into "
        "Parquet shards listed in DIR/manifest.json (format: docs/FORMAT.md). A rerun "
        "skips the videos already complete; videos that fail are listed in "
        "DIR/failures.jsonl (exit code 2). Needs the extra: pip install 'infotok[scale]'.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SRC",
        help="video files, folders, glob patterns, or text files (.txt/.lst/.list) of paths, one per line",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="shard folder (created; a rerun resumes it)")
    add_tokenize_options(p, rate_type=_share)
    add_layout_options(p)
    p.add_argument(
        "--budget",
        choices=["calibrated", "run"],
        default="calibrated",
        help="what --rate means: calibrated (default), each window on its own at the threshold calibrated "
        "for --rate on the checkpoint's training clips, so the average realized on other data "
        "differs from --rate; run, exactly --rate over all the inputs, still adaptive (a still shot "
        "gets fewer tokens than a busy one), from a first pass whose statistics stay in DIR/budget "
        "(--strategy rd only)",
    )
    p.add_argument(
        "--checkpoint",
        help="checkpoint folder, readable at the same path on every Ray node "
        "(default: $INFOTOK_CHECKPOINT or the shipped InfoTok-Flex)",
    )
    p.add_argument(
        "--device", help="device of the model workers: cpu, cuda (default: cuda with --num-gpus-per-worker, else cpu)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        help="windows per model call (default: 8 with GPUs, 1 on CPUs, where batching is slower and costs "
        "memory); on a CPU the tokens are encode's whatever the batch, on a GPU up to kernel rounding (1: exactly)",
    )
    p.add_argument(
        "--concurrency", type=_positive, default=1, help="model workers (Ray actors, one model load each; default 1)"
    )
    p.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="GPUs per model worker (default 0)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per model worker (default 1)")
    p.add_argument(
        "--windows-per-shard",
        type=_positive,
        default=2048,
        help="about this many windows per shard; whole videos only (default 2048)",
    )
    p.add_argument(
        "--ray-address",
        help="join this Ray cluster (e.g. auto, or HOST:6379; default $RAY_ADDRESS, else start Ray on this machine)",
    )
    p.add_argument("--num-cpus", type=_positive, help="CPUs of the Ray started on this machine (default: all)")
    p.add_argument("--overwrite", action="store_true", help="start DIR afresh instead of resuming it")
    p.set_defaults(func=cmd_encode_dataset)
