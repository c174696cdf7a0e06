"""`make bench`: InfoTok against the peers' mechanisms on the evaluation clips; writes BENCHMARKS.md.

Everything is measured here, on this machine, from the shipped checkpoints: the fixed-rate base
tokenizer; InfoTok-Flex with static, global_elbo and uniform rates and error, order and random
selection; the per-clip oracle over rates {1/16, ..., 1}; the ElasticTok-style peer at fixed rates
and with ElasticTok's MSE-threshold binary search; throughput and peak memory of the CLI.
`experiments` measures and returns data, `report` writes the markdown from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from .experiments import log, motion, run, spatial_detail
from .report import markdown, plot

ROOT = Path(__file__).resolve().parents[3]

__all__ = ["main", "motion", "spatial_detail"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infotok.bench", description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "videos"))
    from ..checkpoint import SHIPPED_CHECKPOINT
    p.add_argument("--infotok", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--base", default=str(ROOT / "checkpoints" / "base"))
    p.add_argument("--elastic", default=str(ROOT / "checkpoints" / "elastic-style"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--no-vmaf", dest="vmaf", action="store_false")
    p.add_argument("--lpips-weights", metavar="FILE", help="torchvision AlexNet/VGG16 state dict: adds LPIPS")
    p.add_argument("--fvd-weights", metavar="FILE", help="TorchScript video feature network (I3D): adds FVD")
    p.add_argument("--long-video", default="bdd_e5cd93c4.mp4", help="clip used for the 60 vs 600 frame memory test")
    p.add_argument("--camera-video", default="bridgev2_toykitchen7.mp4",
                   help="fixed-camera clip whose still and moving cells' kept fractions are reported")
    p.add_argument("--release", choices=["full", "tiny"], default="full",
                   help="size of the release architecture timed with random weights (tiny: for tests)")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    args = p.parse_args(argv)
    start = time.time()
    result = run(args)
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
    Path(args.markdown).write_text(markdown(result, time.time() - start))
    log(f"wrote {args.markdown} in {(time.time() - start) / 60:.1f} min")
    return 0
