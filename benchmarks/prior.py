"""`python -m benchmarks.prior`: what the learned token prior saves, and where infotok stands against x264/x265 at
equal real bytes (issue #34); writes BENCHMARKS_PRIOR.md.

Protocol: every evaluation clip, its first 97 frames (3 windows of 33 frames overlapping by 1; shorter clips whole),
short side 256, centre crop 256x256. The shipped InfoTok-Flex with its defaults (rd, drift, hold) at each asked
rate, windows as `infotok encode --entropy prior` writes them (continuing each other, the default, under a prior
that models continuing windows; else independent, refresh 1); each clip's tokens are written as today's `.itok`
(zlib) and as a prior-coded one (`infotok encode --entropy prior`, the shipped prior), which is read back and
compared token for token. Seconds: the tokenizer's round trip (tokenize + detokenize) and the prior's coding (save)
and decoding (load) of the same tokens, on this CPU.
Codecs: the same frames through FFmpeg's libx264 and libx265 (imageio-ffmpeg's FFmpeg, preset medium, yuv420p,
a CRF sweep), counted as elementary-stream bytes (raw .h264 / .hevc, no container), decoded by FFmpeg.
PSNR: over all frames of a clip in uint8 range, then averaged over clips; BPP16: real bytes x 8 x 16 per pixel.
Layouts: the same frames as the paper's tokens (`--preset paper`, same rates) and as infotok-1d's (every window's
first k tokens), each measured by a prior of its kind from benchmarks/priors (`--mask-prior`, `--sequence-prior`).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infotok.entropy import load_prior
from infotok.metrics import bd_rate, psnr
from infotok.model import InfoTok
from infotok.names import PRESETS
from infotok.sequence_prior import SequencePriorNet, window_prefix_bits
from infotok.tokens import Tokens
from infotok.video import read_video, resize_and_crop

from .experiments import ROOT, list_clips, log, report_main

FRAMES, SIZE = 97, 256
RATES = (0.125, 0.25, 0.5, 1.0)
CRFS = (24, 30, 36, 42, 48, 51)
CODECS = {"x264": ("libx264", "h264"), "x265": ("libx265", "hevc")}
PREFIXES = (16, 32, 64, 128, 256, 512, 1024)  # 1D layout: tokens a window
LAYOUT_PRIORS = ROOT / "benchmarks" / "priors"  # the layout comparison's priors (recipes beside them)


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def codec_round_trip(frames: np.ndarray, fps: float, codec: str, crf: int) -> tuple[int, np.ndarray]:
    """(elementary-stream bytes, decoded frames) of `frames` through `codec` at `crf`."""
    encoder, raw = CODECS[codec]
    n, h, w, _ = frames.shape
    quiet = ["-x265-params", "log-level=error"] if codec == "x265" else []
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / f"clip.{raw}"
        subprocess.run(
            [ffmpeg(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}",
             "-i", "-", "-c:v", encoder, "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p", *quiet,
             "-f", raw, str(stream)],
            input=frames.tobytes(), check=True,
        )  # fmt: skip
        decoded = subprocess.run(
            [ffmpeg(), "-v", "error", "-i", str(stream), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            capture_output=True,
            check=True,
        ).stdout
        size = stream.stat().st_size
    return size, np.frombuffer(decoded, np.uint8).reshape(-1, h, w, 3)[:n]


def tokenizer_rows(model: InfoTok, prior, clips: dict, preset: str = "default") -> list[dict]:
    rows = []
    for rate in RATES:
        for name, (frames, fps) in clips.items():
            started = time.time()
            # what `infotok encode --entropy prior` writes: windows continue each other (the default) under a
            # prior that models it, else they start afresh (refresh 1)
            refresh = None if prior.config.continuing else 1
            tokens = model.tokenize(frames, rate=rate, fps=fps, refresh=refresh, **PRESETS[preset])
            decoded = model.detokenize(tokens)
            round_trip = time.time() - started
            with tempfile.TemporaryDirectory() as tmp:
                zlib_bytes = tokens.save(Path(tmp) / "zlib.itok").stat().st_size
                started = time.time()
                prior_bytes = tokens.save(Path(tmp) / "prior.itok", prior=prior).stat().st_size
                coding = time.time() - started
                started = time.time()
                back = Tokens.load(Path(tmp) / "prior.itok", prior)
                decoding = time.time() - started
            lossless = len(back.windows) == len(tokens.windows) and all(
                np.array_equal(a.mask, b.mask) and np.array_equal(a.indices, b.indices)
                for a, b in zip(tokens.windows, back.windows)
            )
            ledger = tokens.ledger()
            rows.append(
                {
                    "preset": preset,
                    "clip": name,
                    "rate": rate,
                    "frames": len(frames),
                    "windows": len(tokens.windows),
                    "refresh": tokens.header.refresh,
                    "kept": ledger.kept,
                    "realized_rate": ledger.realized_rate,
                    "nominal_bits": ledger.kept * 16 + ledger.total,  # 16 bits a code + 1 a position (the mask)
                    "zlib_bytes": zlib_bytes,
                    "prior_bytes": prior_bytes,
                    "lossless": lossless,
                    "psnr": psnr(frames, decoded),
                    "round_trip_seconds": round_trip,
                    "prior_encode_seconds": coding,
                    "prior_decode_seconds": decoding,
                }
            )
            log(f"{preset} {name} rate {rate}: {zlib_bytes} -> {prior_bytes} bytes, lossless {lossless}")
    return rows


SAMPLE_FRAMES = (0, 16, 32, 40, 48, 56, 64)  # columns of the samples picture: the prompt window's, then drawn ones
SAMPLE_CLIP = "bdd_e5cd93c4.mp4"


def sample_picture(model: InfoTok, prior, clips: dict, path: Path) -> dict:
    """Two-window samples (seed 0): one continuing the first window of SAMPLE_CLIP, one unconditional; a picture of
    frames SAMPLE_FRAMES: the clip, the continuation, the unconditional sample."""
    from PIL import Image

    from infotok.sample import sample_tokens

    frames, fps = clips.get(SAMPLE_CLIP, next(iter(clips.values())))
    started = time.time()
    prompt = model.tokenize(frames[:33], fps=fps)
    continued = model.detokenize(sample_tokens(model, prior, 2, prompt=prompt, seed=0))
    drawn = model.detokenize(sample_tokens(model, prior, 2, size=(SIZE, SIZE), fps=fps, seed=0))
    seconds = time.time() - started
    source = np.concatenate([frames, np.repeat(frames[-1:], 65, axis=0)])[:65]
    rows = [np.concatenate([v[i] for i in SAMPLE_FRAMES], axis=1) for v in (source, continued, drawn)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, quality=85)  # JPEG: the repository stays small
    return {"picture": str(path.relative_to(ROOT)), "clip": SAMPLE_CLIP, "seconds": seconds}


def codec_rows(clips: dict) -> list[dict]:
    rows = []
    for codec in CODECS:
        for crf in CRFS:
            for name, (frames, fps) in clips.items():
                size, decoded = codec_round_trip(frames, fps, codec, crf)
                rows.append({"codec": codec, "crf": crf, "clip": name, "bytes": size, "psnr": psnr(frames, decoded)})
            log(f"{codec} crf {crf}: done")
    return rows


def load_clips(videos: Path) -> dict:
    """name -> (the protocol's frames: first FRAMES, centre crop SIZE x SIZE; fps) of every clip in `videos`."""
    clips = {}
    for video in list_clips(videos):
        frames, info = read_video(video, max_frames=FRAMES)
        clips[video.name] = (resize_and_crop(frames, SIZE), info.fps)
    return clips


def run(videos: Path, mask_prior: Path | None, sequence_prior: Path | None) -> dict:
    model, prior = InfoTok.from_pretrained(), load_prior()
    clips = load_clips(videos)
    return {
        "protocol": {"frames": FRAMES, "size": SIZE, "rates": RATES, "crfs": CRFS, "clips": len(clips)},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "prior": {"hash": prior.hash, "name": prior.info.get("name"), "steps": prior.info.get("trained_steps")},
        "pixels": {name: int(np.prod(f.shape[:3])) for name, (f, _) in clips.items()},
        "tokenizer": tokenizer_rows(model, prior, clips),
        "codecs": codec_rows(clips),
        "samples": sample_picture(model, prior, clips, ROOT / "docs" / "prior_samples.jpg"),
        **({"mask_prior": mask_prior_rows(model, mask_prior, clips)} if mask_prior else {}),
        **({"sequence_prior": sequence_prior_rows(sequence_prior, clips)} if sequence_prior else {}),
    }


def mask_prior_rows(model: InfoTok, folder: Path, clips: dict) -> dict:
    """The paper's tokens (global_elbo, error, mask) coded with a prior trained on such tokens (`--mask-prior`)."""
    prior = load_prior(folder)
    info = {"hash": prior.hash, "name": prior.info.get("name"), "steps": prior.info.get("trained_steps")}
    return {"prior": info, "rows": tokenizer_rows(model, prior, clips, preset="paper")}


def sequence_prior_rows(folder: Path, clips: dict) -> dict:
    """The 1D layout's tokens (infotok-1d, every window's first k tokens) and their bits under a sequence prior
    trained on such tokens (`--sequence-prior`)."""
    net = SequencePriorNet.from_pretrained(folder)
    one_d = InfoTok.from_pretrained(layout="1d")
    rows = []
    for name, (frames, fps) in clips.items():
        tokens = one_d.tokenize(frames, fps=fps)
        bits = window_prefix_bits(net, tokens, list(PREFIXES))
        grid_positions = tokens.ledger().total  # the grid layout's positions for the same frames
        for k in PREFIXES:
            cut = tokens.truncate(k)
            rows.append(
                {
                    "clip": name,
                    "tokens_per_window": k,
                    "kept": sum(w.kept for w in cut.windows),
                    "grid_positions": grid_positions,
                    "prior_bits": bits[k],
                    "psnr": psnr(frames, one_d.detokenize(cut)),
                }
            )
            log(f"1d {name} {k} tokens a window: {bits[k] / 1000:.1f} kbit")
    return {"prior": {"name": net.info.get("name"), "steps": net.info.get("trained_steps")}, "rows": rows}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def rate_summary(rows: list[dict], rates, pixels: int) -> dict:
    """Per asked rate: sums over clips (bytes, bits, seconds) and mean PSNR."""
    out = {}
    for rate in rates:
        at = [r for r in rows if r["rate"] == rate]
        zlib_b, prior_b, kept = (sum(r[k] for r in at) for k in ("zlib_bytes", "prior_bytes", "kept"))
        round_trip = sum(r["round_trip_seconds"] for r in at)
        prior_seconds = sum(r["prior_encode_seconds"] + r["prior_decode_seconds"] for r in at)
        out[rate] = {
            "realized_rate": sum(r["realized_rate"] * r["frames"] for r in at) / sum(r["frames"] for r in at),
            "kept": kept,
            "nominal_bpp16": sum(r["nominal_bits"] for r in at) * 16 / pixels,
            "zlib_bpp16": zlib_b * 8 * 16 / pixels,
            "prior_bpp16": prior_b * 8 * 16 / pixels,
            "ratio": prior_b / zlib_b,
            "zlib_bits_per_token": zlib_b * 8 / kept,
            "prior_bits_per_token": prior_b * 8 / kept,
            "prior_kbit_per_clip": prior_b * 8 / 1000 / len(at),
            "lossless": all(r["lossless"] for r in at),
            "psnr": _mean(at, "psnr"),
            "overhead": (round_trip + prior_seconds) / round_trip,
            "prior_seconds_per_window": prior_seconds / sum(r["windows"] for r in at),
        }
    return out


def summary(result: dict) -> dict:
    """Per rate (`rate_summary`), per codec and CRF: BPP16 and PSNR."""
    pixels, rates = sum(result["pixels"].values()), result["protocol"]["rates"]
    codecs = {}
    for codec in CODECS:
        codecs[codec] = []
        for crf in result["protocol"]["crfs"]:
            rows = [r for r in result["codecs"] if r["codec"] == codec and r["crf"] == crf]
            codecs[codec].append(
                {"crf": crf, "bpp16": sum(r["bytes"] for r in rows) * 8 * 16 / pixels, "psnr": _mean(rows, "psnr")}
            )
    out = {"tokenizer": rate_summary(result["tokenizer"], rates, pixels), "codecs": codecs}
    if "mask_prior" in result:
        out["mask"] = rate_summary(result["mask_prior"]["rows"], rates, pixels)
    if "sequence_prior" in result:
        rows = result["sequence_prior"]["rows"]
        out["1d"] = {}
        for k in sorted({r["tokens_per_window"] for r in rows}):
            at = [r for r in rows if r["tokens_per_window"] == k]
            kept, bits = sum(r["kept"] for r in at), sum(r["prior_bits"] for r in at)
            out["1d"][k] = {
                "kept": kept,
                "realized_rate": kept / sum(r["grid_positions"] for r in at),
                "psnr": _mean(at, "psnr"),
                "prior_kbit_per_clip": bits / 1000 / len(at),
                "prior_bits_per_token": bits / kept,
            }
    return out


def psnr_at(curve: list[dict], bpp16: float) -> float | None:
    """A codec's PSNR at `bpp16`, interpolated linearly in log BPP between its CRF points (None outside them)."""
    points = sorted((np.log(p["bpp16"]), p["psnr"]) for p in curve)
    x, y = zip(*points)
    return float(np.interp(np.log(bpp16), x, y)) if x[0] <= np.log(bpp16) <= x[-1] else None


def report(result: dict, command: str) -> str:
    s = summary(result)
    p = result["prior"]
    refresh = result["tokenizer"][0].get("refresh", 1)
    windows = f"continuing each other, refresh {refresh}" if refresh > 1 else "independent, refresh 1"
    lines = [
        "# The token prior: entropy-coded token files, and infotok against x264/x265 at equal bytes",
        "",
        f"Regenerate: `{command}` (part of `make bench`), on {result['machine']}.",
        "",
        __doc__.split("\n\n", 1)[1].strip(),
        "",
        f"Prior: `src/infotok/weights/prior-flex` ({p['name']}, hash {p['hash']}, {p['steps']} training steps on the"
        f" training clips' tokens; how: its TRAINING.md). Windows of the default tokens: {windows}.",
        "",
        "## File size at the same tokens",
        "",
        "| asked rate | realized rate | tokens | PSNR dB | nominal BPP16 | zlib BPP16 | prior BPP16 | prior / zlib "
        "| bits per token: zlib / prior | lossless | round trip + prior, x round trip | prior s per window |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate, t in s["tokenizer"].items():
        lines.append(
            f"| {rate} | {t['realized_rate']:.3f} | {t['kept']} | {t['psnr']:.2f} | {t['nominal_bpp16']:.3f} | "
            f"{t['zlib_bpp16']:.3f} | {t['prior_bpp16']:.3f} | {t['ratio']:.2f} | "
            f"{t['zlib_bits_per_token']:.1f} / {t['prior_bits_per_token']:.1f} | "
            f"{'yes' if t['lossless'] else 'NO'} | {t['overhead']:.2f} | {t['prior_seconds_per_window']:.2f} |"
        )
    lines += [
        "",
        "Nominal BPP16: 16 bits a kept code and 1 bit a grid position (the mask), the paper's ledger. Issue #34's "
        "goals: prior / zlib at most 0.6, lossless, overhead at most 1.5x.",
        "",
        "## Rate-distortion against classical codecs (real bytes)",
        "",
        "| method | setting | BPP16 (real bytes) | PSNR dB | x264 at that BPP16 | x265 at that BPP16 |",
        "|---|---|---|---|---|---|",
    ]
    for rate, t in s["tokenizer"].items():
        for label, key in (("infotok (zlib)", "zlib_bpp16"), ("infotok + prior", "prior_bpp16")):
            at = [psnr_at(s["codecs"][c], t[key]) for c in CODECS]
            shown = ["below the sweep" if v is None else f"{v:.2f} ({t['psnr'] - v:+.2f})" for v in at]
            lines.append(f"| {label} | rate {rate} | {t[key]:.3f} | {t['psnr']:.2f} | {shown[0]} | {shown[1]} |")
    for codec, curve in s["codecs"].items():
        for point in curve:
            lines.append(f"| {codec} | CRF {point['crf']} | {point['bpp16']:.3f} | {point['psnr']:.2f} | | |")
    lines += [
        "",
        "The codec columns: the codec's PSNR at infotok's real BPP16 (linear in log BPP between CRF points), and in "
        "brackets infotok's PSNR minus it (negative: infotok is that many dB behind at equal bytes).",
        "",
    ]
    sample = result["samples"]
    lines += [
        "## Samples",
        "",
        f"![samples]({sample['picture']})",
        "",
        f"Frames {', '.join(map(str, SAMPLE_FRAMES))} of: {sample['clip']} (top; its first window, frames 0-32, is the "
        "prompt), two windows continuing that window's tokens (middle), two windows drawn unconditionally (bottom); "
        f"seed 0, `infotok sample --windows 2 [--video ...]`, {sample['seconds']:.0f} s for both on this CPU.",
        "",
    ]
    return "\n".join(lines + layout_section(result, s))


LAYOUTS = {"tokenizer": "grid/hold (default)", "mask": "grid/mask (paper)", "1d": "1D (infotok-1d)"}


def layout_section(result: dict, s: dict) -> list[str]:
    """Which tokens are cheaper for a model: each layout and fill's prior bits per clip at equal PSNR."""
    lines = ["## Which tokens are easier to model", ""]
    curves = {key: list(s[key].values()) for key in LAYOUTS if key in s}
    if len(curves) < 2:
        return lines + ["Not measured in this run: it needs the layout priors of benchmarks/priors.", ""]
    described = ["grid/hold (the defaults) with the shipped prior"]
    if "mask" in s:
        m = result["mask_prior"]["prior"]
        described.append(
            f"grid/mask (the paper's global_elbo + error + mask) with {m['name']} ({m['steps']} steps, "
            f"hash {m['hash']})"
        )
    if "1d" in s:
        q = result["sequence_prior"]["prior"]
        described.append(
            f"the 1D layout (infotok-1d, every window's first k tokens) with {q['name']} ({q['steps']} steps), a "
            "sequence prior (each token given the earlier ranks and the previous window's first k tokens; its "
            "bits are the float network's estimate, 1D files are not entropy-coded)"
        )
    lines += [
        "Each layout's tokens of the evaluation clips, measured by a prior of its own trained on such tokens of the "
        f"training clips only: {'; '.join(described)}. The prior's bits are what a model trained on these tokens "
        "would pay (kbit per clip, the mean over clips); `benchmarks/priors/*/TRAINING.md` says how each was trained "
        "and what that means for the comparison.",
        "",
        f"![prior bits against PSNR]({plot_layouts(curves)})",
        "",
        "| tokens | setting | realized rate | PSNR dB | prior kbit per clip | prior bits per token |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in LAYOUTS.items():
        for setting, t in s.get(key, {}).items():
            shown = f"{setting} tokens a window" if key == "1d" else f"rate {setting}"
            lines.append(
                f"| {label} | {shown} | {t['realized_rate']:.3f} | {t['psnr']:.2f} | {t['prior_kbit_per_clip']:.1f} | "
                f"{t['prior_bits_per_token']:.2f} |"
            )
    lines.append("")
    for key in ("mask", "1d"):
        if key not in curves:
            continue
        a, b = curves[key], curves["tokenizer"]
        try:
            bd = bd_rate(
                [t["prior_kbit_per_clip"] for t in a], [t["psnr"] for t in a],
                [t["prior_kbit_per_clip"] for t in b], [t["psnr"] for t in b], fit="linear",
            )  # fmt: skip
            lines.append(f"- BD-rate of grid/hold against {LAYOUTS[key]}, in prior bits at equal PSNR: {bd:+.1f}%.")
        except ValueError as exc:
            (below, lower), (above, upper) = sorted(
                ((LAYOUTS[key], a), (LAYOUTS["tokenizer"], b)), key=lambda c: max(t["psnr"] for t in c[1])
            )
            top, low = max(lower, key=lambda t: t["psnr"]), min(upper, key=lambda t: t["psnr"])
            lines.append(
                f"- No BD-rate of grid/hold against {LAYOUTS[key]}: {exc}. Their nearest points: {below} at its "
                f"highest PSNR, {top['psnr']:.2f} dB for {top['prior_kbit_per_clip']:.1f} kbit a clip; {above} at "
                f"its lowest, {low['psnr']:.2f} dB for {low['prior_kbit_per_clip']:.1f} kbit."
            )
    return lines + [""]


def plot_layouts(curves: dict) -> str:
    """docs/prior_layouts.png: PSNR against prior kbit per clip, a curve per layout; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, points in curves.items():
        ax.plot([t["prior_kbit_per_clip"] for t in points], [t["psnr"] for t in points], "o-", label=LAYOUTS[key])
    ax.set(xscale="log", xlabel="prior kbit per clip (97 frames, 256x256)", ylabel="PSNR dB")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = "docs/prior_layouts.png"
    fig.savefig(ROOT / path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument(
        "--mask-prior", type=Path, default=LAYOUT_PRIORS / "paper", help="a prior of the paper's tokens (layouts)"
    )
    extra.add_argument(
        "--sequence-prior", type=Path, default=LAYOUT_PRIORS / "1d", help="a prior of 1D tokens (layouts)"
    )
    known, rest = extra.parse_known_args(argv)
    priors = [p if p.is_dir() else None for p in (known.mask_prior, known.sequence_prior)]
    return report_main(rest, __doc__, "prior", "BENCHMARKS_PRIOR.md", lambda v: run(v, *priors), report)


if __name__ == "__main__":
    raise SystemExit(main())
