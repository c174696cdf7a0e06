"""`make bench`: InfoTok against the peers' mechanisms on the shared clips; writes BENCHMARKS.md.

Everything is measured here, on this machine, from the shipped checkpoints:
- fixed rate: the base tokenizer (checkpoints/base);
- InfoTok-Flex (checkpoints/infotok-flex) with static, global_elbo, uniform rates and error, order,
  random selection; the per-clip oracle over rates {1/16, ..., 1};
- ElasticTok-style (checkpoints/elastic-style): the same architecture fine-tuned with tail dropping
  and uniformly random kept lengths, at fixed rates and with ElasticTok's MSE-threshold binary search;
- encode/decode throughput and peak memory of the CLI on 60 vs 600 frames.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .eval import (binary_search_rate, bd_rate, clip_rates, decode_clip, fvd_of, load_clip, make_clip,
                   measure_clip, oracle_rates)
from .model import InfoTok
from .perceptual import Perceptual
from .selection import keep_mask

ROOT = Path(__file__).resolve().parents[2]
RATES = [1.0, 0.75, 0.5, 0.25, 0.125]
TABLE_RATES = [0.75, 0.5]  # BPP16 0.81 and 0.56
ORACLE_GRID = [k / 16 for k in range(1, 17)]
SEARCH_THRESHOLDS = [0.01, 0.02, 0.04, 0.08]  # MSE on [-1, 1]; ElasticTok uses 0.003 for a ~30 dB model


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(model, clip, mask, rate, quality: bool = True, with_vmaf: bool = False, perceptual=None) -> dict:
    return {"rate": rate} | measure_clip(model, clip, mask, rate, quality, with_vmaf, perceptual)


def motion(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (uint8 levels): how much a clip moves."""
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean())


def spatial_detail(frames: np.ndarray, factor: int = 8) -> float:
    """Mean absolute error (uint8 levels) of each frame against its `factor`x`factor` average-pooled,
    bilinearly re-upsampled copy: a model-free measure of how much fine spatial detail a clip has."""
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
    h, w = (x.shape[2] // factor) * factor, (x.shape[3] // factor) * factor
    x = x[:, :, :h, :w]
    smooth = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, factor), scale_factor=factor,
                                             mode="bilinear", align_corners=False)
    return float((smooth - x).abs().mean())


def summarize(method: str, rows: list[dict], extra: dict | None = None) -> dict:
    out = {"method": method, "videos": len(rows),
           "realized_rate": float(np.mean([r["realized_rate"] for r in rows]))}
    out["bpp16"] = out["realized_rate"] + 1 / 16
    for key in ("psnr", "ssim", "vmaf", "lpips", "bpp16_file"):
        if all(key in r for r in rows):
            out[key] = float(np.mean([r[key] for r in rows]))
    return out | (extra or {})


