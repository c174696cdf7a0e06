"""How wide a steady code's margin should be (`fill.STEADY_MARGIN`), measured on training clips only.

`python scripts/steady_margin.py [MARGINS] [EVERY]` (default margins -0.5,0.1,0.25, where -0.5 means no steady
codes; every 10th training clip, from the second) tokenizes each clip's first 33 frames (256x256 centre crop)
under `hold` with drift selection, at the rates `rd` gives at a sweep of drift thresholds, for each margin,
and prints the mean tokens and PSNR at each threshold and the BD-rate in tokens against the first margin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import infotok.fill
from infotok.files import list_videos
from infotok.metrics import bd_rate, psnr
from infotok.model import InfoTok
from infotok.router import hold_rates
from infotok.video import from_model, read_video, resize_and_crop

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train_videos"
THRESHOLDS = (0.4, 0.25, 0.15, 0.1, 0.07, 0.045, 0.02, 0.0)


def main(argv: list[str]) -> None:
    margins = [float(m) for m in (argv[0] if argv else "-0.5,0.1,0.25").split(",")]
    clips = sorted(list_videos([TRAIN]))[1 :: int(argv[1]) if len(argv) > 1 else 10]
    model = InfoTok.from_pretrained()
    tokens = {m: np.zeros((len(clips), len(THRESHOLDS))) for m in margins}
    quality = {m: np.zeros((len(clips), len(THRESHOLDS))) for m in margins}
    for c, path in enumerate(clips):
        frames = resize_and_crop(read_video(path, max_frames=33)[0], 256)
        for m in margins:
            infotok.fill.STEADY_MARGIN = m
            codes = model.latent_codes(frames[None])
            for t, threshold in enumerate(THRESHOLDS):
                batch = model.encode(frames[None], rates=hold_rates(codes, threshold), selection="drift", fill="hold")
                tokens[m][c, t] = int(batch.mask.sum())
                quality[m][c, t] = psnr(frames, from_model(model.decode(batch)))
        print(path.name, flush=True)
    first = margins[0]
    for m in margins:
        mean_tokens, mean_psnr = tokens[m].mean(0), quality[m].mean(0)
        bd = bd_rate(tokens[first].mean(0), quality[first].mean(0), mean_tokens, mean_psnr)
        print(
            f"margin {m}: tokens {mean_tokens.astype(int).tolist()}, PSNR {np.round(mean_psnr, 3).tolist()}, "
            f"BD-rate against {first}: {bd:+.1f}%"
        )


if __name__ == "__main__":
    with torch.no_grad():
        main(sys.argv[1:])
