"""Continuing against independent windows on the fixed-camera training clip, as BENCHMARKS_LONG.md's rows measure it:
its first 300 frames (short side 256), the defaults, overlap 1, refresh 10 against refresh 1, at asked 0.125, 0.25 and
0.5: tokens per second of video and PSNR (docs/LONG_VIDEOS.md quotes it where BENCHMARKS_LONG.md was not rerun).

`python scripts/fixed_camera.py [VIDEO]` (default: ../shared/data/train_videos/intel_overhead_person_walking.mp4).
"""

from __future__ import annotations

import sys
from pathlib import Path

from infotok.metrics import psnr
from infotok.model import InfoTok
from infotok.video import read_video, resize_short_side

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "train_videos" / "intel_overhead_person_walking.mp4"


def main(argv: list[str]) -> None:
    frames, info = read_video(argv[0] if argv else CLIP, max_frames=300)
    frames = resize_short_side(frames, 256)
    model, seconds = InfoTok.from_pretrained(), len(frames) / info.fps
    for rate in (0.125, 0.25, 0.5):
        rows = []
        for refresh in (10, 1):
            tokens = model.tokenize(frames, rate=rate, overlap=1, fps=info.fps, refresh=refresh)
            rows.append((tokens.ledger().kept / seconds, psnr(frames, model.detokenize(tokens))))
        (ours, ours_db), (theirs, theirs_db) = rows
        print(
            f"asked {rate}: continuing {ours:.0f} tokens/s {ours_db:.2f} dB; independent {theirs:.0f} tokens/s "
            f"{theirs_db:.2f} dB; {ours / theirs:.2f}x, {ours_db - theirs_db:+.2f} dB"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
