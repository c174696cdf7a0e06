"""How often continuing windows should start afresh (`--refresh`), measured on training material only: the one
evaluation clip longer than 10 windows must not choose the default (docs/LONG_VIDEOS.md, "Refresh").

`python -m benchmarks.refresh_period` tokenizes two long videos made from ../shared/data/train_videos with the
defaults (rd, drift, hold, overlap 1) at asked 0.125, 0.25 and 0.5, with refresh 10 and 30 (and 1, independent
windows, for scale), and prints per video and setting: tokens per second, PSNR, how far the worst window-edge
frame falls below the clip's PSNR, the largest PSNR step across a window edge, and the BD-rate in tokens of
each setting against refresh 10. The videos: the whole fixed-camera clip `intel_overhead_person_walking.mp4`
(1394 frames at 10 fps: 44 windows), and the first 300 frames of six 30 fps training clips one after another,
each shrunk to short side 256 and cut to its centre 256x256 (1800 frames with five cuts: 57 windows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infotok.metrics import bd_rate
from infotok.model import InfoTok
from infotok.video import read_video, resize_and_crop, resize_short_side

from .long_videos import measure

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train_videos"
CUT_CLIPS = (
    "askanything_yoga_outdoor.mp4",
    "askanything_bass_guitar_closeup.mp4",
    "askanything_baseball_batting_cage.mp4",
    "mmaction2_pool_cleaning.mp4",
    "sam2_cups_shuffle.mp4",
    "mmaction2_basketball_gym.mp4",
)
RATES = (0.125, 0.25, 0.5)
REFRESHES = (10, 30, 1)  # the first is what the others are measured against (the default until session 34)


def videos() -> dict[str, tuple[np.ndarray, float]]:
    fixed, info = read_video(TRAIN / "intel_overhead_person_walking.mp4")
    parts = [resize_and_crop(read_video(TRAIN / name, max_frames=300)[0], 256) for name in CUT_CLIPS]
    return {
        "fixed camera, whole": (resize_short_side(fixed, 256), info.fps),
        "six clips with cuts": (np.concatenate(parts), 30.0),
    }


def main() -> None:
    model = InfoTok.from_pretrained()
    for name, (frames, fps) in videos().items():
        print(f"{name}: {len(frames)} frames at {fps:.0f} fps")
        rows = {r: [measure(model, None, frames, fps, rate, 1, r) for rate in RATES] for r in REFRESHES}
        for refresh, measured in rows.items():
            for row in measured:
                print(
                    f"  refresh {refresh:2d}, asked {row['rate']}: {row['tokens_per_second']:6.0f} tokens/s, "
                    f"{row['psnr']:.2f} dB, worst edge {row['worst_edge_below_mean']:.2f} dB below, "
                    f"largest edge step {row['largest_edge_step']:.2f} dB (inside {row['largest_inside_step']:.2f})"
                )
        base = rows[REFRESHES[0]]
        for refresh in REFRESHES[1:]:
            try:
                bd = "%+.1f%%" % bd_rate(
                    [r["tokens"] for r in base], [r["psnr"] for r in base],
                    [r["tokens"] for r in rows[refresh]], [r["psnr"] for r in rows[refresh]], fit="linear",
                )  # fmt: skip
            except ValueError as exc:  # curves with no PSNR in common (other videos than these)
                bd = f"none: {exc}"
            print(f"  BD-rate in tokens, refresh {refresh} against refresh {REFRESHES[0]}: {bd}")


if __name__ == "__main__":
    main()
