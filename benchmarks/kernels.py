"""How far tokens and decodes move between CPU kernels: `python -m benchmarks.kernels`.

torch picks float kernels by CPU (AVX-512, AVX2, arm64 NEON/SVE, or none: `default`); a new process
with ATEN_CPU_CAPABILITY set runs a lower set on the same machine. For each kernel set this machine
can run, a child process tokenizes the first window of every evaluation clip with the default
settings and with the paper's (`global_elbo` + `error` + `mask`), and decodes the native kernels'
tokens. Reported against the native kernels: the share of token positions whose keep bit or code
moved, and the PSNR between decodes of the same tokens and of each kernel's own tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from infotok.metrics import psnr

from .experiments import list_clips, log

SETTINGS = {"default": {}, "paper": {"strategy": "global_elbo", "selection": "error", "fill": "mask"}}
ROOT = Path(__file__).resolve().parents[1]  # the checkout: children run `-m benchmarks.kernels` there
EMULATED = ["avx2", "default"]  # ATEN_CPU_CAPABILITY values below AVX-512 on x86-64


def child(out: Path, videos: list[Path], native: Path | None, size: int, frames: int, rate: float) -> None:
    """Tokenize every clip under each setting into `out`, decode them, and decode `native`'s tokens."""
    import torch

    from infotok.model import InfoTok
    from infotok.tokens import Tokens

    model = InfoTok.from_pretrained()
    out.mkdir(parents=True, exist_ok=True)
    decodes = {}
    for video in videos:
        for name, settings in SETTINGS.items():
            key = f"{video.stem}-{name}"
            tokens = model.tokenize(video, rate=rate, size=size, max_frames=frames, window=frames, **settings)
            tokens.save(out / f"{key}.itok", overwrite=True)
            decodes[f"{key}/own"] = model.detokenize(tokens)
            if native is not None:
                decodes[f"{key}/native"] = model.detokenize(Tokens.load(native / f"{key}.itok"))
    np.savez(out / "decodes.npz", **decodes)
    (out / "capability.txt").write_text(torch.backends.cpu.get_cpu_capability())


def moved_positions(a, b) -> tuple[int, int]:
    """(positions whose keep bit or kept code differs, all positions) between two token sets of the
    same windows (tests/test_reference.py counts with it too)."""
    moved = total = 0
    for wa, wb in zip(a.windows, b.windows, strict=True):
        if (wa.start, wa.end, wa.mask.shape) != (wb.start, wb.end, wb.mask.shape):
            raise ValueError(
                f"windows differ: frames {wa.start}-{wa.end} {wa.mask.shape} and {wb.start}-{wb.end} {wb.mask.shape}"
            )
        codes_a, codes_b = np.zeros(wa.mask.shape, np.int64), np.zeros(wb.mask.shape, np.int64)
        codes_a[wa.mask], codes_b[wb.mask] = wa.indices, wb.indices
        moved += int(((wa.mask != wb.mask) | (wa.mask & wb.mask & (codes_a != codes_b))).sum())
        total += wa.mask.size
    return moved, total


def compare(native: Path, other: Path, videos: list[Path]) -> dict:
    from infotok.tokens import Tokens

    ours, theirs = np.load(native / "decodes.npz"), np.load(other / "decodes.npz")
    rows = {}
    for name in SETTINGS:
        moved = total = 0
        same_tokens, own_tokens, within = [], [], []
        for video in videos:
            key = f"{video.stem}-{name}"
            m, t = moved_positions(Tokens.load(native / f"{key}.itok"), Tokens.load(other / f"{key}.itok"))
            moved, total = moved + m, total + t
            reference = ours[f"{key}/own"]
            same_tokens.append(psnr(theirs[f"{key}/native"], reference))
            own_tokens.append(psnr(theirs[f"{key}/own"], reference))
            within.append(float((np.abs(theirs[f"{key}/native"].astype(np.int16) - reference) <= 1).mean()))
        rows[name] = {
            "positions": total,
            "moved": moved,
            "moved_share": moved / total,
            "psnr_same_tokens_min": min(same_tokens),
            "within_one_level_min": min(within),
            "psnr_own_tokens_min": min(own_tokens),
            "psnr_own_tokens_mean": float(np.mean(own_tokens)),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.split("\n")[0])
    p.add_argument(
        "--videos", default=str(ROOT.parent / "shared" / "data" / "videos"), type=lambda s: str(Path(s).resolve())
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--out", default="bench_out/kernels", type=lambda s: str(Path(s).resolve()))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--native", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    videos = list_clips(args.videos)
    if args.child:
        child(Path(args.child), videos, Path(args.native) if args.native else None, args.size, args.frames, args.rate)
        return 0
    out = Path(args.out)
    common = ["--videos", args.videos, "--size", str(args.size), "--frames", str(args.frames), "--rate", str(args.rate)]
    run = [sys.executable, "-m", "benchmarks.kernels", *common]
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    log("native kernels")
    subprocess.run([*run, "--child", str(out / "native")], env=env, check=True, cwd=ROOT)
    native = (out / "native" / "capability.txt").read_text()
    report = {
        "native": native,
        "clips": [v.name for v in videos],
        "size": args.size,
        "frames": args.frames,
        "rate": args.rate,
        "against_native": {},
    }
    for capability in EMULATED:
        log(f"ATEN_CPU_CAPABILITY={capability}")
        subprocess.run(
            [*run, "--child", str(out / capability), "--native", str(out / "native")],
            env={**env, "ATEN_CPU_CAPABILITY": capability},
            check=True,
            cwd=ROOT,
        )
        ran = (out / capability / "capability.txt").read_text()
        if ran == native:
            log(f"this CPU runs {native} under ATEN_CPU_CAPABILITY={capability}: nothing to compare")
            continue
        report["against_native"][ran] = compare(out / "native", out / capability, videos)
    (out / "kernels.json").write_text(json.dumps(report, indent=2))
    print(
        f"native kernels: {native}; {len(videos)} clips, first {args.frames} frames, short side {args.size}, "
        f"rate {args.rate}"
    )
    print(
        "| kernels | settings | token positions moved | PSNR, same tokens (min) | values within 1 level (min) "
        "| PSNR, own tokens (min / mean) |"
    )
    print("|---|---|---|---|---|---|")
    for ran, rows in report["against_native"].items():
        for name, r in rows.items():
            print(
                f"| {ran} | {name} | {r['moved']} of {r['positions']} ({r['moved_share']:.4%}) "
                f"| {r['psnr_same_tokens_min']:.1f} dB | {r['within_one_level_min']:.4%} "
                f"| {r['psnr_own_tokens_min']:.1f} / {r['psnr_own_tokens_mean']:.1f} dB |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
