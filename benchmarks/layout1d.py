"""`python -m benchmarks.layout1d`: the 1D layout (infotok-1d) on the evaluation clips; writes BENCHMARKS_1D.md.

Protocol as `make bench`: every clip in ../shared/data/videos, first 33 frames, short side 256, centre crop
256x256 (one window). Each clip is encoded once; every prefix is cut from that one sequence. Measured:
PSNR, SSIM (and VMAF with --vmaf) of the regression and the flow decoder at each prefix; a sharpness ratio
(high-frequency energy of the decode over the source's: below 1 is blur); the grid tokenizer (InfoTok-Flex)
at the same token counts with its default settings and the paper's; seconds per window on this CPU; a
picture of one clip at increasing prefixes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from infotok.layout1d import InfoTok1D
from infotok.metrics import psnr, ssim, vmaf
from infotok.model import InfoTok
from infotok.registers import guided
from infotok.video import from_model, read_video, resize_and_crop
from infotok.viz import layout, side_by_side, strip

from .experiments import list_clips, log

ROOT = Path(__file__).resolve().parents[1]
EVAL_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
PREFIXES = [16, 32, 64, 128, 256, 512, 576, 1024]
FLOW_STEPS = 8
# The flow decoder's classifier-free guidance scales in the table (1: none). 2 and 3 were picked on the three
# training clips held out of the 1D network's training (docs/LAYOUT_1D.md), not here.
GUIDANCES = (1.0, 2.0, 3.0)


def decoders(guidances=GUIDANCES) -> list[tuple[str, int, float]]:
    """The table's decoders: (name, flow steps (0: the regression), guidance)."""
    flows = [(f"flow, {FLOW_STEPS} steps{guided(g)}", FLOW_STEPS, g) for g in guidances]
    return [("regression", 0, 1.0), *flows]


GRID_TOKENS = 9 * 32 * 32  # a 33x256x256 window's 4x8x8 grid
GRID_SETTINGS = {
    "default (rd, drift, hold)": {},
    "paper (global_elbo, error, mask)": {"strategy": "global_elbo", "selection": "error", "fill": "mask"},
    "static, error, mask": {"strategy": "static", "selection": "error", "fill": "mask"},
    "static, value, mask": {"strategy": "static", "selection": "value", "fill": "mask"},
}


def sharpness(frames: np.ndarray) -> float:
    """Mean squared high-frequency energy: the frames less their 5x5 box blur (luma, per frame)."""
    x = torch.from_numpy(frames).float().mean(dim=-1)[:, None]
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return float(((x - blurred) ** 2).mean())


def scores(source: np.ndarray, decoded: np.ndarray, with_vmaf: bool) -> dict:
    out = {
        "psnr": psnr(source, decoded),
        "ssim": ssim(source, decoded),
        "sharpness": sharpness(decoded) / max(sharpness(source), 1e-9),
    }
    if with_vmaf:
        out["vmaf"] = vmaf(source, decoded)
    return out


def mean_rows(rows: list[dict]) -> dict:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def clip_frames(path: Path) -> np.ndarray:
    return resize_and_crop(read_video(path, max_frames=33)[0], 256)


def one_d_rows(
    model: InfoTok1D, clips: list[np.ndarray], with_vmaf: bool, prefixes=PREFIXES, guidances=GUIDANCES
) -> dict:
    table: dict[str, dict] = {}
    for frames in clips:
        sequence, (h, w) = model.encode_window(frames), frames.shape[1:3]
        for k in prefixes:
            for name, steps, guidance in decoders(guidances):
                decoded = model.decode_window(sequence[:k], h, w, steps=steps, guidance=guidance)
                decoded = from_model(decoded)[: len(frames)]
                table.setdefault(f"{name}|{k}", []).append(scores(frames, decoded, with_vmaf))
    return {key: mean_rows(rows) for key, rows in table.items()}


