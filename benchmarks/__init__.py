"""`make bench`: InfoTok against the peers' mechanisms on the evaluation clips; writes BENCHMARKS.md.

Everything is measured here, on this machine, from the shipped checkpoints: the fixed-rate base
tokenizer; InfoTok-Flex with static, global_elbo and uniform rates and error, order and random
selection; the per-clip oracle over rates {1/16, ..., 1}; the ElasticTok-style peer at fixed rates
and with ElasticTok's MSE-threshold binary search; throughput and peak memory of the CLI.
`experiments` and `rate_control` measure and return data, `run` calls them in order, `report` writes
the markdown from it. Not part of the installed package: run from the checkout (`make bench`).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from infotok.model import InfoTok
from infotok.perceptual import Perceptual

from . import rate_control
from .experiments import (
    Curves,
    Setup,
    batch_throughput,
    checkpoint_facts,
    cli_encode_720p,
    cli_resources,
    core_scaling,
    dataset_throughput,
    elastic_style,
    fixed_rate,
    flex_sweeps,
    list_clips,
    log,
    motion,
    oracle,
    release_speed,
    spatial_detail,
    still_versus_moving,
    throughput,
    token_refusal_seconds,
    whole_frame_router,
)
from .report import markdown, plot

ROOT = Path(__file__).resolve().parents[1]  # the checkout

__all__ = ["main", "motion", "spatial_detail"]


def run(args) -> dict:
    """Every experiment, in order; returns what `report.markdown` needs."""
    setup = Setup(
        list_clips(args.videos),
        args.size,
        args.frames,
        args.vmaf,
        Perceptual.from_paths(args.lpips_weights, args.fvd_weights),
    )
    infotok, base, elastic = (InfoTok.from_pretrained(p) for p in (args.infotok, args.base, args.elastic))
    curves = Curves()
    content = fixed_rate(setup, base, curves)
    t0 = time.time()
    clips = setup.clips(infotok)
    router_seconds = (time.time() - t0) / len(clips)
    still = still_versus_moving(infotok, clips)
    for name, row in still.items():
        content[name]["held_score"] = row["held_score"]
    flex_sweeps(setup, infotok, clips, curves)
    oracle(infotok, clips, curves)
    control = (
        rate_control.run(setup, infotok, clips, curves, args.long_video, args.camera_video)
        if infotok.predictor_config is not None
        else None
    )
    clip_scores = {c.name: c.score for c in clips}
    del clips
    whole = whole_frame_router(setup, infotok)
    search_passes = elastic_style(setup, elastic, curves)
    log("throughput and memory")
    long_video = Path(args.videos) / args.long_video
    resources = {
        "video": long_video.name,
        "model": throughput(infotok, args.size, args.frames),
        "scaling": core_scaling(infotok, args.frames),
        "cli_720p": cli_encode_720p(long_video, 60, args.infotok),
        "cli": {n: cli_resources(long_video, n, args.size, args.infotok) for n in (60, 600)},
        "release": release_speed(args.release, args.size, args.frames),
        "token_refusal_s": token_refusal_seconds(infotok),
        "batches": batch_throughput(infotok, args.size, args.frames),
        "dataset": dataset_throughput(setup.videos, args.infotok, args.size),
    }
    return {
        "curves": curves.points,
        "per_video": curves.per_video,
        "router_seconds_per_clip": router_seconds,
        "clip_scores": clip_scores,
        "clip_content": content,
        "still_versus_moving": still,
        "whole_frame_router": whole["clips"],
        "whole_frame_oracle_psnr": whole["oracle_psnr"],
        "search_passes_mean": search_passes,
        "resources": resources,
        "rate_control": control,
        "checkpoints": {
            "infotok": checkpoint_facts(infotok, args.infotok),
            "base": checkpoint_facts(base, args.base),
            "elastic": checkpoint_facts(elastic, args.elastic),
        },
        "protocol": {"videos": str(args.videos), "clips": len(setup.videos), "size": args.size, "frames": args.frames},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "videos"))
    from infotok.checkpoint import SHIPPED_CHECKPOINT

    p.add_argument("--infotok", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--base", default=str(ROOT / "checkpoints" / "base"))
    p.add_argument("--elastic", default=str(ROOT / "checkpoints" / "elastic-style"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--no-vmaf", dest="vmaf", action="store_false")
    p.add_argument("--lpips-weights", metavar="FILE", help="torchvision AlexNet/VGG16 state dict: adds LPIPS")
    p.add_argument("--fvd-weights", metavar="FILE", help="TorchScript video feature network (I3D): adds FVD")
    p.add_argument("--long-video", default="bdd_e5cd93c4.mp4", help="clip used for the 60 vs 600 frame memory test")
    p.add_argument(
        "--camera-video",
        default="bridgev2_toykitchen7.mp4",
        help="fixed-camera clip whose still and moving cells' kept fractions are reported",
    )
    p.add_argument(
        "--release",
        choices=["full", "tiny"],
        default="full",
        help="size of the release architecture timed with random weights (tiny: for tests)",
    )
    p.add_argument("--out", default="bench_out")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    p.add_argument("--report-only", metavar="BENCH_JSON", help="render the report from a bench.json, measuring nothing")
    args = p.parse_args(argv)
    start = time.time()
    if args.report_only:
        result = json.loads(Path(args.report_only).read_text())
    else:
        result = run(args)
        result["run_seconds"] = time.time() - start
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        keys = sorted({k for r in result["per_video"] for k in r})
        with open(out / "per_video.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(result["per_video"])
    # BENCHMARKS.md links docs/bench_rd.png beside it
    plot(result["curves"], result["protocol"], Path(args.markdown).parent / "docs" / "bench_rd.png")
    Path(args.markdown).write_text(markdown(result, result.get("run_seconds")))
    log(f"wrote {args.markdown} in {(time.time() - start) / 60:.1f} min")
    return 0
