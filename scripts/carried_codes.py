"""How alike the base codes a window's last latent frame and the next window's first: why a continuing window
(`fill.Carry`) may decode a carried code as a kept one without a stage trained for it (docs/LONG_VIDEOS.md).

`python scripts/carried_codes.py [CLIP]` (default: the evaluation dashcam clip, first 161 frames, short side
256, windows of 33 frames overlapping by 1) prints, for each pair of neighbouring windows, the mean |difference|
per code channel between window n's last latent frame and window n+1's first (what a carry stands for), and
between their first latent frames (what an independent window pays again). Then, for the clip's first frame held
for one window (a still shot), the share of positions whose code differs from the first latent frame's in each
later latent frame, as the base codes them alone, after the compressor, and as `hold` ranks them (`fill.steady_codes`:
a code on a rounding boundary counts as the one before it): what a continuing still window pays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from infotok.core import as_model_input
from infotok.geometry import window_spans
from infotok.model import InfoTok
from infotok.video import read_video, resize_short_side

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "bdd_e5cd93c4.mp4"


def main(argv: list[str]) -> None:
    clip = Path(argv[0]) if argv else CLIP
    frames = resize_short_side(read_video(clip, max_frames=161)[0], 256)
    model = InfoTok.from_pretrained()

    def fsq_codes(x: np.ndarray) -> torch.Tensor:
        return model.encode_codes(model.geometry.pad(as_model_input(x)))[0]

    codes = [fsq_codes(frames[None, a:b])[0] for a, b in window_spans(len(frames), 33, 1) if b - a == 33]
    print(f"{clip.name}: mean |code difference| per channel between neighbouring windows")
    for n, (before, after) in enumerate(zip(codes, codes[1:])):
        carried = float((after[:, 0] - before[:, -1]).abs().mean())
        first = float((after[:, 0] - before[:, 0]).abs().mean())
        print(f"windows {n}->{n + 1}: last latent frame vs next first {carried:.3f}; first vs first {first:.3f}")
    still = model.geometry.pad(as_model_input(np.repeat(frames[:1], 33, axis=0)[None]))
    features = model.base.encode_features(still)
    codes, _, values = model.quantize_values(model.compressor(features))
    for name, codes in (
        ("base alone", model.base.quantize(features)[0]),
        ("after the compressor", codes),
        ("as hold ranks them (steady codes)", model.ranked_codes(codes, values, "hold")),
    ):
        moved = [float((codes[:, :, j] != codes[:, :, 0]).any(dim=1).float().mean()) for j in range(1, codes.shape[2])]
        print(f"still shot, {name}: share of codes unlike latent frame 0's in frames 1-8: {np.round(moved, 4)}")


if __name__ == "__main__":
    with torch.no_grad():
        main(sys.argv[1:])