def base_ceiling(model: InfoTok1D, clips: list[np.ndarray], with_vmaf: bool) -> dict:
    """The base's own codes at every position, decoded by the base decoder both 1D decoders end in: how sharp and
    how close either can get, whatever the registers learn."""
    rows = []
    for frames in clips:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]
        decoded = from_model(model.base(x))[: len(frames)]  # the base's forward: its codes, decoded
        rows.append(scores(frames, decoded, with_vmaf))
    return mean_rows(rows)


def grid_rows(model: InfoTok, clips: list[np.ndarray], with_vmaf: bool) -> dict:
    """The grid tokenizer at the 1D token counts it can reach (a window's grid has 9216 positions)."""
    table: dict[str, dict] = {}
    for frames in clips:
        for k in (576, 1024, 2304):
            for name, settings in GRID_SETTINGS.items():
                try:
                    tokens = model.tokenize(frames, rate=k / GRID_TOKENS, window=33, overlap=0, fps=24.0, **settings)
                except ValueError as exc:  # a rate the setting cannot reach (hold keeps a whole first latent frame)
                    log(f"grid {name} at {k} tokens: {exc}")
                    continue
                decoded = model.detokenize(tokens)
                row = scores(frames, decoded, with_vmaf) | {"tokens": tokens.ledger().kept}
                table.setdefault(f"{name}|{k}", []).append(row)
    return {key: mean_rows(rows) for key, rows in table.items() if len(rows) == len(clips)}


def seconds_per_window(one_d: InfoTok1D, grid: InfoTok, frames: np.ndarray, repeats: int = 3) -> dict:
    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    sequence = one_d.encode_window(frames)
    tokens = grid.tokenize(frames, rate=1024 / GRID_TOKENS, window=33, overlap=0, fps=24.0)
    out = {
        "1d encode": best(lambda: one_d.encode_window(frames)),
        "grid encode (default, 1024 tokens)": best(
            lambda: grid.tokenize(frames, rate=1024 / GRID_TOKENS, window=33, overlap=0, fps=24.0)
        ),
        "1d decode, regression": best(lambda: one_d.decode_window(sequence[:64], 256, 256)),
        "grid decode (default, 1024 tokens)": best(lambda: grid.detokenize(tokens)),
    }
    for steps in (1, 4, 8):
        out[f"1d decode, flow {steps} steps"] = best(lambda s=steps: one_d.decode_window(sequence[:64], 256, 256, s))
    out[f"1d decode, flow {FLOW_STEPS} steps, guidance 2"] = best(
        lambda: one_d.decode_window(sequence[:64], 256, 256, FLOW_STEPS, guidance=2.0)
    )
    return out


def picture(model: InfoTok1D, frames: np.ndarray, path: Path) -> None:
    sequence = model.encode_window(frames)
    columns = [("source", frames)]
    for k in (16, 64, 256, 1024):
        columns.append((f"{k} tokens", from_model(model.decode_window(sequence[:k], 256, 256))[: len(frames)]))
    columns.append(
        (f"64, flow {FLOW_STEPS}", from_model(model.decode_window(sequence[:64], 256, 256, 8))[: len(frames)])
    )
    with tempfile.TemporaryDirectory() as tmp:
        png = strip(side_by_side(columns), Path(tmp) / "strip.png", count=3, header=layout(256).header, title=None)
        Image.open(png).save(path, quality=85)  # JPEG: the repository stays small


def table_row(label: str, tokens: float, row: dict, with_vmaf: bool) -> str:
    vmaf_cell = f" {row['vmaf']:.1f} |" if with_vmaf else ""
    return (
        f"| {label} | {tokens:.0f} | {tokens / GRID_TOKENS:.4f} | {row['psnr']:.2f} | {row['ssim']:.4f} "
        f"| {row['sharpness']:.2f} |{vmaf_cell}"
    )


