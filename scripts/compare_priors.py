"""Token priors on the same tokens: the bytes of each prior-coded file over the zlib file (src/infotok/weights/
prior-flex/TRAINING.md's table), for windows that continue each other (the default) and independent ones.

`python scripts/compare_priors.py OLD NEW [MORE...] [--videos DIR]`: prior folders (an earlier shipped prior:
`git archive COMMIT src/infotok/weights/prior-flex | tar -x -C /tmp/old`), each a column; DIR defaults to the
evaluation clips. Each clip's first 97 frames, short side 256, centre crop 256x256, the shipped InfoTok-Flex's
defaults at asked rates 0.125, 0.25, 0.5 and 1; every prior-coded file is read back and compared token for token.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from infotok import InfoTok
from infotok.entropy import load_prior
from infotok.tokens import Tokens
from infotok.video import list_videos, read_video, resize_and_crop

RATES = (0.125, 0.25, 0.5, 1.0)


def coded_bytes(tokens: Tokens, prior, folder: Path) -> int:
    path = tokens.save(folder / "p.itok", prior=prior, overwrite=True)
    back = Tokens.load(path, prior)
    if not all(
        np.array_equal(a.mask, b.mask) and np.array_equal(a.indices, b.indices)
        for a, b in zip(tokens.windows, back.windows)
    ):
        raise AssertionError("a prior-coded file did not decode to its tokens")
    return path.stat().st_size


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python scripts/compare_priors.py", description=__doc__.split("\n")[0])
    p.add_argument("priors", nargs="+", help="prior folders, each a column")
    p.add_argument("--videos", default="../shared/data/videos")
    args = p.parse_args(argv)
    model, priors = InfoTok.from_pretrained(), [load_prior(folder) for folder in args.priors]
    clips = []
    for video in list_videos([args.videos]):
        frames, info = read_video(video, max_frames=97)
        clips.append((resize_and_crop(frames, 256), info.fps))
    print("| windows | asked rate | tokens | zlib bytes | " + " | ".join(f"{f} / zlib" for f in args.priors) + " |")
    print("|---|---|---|---|" + "---|" * len(priors))
    for refresh, name in ((None, "continuing"), (1, "independent")):
        for rate in RATES:
            kept = zlib = 0
            coded = [0] * len(priors)
            for frames, fps in clips:
                tokens = model.tokenize(frames, rate=rate, fps=fps, refresh=refresh)
                with tempfile.TemporaryDirectory() as tmp:
                    zlib += tokens.save(Path(tmp) / "z.itok").stat().st_size
                    for i, prior in enumerate(priors):
                        coded[i] += coded_bytes(tokens, prior, Path(tmp))
                kept += tokens.ledger().kept
            cells = " | ".join(f"{c / zlib:.3f} ({c})" for c in coded)
            print(f"| {name} | {rate} | {kept} | {zlib} | {cells} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