def run_rate_distortion(args) -> dict:
    videos = sorted(p for p in Path(args.videos).iterdir() if p.suffix.lower() in {".mp4", ".avi", ".mkv", ".mov"})
    infotok = InfoTok.from_pretrained(args.infotok)
    base = InfoTok.from_pretrained(args.base)
    elastic = InfoTok.from_pretrained(args.elastic)
    perceptual = Perceptual.from_paths(args.lpips_weights, args.fvd_weights)
    curves: dict[str, list[dict]] = {}
    per_video: list[dict] = []

    def add(method, rate, rows, extra=None):
        fvd = fvd_of(rows, clips)  # the clips of the model being measured
        s = summarize(method, rows, extra) | {"rate": rate} | ({"fvd": fvd} if fvd is not None else {})
        curves.setdefault(method, []).append(s)
        per_video.extend(r | {"method": method, "avg_rate": rate} for r in rows)
        log(f"{method} rate {rate:g}: realized {s['realized_rate']:.3f} PSNR {s['psnr']:.2f}")

    def vm(rate):  # the slower metrics only at the table's operating points
        return args.vmaf and rate in TABLE_RATES + [1.0]

    def pm(rate):
        return perceptual if rate in TABLE_RATES + [1.0] else None

    # fixed-rate base tokenizer
    clips = [load_clip(base, v, args.size, args.frames) for v in videos]
    full = lambda c: torch.ones_like(c.scores, dtype=torch.bool)
    add("fixed (base)", 1.0, [measure(base, c, full(c), 1.0, with_vmaf=args.vmaf, perceptual=perceptual) for c in clips])
    # what orders the clips: the base tokenizer's own full-rate error, and model-free content measures
    content = {c.name: {"base_score": c.score, "detail": spatial_detail(c.frames), "motion": motion(c.frames)}
               for c in clips}
    curves["fixed (base)"][0]["bpp16"] = 1.0  # a fixed-rate tokenizer stores no mask

    # InfoTok-Flex
    t0 = time.time()
    clips = [load_clip(infotok, v, args.size, args.frames) for v in videos]
    router_seconds = (time.time() - t0) / len(clips)
    for c in clips:  # the same clip with its first frame held still: does the router see motion?
        content[c.name]["held_score"] = make_clip(infotok, c.name, np.repeat(c.frames[:1], len(c.frames), 0)).score
    for strategy, method in (("static", "InfoTok-Flex static"), ("global_elbo", "InfoTok-Flex global_elbo"),
                             ("uniform", "InfoTok-Flex uniform")):
        for rate in RATES:
            rates = clip_rates(strategy, rate, clips, float(infotok.score_mean), seed=0)
            table = strategy != "uniform"
            rows = [measure(infotok, c, keep_mask(c.scores, r, "error"), r, with_vmaf=vm(rate) and table,
                            perceptual=pm(rate) if table else None)
                    | {"clip_rate": r, "score": c.score} for c, r in zip(clips, rates)]
            add(method, rate, rows)
    for selection in ("order", "random"):
        for rate in TABLE_RATES:
            gen = lambda: torch.Generator().manual_seed(0)
            add(f"InfoTok-Flex static, {selection} selection", rate,
                [measure(infotok, c, keep_mask(c.scores, rate, selection, gen()), rate) for c in clips])

    def psnr_at(c, r):  # error-ranked tokens, PSNR only
        return measure(infotok, c, keep_mask(c.scores, r, "error"), r, quality=False)["psnr"]

    # oracle: per-clip PSNR at every rate k/16, then the best assignment per average rate
    grid = np.array([[psnr_at(c, r) for r in ORACLE_GRID] for c in clips])
    oracle = []
    for rate in RATES:
        picks, mean_psnr = oracle_rates(grid, ORACLE_GRID, rate)
        elbo = next(s for s in curves["InfoTok-Flex global_elbo"] if s["rate"] == rate)
        oracle.append({"method": "oracle (per-clip search)", "rate": rate, "realized_rate": float(np.mean(picks)),
                       "bpp16": float(np.mean(picks)) + 1 / 16, "psnr": mean_psnr,
                       "clip_rates": {c.name: r for c, r in zip(clips, picks)},
                       "global_elbo_psnr": elbo["psnr"], "videos": len(clips)})
        log(f"oracle rate {rate:g}: PSNR {mean_psnr:.2f} vs global_elbo {elbo['psnr']:.2f}")
    curves["oracle (per-clip search)"] = oracle
    clip_scores = {c.name: c.score for c in clips}
    # the same router on whole frames (short side resized, no centre crop), where borders stay visible
    whole = [load_clip(infotok, v, args.size, args.frames, crop=False) for v in videos]
    whole_rates = clip_rates("global_elbo", 0.5, whole, float(infotok.score_mean))
    whole_grid = np.array([[psnr_at(c, r) for r in ORACLE_GRID] for c in whole])
    whole_picks, whole_oracle_psnr = oracle_rates(whole_grid, ORACLE_GRID, 0.5)
    half_column = ORACLE_GRID.index(0.5)  # static 0.5 is a point of the oracle's grid
    whole_frame = {c.name: {"score": c.score, "rate": r, "size": list(c.frames.shape[1:3]), "motion": motion(c.frames),
                            "psnr_static": float(psnr_row[half_column]), "psnr_global_elbo": psnr_at(c, r),
                            "oracle_rate": pick}
                   for c, r, psnr_row, pick in zip(whole, whole_rates, whole_grid, whole_picks)}
    del whole

    # ElasticTok-style: fixed rates, then the MSE-threshold binary search over prefix lengths
    clips = [load_clip(elastic, v, args.size, args.frames) for v in videos]
    for rate in RATES:
        add("ElasticTok-style (tail drop)", rate,
            [measure(elastic, c, keep_mask(c.scores, rate, "order"), rate, with_vmaf=vm(rate), perceptual=pm(rate))
             for c in clips])
    search_passes = []
    for threshold in SEARCH_THRESHOLDS:
        rows, passes = [], []
        for c in clips:
            def mse_at(k, c=c):
                recon = decode_clip(elastic, c, keep_mask(c.scores, k / 16, "order"))
                return float(np.mean(((recon.astype(np.float64) - c.frames) / 127.5) ** 2))
            t1 = time.time()
            k, n = binary_search_rate(mse_at, 16, threshold)
            search_seconds = time.time() - t1
            passes.append(n)
            rows.append(measure(elastic, c, keep_mask(c.scores, k / 16, "order"), k / 16)
                        | {"search_passes": n, "search_seconds": search_seconds})
        search_passes += passes
        add("ElasticTok-style binary search", threshold, rows,
            extra={"threshold": threshold, "nfe": 1 + float(np.mean(passes)) + 1,
                   "seconds_per_clip": float(np.mean([r["search_seconds"] for r in rows]))})

    return {"curves": curves, "per_video": per_video, "router_seconds_per_clip": router_seconds,
            "clip_scores": clip_scores, "clip_content": content, "whole_frame_router": whole_frame,
            "whole_frame_oracle_psnr": whole_oracle_psnr,
            "search_passes_mean": float(np.mean(search_passes))}