def report(result: dict) -> str:
    lines = [
        f"# The 1D layout (infotok-1d) on {result.get('source', 'the evaluation clips')}",
        "",
        "Generated by `python -m benchmarks.layout1d` (also run by `make bench`); every figure below is from that run.",
        "",
        f"Data: {result['clips']} clips of `{result.get('videos', '../shared/data/videos')}`"
        + (" (never trained on)" if "source" not in result else "")
        + ", first 33 frames, short side "
        "256, centre crop 256x256: one window of 9216 grid positions. Each clip is encoded once and each prefix "
        "cut from that sequence. Sharpness: high-frequency energy of the decode over the source's (1 = as sharp).",
        "",
        "| decoder | tokens kept (mean) | share of the grid | PSNR | SSIM | sharpness |"
        + (" VMAF |" if result["vmaf"] else ""),
        "|---|---|---|---|---|---|" + ("---|" if result["vmaf"] else ""),
    ]
    for key, row in result["1d"].items():
        name, k = key.split("|")
        lines.append(table_row(f"1D {name}", int(k), row, result["vmaf"]))
    if "base" in result:
        label = "InfoTok-Flex's base alone, every code (what both 1D decoders decode through)"
        lines.append(table_row(label, GRID_TOKENS, result["base"], result["vmaf"]))
    for key, row in result["grid"].items():
        name, k = key.split("|")
        lines.append(table_row(f"grid (InfoTok-Flex) {name}, asked {k}", row["tokens"], row, result["vmaf"]))
    lines += ["", "Seconds per 33x256x256 window on this machine (best of 3, one window at a time):", ""]
    lines += ["| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.3f} |" for name, sec in result["seconds"].items()]
    lines += [
        "",
        "![one clip at increasing prefixes](docs/bench_1d.jpg)  ",
        f"`docs/bench_1d.jpg`: {result['picture_clip']}, frames 0, 16 and 32; source, the regression from the "
        f"first 16, 64, 256 and 1024 tokens, and the flow decoder ({FLOW_STEPS} steps) from 64.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.layout1d", description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(EVAL_VIDEOS))
    p.add_argument("--vmaf", action="store_true", help="also VMAF (slower)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS_1D.md"))
    p.add_argument("--report-only", metavar="JSON", help="only write the report of an earlier run's bench_1d.json")
    p.add_argument("--tokens", help=f"comma-separated prefixes (default {','.join(map(str, PREFIXES))})")
    p.add_argument("--guidance", help="comma-separated guidance scales of the flow rows (default 1,2,3)")
    args = p.parse_args(argv)
    prefixes = [int(k) for k in args.tokens.split(",")] if args.tokens else PREFIXES
    guidances = [float(g) for g in args.guidance.split(",")] if args.guidance else GUIDANCES
    if args.report_only:
        Path(args.out).write_text(report(json.loads(Path(args.report_only).read_text())))
        return 0
    torch.set_grad_enabled(False)
    one_d, grid = InfoTok1D.from_pretrained(), InfoTok.from_pretrained()
    paths = list_clips(args.videos)
    clips = [clip_frames(p) for p in paths]
    log(f"1D layout on {len(clips)} clips")
    result = {"clips": len(clips), "vmaf": args.vmaf}
    if Path(args.videos).resolve() != EVAL_VIDEOS.resolve():  # e.g. held-out training clips, to choose settings on
        result |= {"source": f"the clips of {Path(args.videos).name}", "videos": args.videos}
    result["1d"] = one_d_rows(one_d, clips, args.vmaf, prefixes, guidances)
    result["base"] = base_ceiling(one_d, clips, args.vmaf)
    log("grid at the same token counts")
    result["grid"] = grid_rows(grid, clips, args.vmaf)
    log("seconds per window")
    result["seconds"] = seconds_per_window(one_d, grid, clips[0])
    result["picture_clip"] = paths[1].name if len(paths) > 1 else paths[0].name
    beside = Path(args.out).parent  # the picture and the run's JSON go with the report they belong to
    (beside / "docs").mkdir(exist_ok=True)
    picture(one_d, clips[1] if len(clips) > 1 else clips[0], beside / "docs" / "bench_1d.jpg")
    (beside / "bench_out").mkdir(exist_ok=True)
    (beside / "bench_out" / "bench_1d.json").write_text(json.dumps(result, indent=2))
    Path(args.out).write_text(report(result))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
