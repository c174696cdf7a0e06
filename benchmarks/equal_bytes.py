"""A checkpoint's tokens at equal real bytes: mean PSNR and file BPP16 (zlib and prior-coded) per asked rate.

`python -m benchmarks.equal_bytes [CHECKPOINT [PRIOR [VIDEOS]]] [--against CHECKPOINT PRIOR]` ("-" or nothing: the
default checkpoint, the shipped prior, the evaluation clips) runs `benchmarks.prior`'s protocol (each clip's first 97
frames, short side 256, centre crop 256x256, the checkpoint's defaults, windows as `infotok encode --entropy prior`
writes them) at asked 0.125, 0.25, 0.5 and 1, checks each prior-coded file decodes to the same tokens, and prints per
rate the realized rate, the PSNR and the BPP16 of both files (means over clips). With `--against`, the same for a
second checkpoint and its prior, then the first's BD-rate against the second (`metrics.bd_rate`, linear fit) in
tokens, zlib bytes and prior-coded bytes, and each point's PSNR against the other curve's at its prior-coded
bytes (`metrics.psnr_at`), which says at what sizes each wins. Why: two tokenizers can only be ranked at equal bytes
once each is coded by a prior trained on its own tokens (docs/RATE_CONTROL.md, the fixed-rate base under hold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from infotok.entropy import load_prior
from infotok.metrics import bd_rate, psnr_at
from infotok.model import InfoTok

from .experiments import ROOT
from .prior import SIZE, load_clips, tokenizer_rows


def measure(checkpoint: str | None, prior_folder: str | None, clips) -> dict[str, list[float]]:
    """Print one checkpoint's rows; return its curves (mean realized rate, BPP16 zlib and prior, PSNR per rate)."""
    model, prior = InfoTok.from_pretrained(checkpoint), load_prior(prior_folder)
    rows = tokenizer_rows(model, prior, clips)
    print(f"{model.name} (model {model.model_hash}), prior {prior.hash}, {len(clips)} clips")
    curves: dict[str, list[float]] = {"tokens": [], "zlib": [], "prior": [], "psnr": [], "asked": []}
    for rate in sorted({r["rate"] for r in rows}):
        at = [r for r in rows if r["rate"] == rate]
        zlib, coded = (
            np.mean([r[f"{k}_bytes"] * 8 * 16 / (r["frames"] * SIZE**2) for r in at]) for k in ("zlib", "prior")
        )
        realized, quality = np.mean([r["realized_rate"] for r in at]), np.mean([r["psnr"] for r in at])
        print(
            f"asked {rate:g}: realized {realized:.3f}, PSNR {quality:.2f} dB, BPP16 zlib {zlib:.3f}, prior {coded:.3f}"
            f"{'' if all(r['lossless'] for r in at) else ', NOT LOSSLESS'}"
        )
        for key, value in zip(curves, (realized, zlib, coded, quality, rate)):
            curves[key].append(float(value))
    return curves


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.equal_bytes", description=__doc__.split("\n")[0])
    p.add_argument("named", nargs="*", metavar="CHECKPOINT PRIOR VIDEOS", help='each optional, "-": the default')
    p.add_argument("--against", nargs=2, metavar=("CHECKPOINT", "PRIOR"), help="a second tokenizer to rank against")
    args = p.parse_args(argv)
    named = [None if a == "-" else a for a in args.named] + [None] * 3
    clips = load_clips(Path(named[2] or ROOT.parent / "shared" / "data" / "videos"))
    first = measure(named[0], named[1], clips)
    if args.against:
        second = measure(*(None if a == "-" else a for a in args.against), clips)
        bd = {
            key: bd_rate(second[key], second["psnr"], first[key], first["psnr"], fit="linear")
            for key in ("tokens", "zlib", "prior")
        }
        print("BD-rate of the first against the second:", ", ".join(f"{k} {v:+.1f}%" for k, v in bd.items()))
        print("Where each wins, prior-coded: each point against the other's curve at its bytes")
        for name, own, other in (("first", first, second), ("second", second, first)):
            for asked, coded, quality in zip(own["asked"], own["prior"], own["psnr"]):
                there = psnr_at(other["prior"], other["psnr"], coded)
                beside = (
                    "outside the other's curve"
                    if np.isnan(there)
                    else f"the other {there:.2f} dB ({quality - there:+.2f})"
                )
                print(f"  {name} at asked {asked:g}: BPP16 {coded:.3f}, {quality:.2f} dB; {beside}")


if __name__ == "__main__":
    main(sys.argv[1:])