def cli_resources(video: Path, frames: int, size: int, checkpoint: str) -> dict:
    """Encode + decode `frames` frames of `video` through the CLI in fresh processes: time and peak RSS."""
    code = ("import resource, sys, time; from infotok.cli import main; t = time.time(); rc = main(sys.argv[1:]); "
            "print('RESULT', rc, time.time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        from .video import iter_frames, probe, write_video
        info = probe(video)
        clip = Path(d, "clip.mp4")
        write_video(clip, iter_frames(video, max_frames=frames), fps=info.fps)
        for step, argv in (("encode", ["encode", str(clip), "-o", f"{d}/t.itok", "--size", str(size), "--rate", "0.5",
                                       "--checkpoint", checkpoint]),
                           ("decode", ["decode", f"{d}/t.itok", "-o", f"{d}/out.mp4", "--checkpoint", checkpoint])):
            done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=3000)
            line = next(l for l in done.stderr.splitlines() if l.startswith("RESULT"))
            _, rc, seconds, rss_kb = line.split()
            if rc != "0":
                raise RuntimeError(f"infotok {step} failed: {done.stderr[-500:]}")
            out[step] = {"seconds": float(seconds), "frames_per_s": frames / float(seconds),
                         "peak_rss_mib": int(rss_kb) / 1024}
        out["file_bytes"] = Path(d, "t.itok").stat().st_size
    return out


