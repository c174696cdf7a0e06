"""Where a long video's worst frames and largest quality steps fall, window by window: the frame-level view behind
BENCHMARKS_LONG.md's edge columns (docs/LONG_VIDEOS.md, "Window edges").

`python -m benchmarks.window_edges [CLIP] [--rate R] [--max-frames N]` (default: the evaluation dashcam clip, asked
0.25, short side 256, the defaults: rd, drift, hold, overlap 1) tokenizes the clip with continuing windows (the
default refresh) and with independent ones (refresh 1), and prints for each: the clip's tokens (those in windows'
first latent frames apart) and PSNR, the worst edge frames and the largest steps (frame, dB), each frame's PSNR
against its window's mean averaged by its place in the window (what a seam would do to every window alike), and per
window its tokens, its first latent frame's tokens and the PSNR of the first and last frames it decodes alone (not
the ones it shares with its neighbours, which the two decodes blend).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from infotok.metrics import psnr
from infotok.model import InfoTok
from infotok.spec import DEFAULT_REFRESH
from infotok.video import read_video, resize_short_side

from .long_videos import WINDOW, cut_frames, edge_frames

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "bdd_e5cd93c4.mp4"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.window_edges", description=__doc__.split("\n")[0])
    p.add_argument("clip", nargs="?", default=str(CLIP))
    p.add_argument("--rate", type=float, default=0.25)
    p.add_argument(
        "--max-frames", type=int, help="the clip's first frames only (BENCHMARKS_LONG.md's fixed camera: 300)"
    )
    args = p.parse_args(argv)
    frames, info = read_video(args.clip, max_frames=args.max_frames)
    frames = resize_short_side(frames, 256)
    model = InfoTok.from_pretrained()
    edges, cuts = edge_frames(frames, 1), cut_frames(frames)
    for refresh in (DEFAULT_REFRESH, 1):
        tokens = model.tokenize(frames, rate=args.rate, overlap=1, fps=info.fps, refresh=refresh)
        decoded = model.detokenize(tokens)
        per_frame, mean = np.array([psnr(a, b) for a, b in zip(frames, decoded)]), psnr(frames, decoded)
        steps = {f: per_frame[f] - per_frame[f - 1] for f in range(1, len(frames)) if not {f - 1, f} & cuts}
        worst = sorted(edges, key=lambda f: per_frame[f])[:4]
        largest = sorted(steps, key=lambda f: -abs(steps[f]))[:4]
        kept, first = tokens.ledger().kept, sum(int(w.mask[0].sum()) for w in tokens.windows)
        print(
            f"refresh {refresh}, asked {args.rate}: {kept} tokens ({first} in windows' first latent frames, "
            f"{kept - first} in the later ones), PSNR {mean:.2f} dB"
        )
        print(
            "  worst edge frames (frame: dB below the clip's PSNR):",
            ", ".join(f"{f}: {mean - per_frame[f]:.2f}" for f in worst),
        )
        print("  largest steps (frame: dB from the frame before):", ", ".join(f"{f}: {steps[f]:+.2f}" for f in largest))
        # a seam the windows make shows in every window alike: each frame's PSNR against its window's mean, averaged
        # by the frame's place in the window, 1 to WINDOW - 1 (the last: the frame it shares with the next window;
        # the clip's frame 0 left out)
        later = np.arange(1, len(frames))
        place, window = (later - 1) % (WINDOW - 1) + 1, (later - 1) // (WINDOW - 1)
        own_mean = np.array([per_frame[later][window == w].mean() for w in range(window.max() + 1)])[window]
        by_place = [float((per_frame[later] - own_mean)[place == k].mean()) for k in range(1, WINDOW)]
        print("  dB against the window's mean, by place in the window (1 on):", " ".join(f"{d:+.2f}" for d in by_place))
        for i, w in enumerate(tokens.windows):
            own = (w.start + (i > 0), w.end - 1 - (i + 1 < len(tokens.windows)))  # not the frames shared (blended)
            print(
                f"  frames {w.start:3d}-{w.end - 1:3d}: {w.kept:5d} tokens ({int(w.mask[0].sum())} in the first "
                f"latent frame); its own frames {own[0]}-{own[1]}: PSNR {per_frame[own[0]]:.2f} -> "
                f"{per_frame[own[1]]:.2f} dB"
            )
    print(f"(windows of {WINDOW} frames overlapping by 1; edge frames as BENCHMARKS_LONG.md counts them)")


if __name__ == "__main__":
    main()
