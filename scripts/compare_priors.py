"""Two token priors on the same tokens: the bytes of each prior-coded file over the zlib file (src/infotok/weights/
prior-flex/TRAINING.md's table), for windows that continue each other (the default) and independent ones.

`python scripts/compare_priors.py OLD NEW [VIDEOS]`: OLD and NEW are prior folders (an earlier shipped prior:
`git archive COMMIT src/infotok/weights/prior-flex | tar -x -C /tmp/old`); VIDEOS defaults to the evaluation
clips. Each clip's first 97 frames, short side 256, centre crop 256x256, the shipped InfoTok-Flex's defaults at
asked rates 0.125, 0.25, 0.5 and 1; every prior-coded file is read back and compared token for token.
"""

from __future__ import annotations

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


def main(old: str, new: str, videos: str = "../shared/data/videos") -> None:
    model, priors = InfoTok.from_pretrained(), {"old": load_prior(old), "new": load_prior(new)}
    clips = []
    for video in list_videos([videos]):
        frames, info = read_video(video, max_frames=97)
        clips.append((resize_and_crop(frames, 256), info.fps))
    print("| windows | asked rate | tokens | zlib bytes | old prior / zlib | new prior / zlib |")
    print("|---|---|---|---|---|---|")
    for refresh, name in ((None, "continuing"), (1, "independent")):
        for rate in RATES:
            total = {"kept": 0, "zlib": 0, "old": 0, "new": 0}
            for frames, fps in clips:
                tokens = model.tokenize(frames, rate=rate, fps=fps, refresh=refresh)
                with tempfile.TemporaryDirectory() as tmp:
                    total["zlib"] += tokens.save(Path(tmp) / "z.itok").stat().st_size
                    for key, prior in priors.items():
                        total[key] += coded_bytes(tokens, prior, Path(tmp))
                total["kept"] += tokens.ledger().kept
            print(
                f"| {name} | {rate} | {total['kept']} | {total['zlib']} | {total['old'] / total['zlib']:.3f} "
                f"({total['old']}) | {total['new'] / total['zlib']:.3f} ({total['new']}) |",
                flush=True,
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