def throughput(model_dir: str, size: int, frames: int) -> dict:
    """Model-only encode (with router) and decode frames/s on a 33x256x256 clip, after a warm-up."""
    model = InfoTok.from_pretrained(model_dir)
    x = torch.rand(1, 3, frames, size, size) * 2 - 1
    out = {}
    with torch.no_grad():
        model.code_window(x, 0.5, "static")
        t = time.time()
        for _ in range(3):
            code = model.code_window(x, 0.5, "static")
        out["encode_with_router_frames_per_s"] = 3 * frames / (time.time() - t)
        t = time.time()
        for _ in range(3):
            model.decode_window(code.mask, code.indices)
        out["decode_frames_per_s"] = 3 * frames / (time.time() - t)
    return out


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for method, points in curves.items():
        if method.endswith("selection"):
            continue
        pts = sorted(points, key=lambda p: p["bpp16"])
        style = "o-" if len(pts) > 1 else "s"
        ax.plot([p["bpp16"] for p in pts], [p["psnr"] for p in pts], style, label=method, ms=4)
    ax.set_xlabel("BPP16 (kept rate + 1/16 mask)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Rate-distortion on ../shared/data/videos (256x256, 33 frames)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _at(curve: list[dict], rate: float) -> dict:
    return next(p for p in curve if abs(p["rate"] - rate) < 1e-9)


def _rate_for_psnr(curve: list[dict], target: float) -> float | None:
    """Interpolated realized rate at which a curve reaches `target` PSNR (None if it never does)."""
    pts = sorted(curve, key=lambda p: p["realized_rate"])
    for a, b in zip(pts, pts[1:]):
        if a["psnr"] <= target <= b["psnr"] and b["psnr"] > a["psnr"]:
            return a["realized_rate"] + (target - a["psnr"]) * (b["realized_rate"] - a["realized_rate"]) / (b["psnr"] - a["psnr"])
    return None


def spearman(a, b) -> float:
    """Spearman rank correlation, ties given their mean rank."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def content_section(result: dict) -> list[str]:
    """Per clip, each score relative to its mean over the clips: InfoTok-Flex's router (also with the
    first frame held still), the fixed-rate base tokenizer's full-rate error, and model-free detail and
    motion of the evaluated crop. Tells whether the router's order of clips is the model's or the content's."""
    names = sorted(result["clip_scores"], key=result["clip_scores"].get)
    flex = np.array([result["clip_scores"][n] for n in names])
    content = result["clip_content"]
    base, detail, moving, held = (np.array([content[n][k] for n in names])
                                  for k in ("base_score", "detail", "motion", "held_score"))
    L = ["", "What orders the clips: each clip's score divided by the mean over the clips, for InfoTok-Flex "
         "(the router's input), for the same clip with its first frame held still for all frames (divided by "
         "the same mean), for the fixed-rate base tokenizer (the same full-rate L1 error, another model), "
         "and for two model-free measures of the evaluated crop: spatial detail (mean |frame - its 8x8 "
         "average-pooled, bilinearly re-upsampled copy|) and motion (mean |frame change|).", "",
         "| video | InfoTok-Flex | first frame held | base tokenizer | spatial detail | motion |",
         "|---|---|---|---|---|---|"]
    def per_mean(v, of):
        return v / max(float(of.mean()), 1e-12)

    columns = [per_mean(flex, flex), per_mean(held, flex), per_mean(base, base), per_mean(detail, detail),
               per_mean(moving, moving)]
    for i, n in enumerate(names):
        L.append(f"| {n} | " + " | ".join(f"{column[i]:.2f}" for column in columns) + " |")
    L += ["", f"Holding the first frame still lowers the score of {int((held < flex).sum())} of {len(names)} clips. "
              f"Rank agreement (Spearman) of InfoTok-Flex's clip scores with the base tokenizer's: "
              f"{spearman(flex, base):+.2f}; with spatial detail: {spearman(flex, detail):+.2f}; "
              f"with motion: {spearman(flex, moving):+.2f}."]
    return L


