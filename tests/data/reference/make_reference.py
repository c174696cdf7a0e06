"""Write the reference token files that the bit-identity test compares against.

Run from the repository root: `python tests/data/reference/make_reference.py`. The files of the
first five cases were first written by commit f123d6f (before the batched core); all were written
again, by this script unchanged but for the added cases, when the shipped weights changed (tiled
attention and the value predictor, stage 5-6 of its TRAINING.md), after `tests/test_reference.py`
had passed on the old weights at that commit. The `hold` cases were added with the fill (the
other files came out byte-identical); the `drift` cases with that selection, when `rd` under `hold`
moved from the latent change to the drift (`rd-temporal-hold-0.5` went; the rest came out
byte-identical). All were written again for stage 7 (a new decoder, so new frames and model hash
in every header; the encoder is unchanged, so only the error-ranked masks moved). A change to the tokenization path that alters a single token
or decoded pixel on the CPU fails the test.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from infotok import InfoTok
from infotok.video import synthetic_video

HERE = Path(__file__).resolve().parent
# (name, strategy, selection, rate, fill): the paper's baselines, the peers' selections, rate control
CASES = [
    ("elbo-error-0.5", "global_elbo", "error", 0.5, "mask"),
    ("static-error-0.25", "static", "error", 0.25, "mask"),
    ("static-error-1", "static", "error", 1.0, "mask"),
    ("static-order-0.5", "static", "order", 0.5, "mask"),
    ("uniform-random-0.5", "uniform", "random", 0.5, "mask"),
    ("static-value-0.25", "static", "value", 0.25, "mask"),
    ("rd-value-0.5", "rd", "value", 0.5, "mask"),
    ("target-value-24", "target", "value", 24.0, "mask"),  # rate: the target PSNR
    ("static-temporal-hold-0.25", "static", "temporal", 0.25, "hold"),
    ("static-drift-hold-0.25", "static", "drift", 0.25, "hold"),
    ("rd-drift-hold-0.5", "rd", "drift", 0.5, "hold"),
]
VIDEO = dict(num_frames=45, height=48, width=72, seed=3)  # three windows of 17 frames overlapping by 3
WINDOW, OVERLAP = 17, 3


def tokenize_settings(strategy: str, selection: str, rate: float, fill: str = "mask") -> dict:
    """A case's arguments for `tokenize`: a target case's `rate` is its target PSNR."""
    if strategy == "target":
        return {"target_psnr": rate, "selection": selection, "fill": fill}
    return {"rate": rate, "strategy": strategy, "selection": selection, "fill": fill}


def main() -> None:
    torch.set_num_threads(1)
    model = InfoTok.from_pretrained()
    video = synthetic_video(**VIDEO)
    digests = {}
    for name, strategy, selection, rate, fill in CASES:
        tokens = model.tokenize(video, **tokenize_settings(strategy, selection, rate, fill), window=WINDOW,
                                overlap=OVERLAP, seed=5)
        tokens.save(HERE / f"{name}.itok", overwrite=True)
        frames = model.detokenize(tokens)
        digests[name] = {"strategy": strategy, "selection": selection, "rate": rate, "fill": fill,
                         "frames_sha256": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()}
    (HERE / "reference.json").write_text(json.dumps({"video": VIDEO, "window": WINDOW, "overlap": OVERLAP,
                                                     "seed": 5, "cases": digests}, indent=2) + "\n")


if __name__ == "__main__":
    main()
