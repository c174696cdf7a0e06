"""A checkpoint's tokens at equal real bytes: mean PSNR and file BPP16 (zlib and prior-coded) per asked rate.

`python -m benchmarks.equal_bytes [CHECKPOINT [PRIOR [VIDEOS]]]` ("-" or nothing: the default checkpoint, the shipped
prior, the evaluation clips) runs `benchmarks.prior`'s protocol (each clip's first 97 frames, short side 256, centre
crop 256x256, the checkpoint's defaults, windows as `infotok encode --entropy prior` writes them) at asked 0.125,
0.25, 0.5 and 1, checks each prior-coded file decodes to the same tokens, and prints per rate the realized rate, the
PSNR and the BPP16 of both files (means over clips). Why: two tokenizers can only be ranked at equal bytes once
each is coded by a prior trained on its own tokens (docs/RATE_CONTROL.md, the fixed-rate base under hold).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from infotok.entropy import load_prior
from infotok.model import InfoTok

from .experiments import ROOT
from .prior import SIZE, load_clips, tokenizer_rows


def main(argv: list[str]) -> None:
    named = [None if a == "-" else a for a in argv] + [None] * 3
    model, prior = InfoTok.from_pretrained(named[0]), load_prior(named[1])
    clips = load_clips(Path(named[2] or ROOT.parent / "shared" / "data" / "videos"))
    rows = tokenizer_rows(model, prior, clips)
    print(f"{model.name} (model {model.model_hash}), prior {prior.hash}, {len(clips)} clips")
    for rate in sorted({r["rate"] for r in rows}):
        at = [r for r in rows if r["rate"] == rate]
        zlib, coded = (
            np.mean([r[f"{k}_bytes"] * 8 * 16 / (r["frames"] * SIZE**2) for r in at]) for k in ("zlib", "prior")
        )
        print(
            f"asked {rate:g}: realized {np.mean([r['realized_rate'] for r in at]):.3f}, "
            f"PSNR {np.mean([r['psnr'] for r in at]):.2f} dB, BPP16 zlib {zlib:.3f}, prior {coded:.3f}"
            f"{'' if all(r['lossless'] for r in at) else ', NOT LOSSLESS'}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