def markdown(result: dict, args, seconds: float) -> str:
    c = result["curves"]
    cmd = "make bench"
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU only"
    L = ["# Benchmarks", "",
         f"Generated by `{cmd}` (`python -m infotok.bench`) in {seconds / 60:.1f} min on this machine ({machine}).",
         f"Data: every clip in `{args.videos}` ({len(result['clip_scores'])} videos, never used for training), "
         f"first {args.frames} frames, short side resized to {args.size}, centre crop {args.size}x{args.size}. "
         "PSNR per video over all frames in uint8 range, then averaged; SSIM per frame (data range 255), averaged; "
         "VMAF v0.6.1 through libvmaf (imageio-ffmpeg's FFmpeg). BPP16 is the paper's nominal ledger "
         "(kept rate + 1/16 for the mask); `file BPP16` is from the bytes of real `.itok` files.", "",
         "Models (all trained by `infotok train`, logs beside the weights): `checkpoints/base` (fixed rate), "
         "`checkpoints/infotok-flex` (InfoTok-Flex), `checkpoints/elastic-style` (same architecture and init, "
         "fine-tuned with tail dropping and uniformly random kept lengths, ElasticTok's training). "
         "InfoTok-Flex then had three more stages (1000 steps each with static-border clips: 256x256 crops, then "
         "with the router's own rates, then half the batches elongated to 144x456 or 456x144; "
         "`checkpoints/infotok-flex/TRAINING.md`) that the "
         "ElasticTok-style peer did not get; the equal-budget comparison (both after stage 1) is this file at "
         "commit 0ba8a4f.", "",
         "![rate-distortion](docs/bench_rd.png)", "",
         "## Rate-distortion", "", "| method | rate | realized rate | BPP16 | file BPP16 | PSNR | SSIM |",
         "|---|---|---|---|---|---|---|"]
    for method, pts in c.items():
        for p in sorted(pts, key=lambda p: -p["rate"]):
            L.append(f"| {method} | {p['rate']:g} | {p['realized_rate']:.3f} | {p['bpp16']:.3f} | "
                     f"{p.get('bpp16_file', float('nan')):.3f} | {p['psnr']:.2f} | {p.get('ssim', float('nan')):.4f} |")
    fixed = c["fixed (base)"][0]
    learned = [(k, label) for k, label in (("lpips", "LPIPS"), ("fvd", "FVD")) if k in fixed]
    L += ["", "## At BPP16 0.81 and 0.56 (the paper's Table 1 operating points)", "",
          "| method | BPP16 | PSNR | SSIM | VMAF |" + "".join(f" {label} |" for _, label in learned),
          "|---|---|---|---|---|" + "---|" * len(learned)]

    def table_row(method, p):
        return (f"| {method} | {p['bpp16']:.2f} | {p['psnr']:.2f} | {p['ssim']:.4f} | {p.get('vmaf', float('nan')):.2f} |"
                + "".join(f" {p.get(k, float('nan')):.4g} |" for k, _ in learned))

    L.append(table_row("fixed (base)", fixed))
    for rate in TABLE_RATES:
        for method in ("InfoTok-Flex global_elbo", "InfoTok-Flex static", "ElasticTok-style (tail drop)"):
            L.append(table_row(method, _at(c[method], rate)))
    if len(learned) < 2:
        L += ["", "LPIPS and FVD need network weights this machine does not have (nothing is downloaded); "
              "`make bench LPIPS_WEIGHTS=alexnet-owt-7be5be79.pth FVD_WEIGHTS=i3d_torchscript.pt` "
              "adds the missing columns (FVD over only these 8 clips is a rough figure)."]
    L += ["", "## BD-rate (negative = fewer bits for the same PSNR)", ""]
    elbo = c["InfoTok-Flex global_elbo"]
    for ref in ("InfoTok-Flex static", "ElasticTok-style (tail drop)"):
        try:
            value = bd_rate([p["bpp16"] for p in c[ref]], [p["psnr"] for p in c[ref]],
                            [p["bpp16"] for p in elbo], [p["psnr"] for p in elbo])
            L.append(f"- InfoTok-Flex global_elbo vs {ref}: **{value:+.1f}%**")
        except ValueError as exc:
            L.append(f"- InfoTok-Flex global_elbo vs {ref}: not defined ({exc})")
    L += ["", "## Selection ablation at equal rate (same InfoTok-Flex model, static rate)", "",
          "| rate | error (InfoTok) | order (tail drop) | random |", "|---|---|---|---|"]
    for rate in TABLE_RATES:
        L.append(f"| {rate:g} | {_at(c['InfoTok-Flex static'], rate)['psnr']:.2f} | "
                 f"{_at(c['InfoTok-Flex static, order selection'], rate)['psnr']:.2f} | "
                 f"{_at(c['InfoTok-Flex static, random selection'], rate)['psnr']:.2f} |")
    L += ["", "## Router: rates per clip at average rate 0.5 (global_elbo) and its cost", "",
          f"Evaluation protocol ({args.size}x{args.size} centre crop), with the rate the per-clip oracle gives "
          "each clip at the same average (the exhaustive search over k/16 that maximises mean PSNR), and the same "
          f"router on whole frames (short side {args.size}, no crop: borders such as a pillarbox stay in view), "
          "with the mean PSNR there at `static` 0.5 and at the router's rate, and the oracle's rate there. "
          "Motion: mean absolute change between consecutive frames of the whole frame, in uint8 levels.", "",
          "| video | clip score | global_elbo rate | oracle rate | whole frame | motion | score | rate "
          "| oracle rate | PSNR static 0.5 | PSNR global_elbo |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    half = [r for r in result["per_video"] if r["method"] == "InfoTok-Flex global_elbo" and r["avg_rate"] == 0.5]
    oracle_half = _at(c["oracle (per-clip search)"], 0.5)["clip_rates"]
    for r in sorted(half, key=lambda r: r["clip_rate"]):
        w = result["whole_frame_router"][r["video"]]
        L.append(f"| {r['video']} | {r['score']:.4f} | {r['clip_rate']:.3f} | {oracle_half[r['video']]:.3f} | "
                 f"{w['size'][1]}x{w['size'][0]} | {w['motion']:.1f} | {w['score']:.4f} | {w['rate']:.3f} | "
                 f"{w['oracle_rate']:.3f} | {w['psnr_static']:.2f} | {w['psnr_global_elbo']:.2f} |")
    whole = result["whole_frame_router"].values()
    L += ["", f"Whole frames, mean over the clips: `static` 0.5 {np.mean([w['psnr_static'] for w in whole]):.2f} dB, "
              f"`global_elbo` 0.5 {np.mean([w['psnr_global_elbo'] for w in whole]):.2f} dB (mean rate "
              f"{np.mean([w['rate'] for w in whole]):.3f}), oracle {result['whole_frame_oracle_psnr']:.2f} dB; "
              "rank agreement (Spearman) of the router's and the oracle's whole-frame rates: "
              f"{spearman([w['rate'] for w in whole], [w['oracle_rate'] for w in whole]):+.2f}."]
    agreement = spearman([r["clip_rate"] for r in half], [oracle_half[r["video"]] for r in half])
    L += ["", f"Rank agreement (Spearman) between the router's and the oracle's per-clip rates: {agreement:+.2f} "
              "(+1: the router orders the clips as the oracle does)."]
    L += content_section(result)
    search = c["ElasticTok-style binary search"]
    L += ["", f"- InfoTok router: 1 extra decoder pass per window (NFE 2 with the encoder); "
              f"encode + route = {result['router_seconds_per_clip']:.2f} s per 33x256x256 clip.",
          f"- ElasticTok-style binary search over 16 prefix lengths: {result['search_passes_mean']:.1f} decoder passes "
          f"per clip on average (NFE {1 + result['search_passes_mean'] + 1:.1f} with encoder and final decode); "
          f"{np.mean([p['seconds_per_clip'] for p in search]):.2f} s of search per clip.", "",
          "| search MSE threshold | realized rate | PSNR |", "|---|---|---|"]
    for p in search:
        L.append(f"| {p['threshold']} | {p['realized_rate']:.3f} | {p['psnr']:.2f} |")
    L += ["", "## The paper's claims side by side with ours", "", "| claim | paper | ours |", "|---|---|---|"]
    need = _rate_for_psnr(elbo, fixed["psnr"])
    saved = f"{(1 - need) * 100:.0f}% of tokens (global_elbo reaches the fixed-rate PSNR at rate {need:.2f})" if need \
        else "none: global_elbo does not reach the fixed-rate base's PSNR at any rate below 1"
    L.append(f"| tokens saved at no quality loss (vs fixed rate) | ~20% | {saved} |")
    for rate, bpp in zip(TABLE_RATES, ("0.81", "0.56")):
        gain = _at(elbo, rate)["psnr"] - _at(c["ElasticTok-style (tail drop)"], rate)["psnr"]
        L.append(f"| PSNR gain over tail dropping at BPP16 {bpp} | 1.6-2.0 dB | {gain:+.2f} dB |")
    gaps = [o["psnr"] - o["global_elbo_psnr"] for o in c["oracle (per-clip search)"] if o["rate"] in TABLE_RATES]
    L.append(f"| router vs oracle gap (0.81 / 0.56) | <= 0.1 dB | {gaps[0]:.2f} / {gaps[1]:.2f} dB |")
    L.append(f"| overhead NFE, router vs search | 1 vs 11 | 1 vs {result['search_passes_mean'] + 1:.1f} |")
    static_gain = [_at(elbo, r)["psnr"] - _at(c["InfoTok-Flex static"], r)["psnr"] for r in TABLE_RATES]
    L.append(f"| global_elbo vs static at 0.81 / 0.56 | (InfoTok vs InfoTok-static not tabulated) | "
             f"{static_gain[0]:+.2f} / {static_gain[1]:+.2f} dB |")
    res = result.get("resources")
    if res:
        L += ["", "## Throughput and memory", "",
              f"Model only, one 33x{args.size}x{args.size} window, batch 1, fp32, CPU: encode with router "
              f"{res['model']['encode_with_router_frames_per_s']:.1f} frames/s, decode "
              f"{res['model']['decode_frames_per_s']:.1f} frames/s.", "",
              f"CLI on `{res['video']}` (`infotok encode --size {args.size} --rate 0.5`, then `infotok decode`), "
              "each in a fresh process; peak resident memory of that process:", "",
              "| frames | encode s | encode frames/s | encode peak RSS MiB | decode s | decode peak RSS MiB | .itok bytes |",
              "|---|---|---|---|---|---|---|"]
        for n, r in res["cli"].items():
            L.append(f"| {n} | {r['encode']['seconds']:.1f} | {r['encode']['frames_per_s']:.1f} | "
                     f"{r['encode']['peak_rss_mib']:.0f} | {r['decode']['seconds']:.1f} | "
                     f"{r['decode']['peak_rss_mib']:.0f} | {r['file_bytes']} |")
    L += ["", "Raw numbers: `bench_out/bench.json` and `bench_out/per_video.csv` (regenerated by `make bench`).", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infotok.bench", description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "videos"))
    p.add_argument("--infotok", default=str(ROOT / "checkpoints" / "infotok-flex"))
    p.add_argument("--base", default=str(ROOT / "checkpoints" / "base"))
    p.add_argument("--elastic", default=str(ROOT / "checkpoints" / "elastic-style"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--no-vmaf", dest="vmaf", action="store_false")
    p.add_argument("--lpips-weights", metavar="FILE", help="torchvision AlexNet/VGG16 state dict: adds LPIPS")
    p.add_argument("--fvd-weights", metavar="FILE", help="TorchScript video feature network (I3D): adds FVD")
    p.add_argument("--long-video", default="bdd_e5cd93c4.mp4", help="clip used for the 60 vs 600 frame memory test")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    args = p.parse_args(argv)
    start = time.time()
    result = run_rate_distortion(args)
    log("throughput and memory")
    long_video = Path(args.videos) / args.long_video
    result["resources"] = {"video": long_video.name, "model": throughput(args.infotok, args.size, args.frames),
                           "cli": {n: cli_resources(long_video, n, args.size, args.infotok) for n in (60, 600)}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    keys = sorted({k for r in result["per_video"] for k in r})
    with open(out / "per_video.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(result["per_video"])
    plot(result["curves"], Path(args.markdown).parent / "docs" / "bench_rd.png")  # BENCHMARKS.md links docs/bench_rd.png
    Path(args.markdown).write_text(markdown(result, args, time.time() - start))
    log(f"wrote {args.markdown} in {(time.time() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
