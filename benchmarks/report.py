"""BENCHMARKS.md and its plot, filled only from what one `make bench` run measured.

History (how figures moved across checkpoints and commits) lives in docs/BENCHMARK_HISTORY.md, by
hand, with the commits it refers to; nothing here remembers it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from infotok.ledger import MASK_BPP16
from infotok.metrics import bd_rate, spearman

from .experiments import TABLE_RATES

REPOSITORY = Path(__file__).resolve().parents[1]


def shown(path: str) -> str:
    """A path as the report shows it: relative to the checkout, never this machine's absolute path."""
    try:
        return os.path.relpath(Path(path).resolve(), REPOSITORY)
    except ValueError:  # another drive (Windows)
        return Path(path).name


def plot(curves: dict, protocol: dict, path: Path) -> None:
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
    ax.set_title(
        f"Rate-distortion on {protocol['videos']} ({protocol['size']}x{protocol['size']}, {protocol['frames']} frames)"
    )
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
            return a["realized_rate"] + (target - a["psnr"]) * (b["realized_rate"] - a["realized_rate"]) / (
                b["psnr"] - a["psnr"]
            )
    return None


def still_section(result: dict, rate: float = 0.5) -> list[str]:
    """Each clip moving and held still (its first frame for all frames), alone under global_elbo."""
    rows = result["still_versus_moving"]
    L = [
        "",
        f"## Still versus moving (global_elbo at {rate:g}, each clip alone)",
        "",
        "Each evaluation clip as it is and with its first frame held still for all its frames: the rate the "
        "router gives each (`tokenize`'s rate for that clip alone), its PSNR there, and the still shot's PSNR at "
        f"`static` {rate:g}.",
        "",
        "| video | moving rate | moving PSNR | still rate | still / moving tokens | still PSNR "
        "| still PSNR at static |",
    ]
    table, ratios, losses = still_table(rows)
    L += table
    L += [
        "",
        f"Mean still / moving tokens {np.mean(ratios):.2f} (largest {max(ratios):.2f}); the still shot loses "
        f"{np.mean(losses):+.2f} dB on average against `static` (largest loss {max(losses):+.2f} dB).",
    ]
    return L


def still_table(rows: dict[str, dict]) -> tuple[list[str], list[float], list[float]]:
    """Rows of a still-versus-moving table (after its header line), with each clip's still / moving
    token ratio and the PSNR the still shot loses against `static`."""
    lines, ratios, losses = ["|---|---|---|---|---|---|---|"], [], []
    for name, row in sorted(rows.items()):
        m, s = row["moving"], row["still"]
        ratios.append(s["kept"] / max(1, m["kept"]))
        losses.append(s["psnr_static"] - s["psnr"])
        lines.append(
            f"| {name} | {m['rate']:.3f} | {m['psnr']:.2f} | {s['rate']:.3f} | {ratios[-1]:.2f} | "
            f"{s['psnr']:.2f} | {s['psnr_static']:.2f} |"
        )
    return lines, ratios, losses


def content_section(result: dict) -> list[str]:
    """Per clip, each score relative to its mean over the clips: InfoTok-Flex's router (also with the
    first frame held still), the fixed-rate base tokenizer's full-rate error, and model-free detail and
    motion of the evaluated crop. Tells whether the router's order of clips is the model's or the content's."""
    names = sorted(result["clip_scores"], key=result["clip_scores"].get)
    flex = np.array([result["clip_scores"][n] for n in names])
    content = result["clip_content"]
    base, detail, moving, held = (
        np.array([content[n][k] for n in names]) for k in ("base_score", "detail", "motion", "held_score")
    )
    L = [
        "",
        "What orders the clips: each clip's score divided by the mean over the clips, for InfoTok-Flex "
        "(the router's input), for the same clip with its first frame held still for all frames (divided by "
        "the same mean), for the fixed-rate base tokenizer (the same full-rate L1 error, another model), "
        "and for two model-free measures of the evaluated crop: spatial detail (mean |frame - its 8x8 "
        "average-pooled, bilinearly re-upsampled copy|) and motion (mean |frame change|).",
        "",
        "| video | InfoTok-Flex | first frame held | base tokenizer | spatial detail | motion |",
        "|---|---|---|---|---|---|",
    ]

    def per_mean(v, of):
        return v / max(float(of.mean()), 1e-12)

    columns = [
        per_mean(flex, flex),
        per_mean(held, flex),
        per_mean(base, base),
        per_mean(detail, detail),
        per_mean(moving, moving),
    ]
    for i, n in enumerate(names):
        L.append(f"| {n} | " + " | ".join(f"{column[i]:.2f}" for column in columns) + " |")
    L += [
        "",
        f"Holding the first frame still lowers the score of {int((held < flex).sum())} of {len(names)} clips. "
        f"Rank agreement (Spearman) of InfoTok-Flex's clip scores with the base tokenizer's: "
        f"{spearman(flex, base):+.2f}; with spatial detail: {spearman(flex, detail):+.2f}; "
        f"with motion: {spearman(flex, moving):+.2f}.",
    ]
    return L


def _bpp16_psnr(curve: list[dict]) -> tuple[list[float], list[float]]:
    return [p["realized_rate"] + MASK_BPP16 for p in curve], [p["psnr"] for p in curve]


def rate_control_sections(result: dict) -> list[str]:
    """Rate control: the value predictor (`rd` under mask, `--target-psnr`, value selection) and the
    hold fill (drift selection, `rd` on the codes' drift)."""
    rc, c = result.get("rate_control"), result["curves"]
    if not rc:
        return ["", "## Rate control on predicted curves", "", "Not measured: this checkpoint has no value predictor."]
    static = c["InfoTok-Flex static"]
    methods = [
        "InfoTok-Flex static, value selection",
        "InfoTok-Flex global_elbo",
        "InfoTok-Flex rd",
        "InfoTok-Flex rd, calibrated slope",
        "InfoTok-Flex static, temporal selection",
        "oracle (per-clip search)",
        "oracle, value selection",
        "InfoTok-Flex static, hold, temporal selection",
        "InfoTok-Flex static, hold",
        "InfoTok-Flex rd, hold",
        "InfoTok-Flex rd, hold, calibrated threshold",
        "oracle, hold",
    ]
    L = [
        "",
        "## Rate control: the value predictor and the hold fill",
        "",
        f"The value predictor adds {rc['predictor_share'] * 100:.2f}% parameters. Methods without `hold` decode "
        "dropped tokens as the paper does (the decompressor infers them, `--fill mask`); with `hold`, a dropped "
        "token decodes the code last kept at its position (`--fill hold`, drift selection: the tokens whose code "
        "drifted most from the code held in their place; the shipped checkpoint's default). `rd` here spends "
        "each run's budget exactly (the mean rate of the clips is the asked one, as `global_elbo` is balanced "
        "above); `rd, calibrated slope` / `rd, hold, calibrated threshold` is what "
        "`infotok encode --strategy rd` does: each clip alone, at the slope (mask) or drift threshold (hold) "
        "stored by `infotok calibrate` for that average, so its realized mean rate is whatever the clips come to. "
        "PSNR gain over `static` (error selection, mask) at equal average rate, and BD-rate against it (log rate "
        "interpolated linearly in PSNR between the points that raise a curve's PSNR: the hold curves flatten at "
        "full quality, which makes the classic cubic fit meaningless):",
        "",
        "| method | " + " | ".join(f"PSNR at {r:g} (gain)" for r in (0.75, 0.5, 0.25)) + " | BD-rate vs static |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        if method not in c:
            continue
        cells = []
        for rate in (0.75, 0.5, 0.25):
            p = next((p for p in c[method] if abs(p["rate"] - rate) < 1e-9), None)
            cells.append(
                f"{p['psnr']:.2f} ({p['psnr'] - _at(static, rate)['psnr']:+.2f}) at {p['realized_rate']:.3f}"
                if p
                else "-"
            )
        try:
            bd = bd_rate(
                [p["bpp16"] for p in static],
                [p["psnr"] for p in static],
                [p["bpp16"] for p in c[method]],
                [p["psnr"] for p in c[method]],
                fit="linear",
            )
            bd_text = f"{bd:+.1f}%"
        except ValueError as exc:
            bd_text = f"not defined ({exc})"
        L.append(f"| {method} | " + " | ".join(cells) + f" | {bd_text} |")
    acc = rc["accuracy"]
    L += [
        "",
        f"Predicted vs measured PSNR (value selection) over {acc['windows']} evaluation windows (each clip's first "
        f"window and, where long enough, its second) at every rate k/16: median absolute error "
        f"{acc['median_abs_db']:.2f} dB, 90th percentile {acc['p90_abs_db']:.2f} dB, mean signed "
        f"{acc['mean_signed_db']:+.2f} dB (predicted minus measured); median by rate: "
        + ", ".join(f"{k} {v:.2f}" for k, v in acc["by_rate"].items())
        + " dB.",
    ]
    L += [
        "",
        "### Target PSNR (`--target-psnr`), no search",
        "",
        "Targets are the mean PSNR `static` reaches at 0.25, 0.5 and 0.75 (rounded to 0.5 dB). A window hits a target "
        "when it is within 0.5 dB of it. Target mode takes the checkpoint's calibrated margins off the predicted "
        "curves (`target_margins`: at each rate, the 90th percentile of predicted minus measured PSNR on the training "
        "clips; `infotok calibrate`); the uncalibrated column trusts the curves as they are. Against the single "
        "`static` rate that brings 90% of the windows there (error or value selection) and ElasticTok's binary search "
        "over k/16 (decoder passes counted; on the same value-selected decodes):",
        "",
        "| target dB | target mode: rate, hit rate | uncalibrated: rate, hit rate | static (error): rate "
        "| static (value): rate | search: rate, hit, passes |",
        "|---|---|---|---|---|---|",
    ]
    for t in rc["targets"]:

        def single(d):
            return f"{d['rate']:.3f}" if d["rate"] is not None else "none reaches 90%"

        L.append(
            f"| {t['target']:.1f} | {t['calibrated']['rate']:.3f}, {t['calibrated']['hit'] * 100:.0f}% | "
            f"{t['uncalibrated']['rate']:.3f}, {t['uncalibrated']['hit'] * 100:.0f}% | {single(t['static_error'])} | "
            f"{single(t['static_value'])} | {t['search']['rate']:.3f}, {t['search']['hit'] * 100:.0f}%, "
            f"{t['search']['passes']:.1f} |"
        )
    for fill, how in (
        ("hold", "calibrated threshold, drift selection, hold"),
        ("mask", "calibrated slope, value selection"),
    ):
        L += [
            "",
            f"### Still versus moving under `rd` at 0.5 ({how}; each clip alone)",
            "",
            "| video | moving rate | moving PSNR | still rate | still / moving tokens | still PSNR "
            "| still PSNR at static 0.5 (same selection and fill) |",
        ]
        table, ratios, losses = still_table(rc["still_rd"][fill])
        L += table
        L += [
            "",
            f"Mean still / moving tokens {np.mean(ratios):.2f} (largest {max(ratios):.2f}); against the still shot "
            f"at `static` 0.5 the still shot loses {np.mean(losses):+.2f} dB on average "
            f"(largest {max(losses):+.2f} dB).",
        ]
    cam = rc["static_camera"]
    L += [
        "",
        f"### A fixed camera: `{cam['video']}`",
        "",
        f"Latent cells after the first latent frame; still where the pixels moved less than 3 uint8 levels since "
        f"the previous latent frame ({cam['still_share'] * 100:.0f}% of cells). Kept fraction of each:",
        "",
        "| strategy, selection | rate | still cells kept | moving cells kept |",
        "|---|---|---|---|",
    ]
    for label, d in cam.items():
        if isinstance(d, dict):

            def share(v):
                return f"{v * 100:.0f}%" if v is not None else "-"

            L.append(f"| {label} | {d['rate']:.3f} | {share(d['still_kept'])} | {share(d['moving_kept'])} |")
    lv = rc["long_video"]
    curves = lv["methods"]
    rates = [p["rate"] for p in curves["static, error"] if p["rate"] < 1]
    L += [
        "",
        f"### A whole long video: `{lv['video']}`, every window ({lv['windows']} windows, {lv['frames']} frames, "
        "short side 256)",
        "",
        "Mean PSNR of the windows at each asked rate (the mean rate the windows came to), each window alone as "
        "`infotok encode --refresh 1` treats it (windows that continue each other: BENCHMARKS_LONG.md), except "
        "`one budget` (`--budget run`: the asked mean rate exactly, over the video's windows) and the oracle "
        "(per window, the hold-decoded rate k/16 that maximises the mean PSNR at "
        "that mean rate; held to k/16, it can be beaten by a budget spent token by token). BD-rate (BPP16, "
        "linear as above) against the paper's `static` and against `static` under hold; every curve includes "
        "rate 1, where every method keeps every token "
        f"({curves['static, error'][0]['psnr']:.2f} dB):",
        "",
        "| strategy, selection | "
        + " | ".join(f"PSNR at {r:g}" for r in rates)
        + " | BD-rate vs static | BD-rate vs static, drift, hold |",
        "|---" * (len(rates) + 3) + "|",
    ]

    def bd(ref: list[dict], curve: list[dict]) -> str:
        try:
            return f"{bd_rate(*_bpp16_psnr(ref), *_bpp16_psnr(curve), fit='linear'):+.1f}%"
        except ValueError as exc:
            return f"not defined ({exc})"

    for label, curve in curves.items():
        cells = [f"{p['psnr']:.2f} ({p['realized_rate']:.3f})" for p in curve if p["rate"] < 1]
        L.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {bd(curves['static, error'], curve)} | {bd(curves['static, drift, hold'], curve)} |"
        )
    sec = rc["seconds"]
    L += [
        "",
        f"`model.encode` seconds per 33x{sec['size'][0]}x{sec['size'][1]} window: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sec.items() if k != "size")
        + f" (rd / fixed rate: {sec['rd'] / sec['fixed rate']:.2f}x; rd under hold / fixed rate: "
        f"{sec['rd, hold'] / sec['fixed rate']:.2f}x).",
    ]
    return L


def markdown(result: dict, seconds: float | None) -> str:
    """BENCHMARKS.md from one run's result: every number and every fact stated is from `result`."""
    c = result["curves"]
    proto, ckpt = result["protocol"], result["checkpoints"]
    cmd = "make bench"
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU only"
    L = [
        "# Benchmarks",
        "",
        f"Generated by `{cmd}` (`python -m benchmarks`)"
        + (f" in {seconds / 60:.1f} min" if seconds else "")
        + f" on this machine ({machine}).",
        f"Data: every clip in `{shown(proto['videos'])}` ({len(result['clip_scores'])} videos), "
        f"first {proto['frames']} frames, short side resized to {proto['size']}, "
        f"centre crop {proto['size']}x{proto['size']}. "
        "PSNR per video over all frames in uint8 range, then averaged; SSIM per frame (data range 255), averaged; "
        "VMAF v0.6.1 through libvmaf (imageio-ffmpeg's FFmpeg). BPP16 is the paper's nominal ledger "
        "(kept rate + 1/16 for the mask); `file BPP16` is from the bytes of real `.itok` files.",
        "",
        "Models: "
        + "; ".join(
            f"`{shown(k['path'])}` ({k['name']}, {k['parameters'] / 1e6:.1f}M parameters"
            + (f", {k['trained_steps']} training steps in its last stage" if k["trained_steps"] else "")
            + ")"
            for k in ckpt.values()
        )
        + ". How each was trained, and how this file's figures moved across "
        "training stages, is in `checkpoints/*/TRAINING.md` and docs/BENCHMARK_HISTORY.md.",
        "",
        "`make bench` also writes [BENCHMARKS_1D.md](BENCHMARKS_1D.md) (the coarse-to-fine 1D layout), "
        "[BENCHMARKS_LONG.md](BENCHMARKS_LONG.md) (long videos) and [BENCHMARKS_PRIOR.md](BENCHMARKS_PRIOR.md) "
        "(the token prior: entropy-coded files, infotok against x264/x265 at equal bytes, and which layout's tokens "
        "a model pays fewest bits for at equal PSNR, with its plot).",
        "",
        "![rate-distortion](docs/bench_rd.png)",
        "",
        "## Rate-distortion",
        "",
        "| method | rate | realized rate | BPP16 | file BPP16 | PSNR | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, pts in c.items():
        for p in sorted(pts, key=lambda p: -p["rate"]):
            L.append(
                f"| {method} | {p['rate']:g} | {p['realized_rate']:.3f} | {p['bpp16']:.3f} | "
                f"{p.get('bpp16_file', float('nan')):.3f} | {p['psnr']:.2f} | {p.get('ssim', float('nan')):.4f} |"
            )
    fixed = c["fixed (base)"][0]
    learned = [(k, label) for k, label in (("lpips", "LPIPS"), ("fvd", "FVD")) if k in fixed]
    L += [
        "",
        "## At BPP16 0.81 and 0.56 (the paper's Table 1 operating points)",
        "",
        "| method | BPP16 | PSNR | SSIM | VMAF |" + "".join(f" {label} |" for _, label in learned),
        "|---|---|---|---|---|" + "---|" * len(learned),
    ]

    def table_row(method, p):
        return (
            f"| {method} | {p['bpp16']:.2f} | {p['psnr']:.2f} | {p['ssim']:.4f} | {p.get('vmaf', float('nan')):.2f} |"
            + "".join(f" {p.get(k, float('nan')):.4g} |" for k, _ in learned)
        )

    L.append(table_row("fixed (base)", fixed))
    for rate in TABLE_RATES:
        for method in ("InfoTok-Flex global_elbo", "InfoTok-Flex static", "ElasticTok-style (tail drop)"):
            L.append(table_row(method, _at(c[method], rate)))
    if len(learned) < 2:
        L += [
            "",
            "LPIPS and FVD need network weights this machine does not have (nothing is downloaded); "
            "`make bench LPIPS_WEIGHTS=alexnet-owt-7be5be79.pth FVD_WEIGHTS=i3d_torchscript.pt` "
            f"adds the missing columns (FVD over only {proto['clips']} clips is a rough figure).",
        ]
    L += ["", "## BD-rate (negative = fewer bits for the same PSNR)", ""]
    elbo = c["InfoTok-Flex global_elbo"]
    for ref in ("InfoTok-Flex static", "ElasticTok-style (tail drop)"):
        try:
            value = bd_rate(
                [p["bpp16"] for p in c[ref]],
                [p["psnr"] for p in c[ref]],
                [p["bpp16"] for p in elbo],
                [p["psnr"] for p in elbo],
            )
            L.append(f"- InfoTok-Flex global_elbo vs {ref}: **{value:+.1f}%**")
        except ValueError as exc:
            L.append(f"- InfoTok-Flex global_elbo vs {ref}: not defined ({exc})")
    L += [
        "",
        "## Selection ablation at equal rate (same InfoTok-Flex model, static rate)",
        "",
        "| rate | error (InfoTok) | order (tail drop) | random | temporal (latent change, training-free) |",
        "|---|---|---|---|---|",
    ]
    for rate in TABLE_RATES:
        L.append(
            f"| {rate:g} | {_at(c['InfoTok-Flex static'], rate)['psnr']:.2f} | "
            f"{_at(c['InfoTok-Flex static, order selection'], rate)['psnr']:.2f} | "
            f"{_at(c['InfoTok-Flex static, random selection'], rate)['psnr']:.2f} | "
            f"{_at(c['InfoTok-Flex static, temporal selection'], rate)['psnr']:.2f} |"
        )
    L += still_section(result)
    L += rate_control_sections(result)
    L += [
        "",
        "## Router: rates per clip at average rate 0.5 (global_elbo) and its cost",
        "",
        f"Evaluation protocol ({proto['size']}x{proto['size']} centre crop), with the rate the per-clip oracle gives "
        "each clip at the same average (the exhaustive search over k/16 that maximises mean PSNR), and the same "
        f"router on whole frames (short side {proto['size']}, no crop: borders such as a pillarbox stay in view), "
        "with the mean PSNR there at `static` 0.5 and at the router's rate, and the oracle's rate there. "
        "Motion: mean absolute change between consecutive frames of the whole frame, in uint8 levels.",
        "",
        "| video | clip score | global_elbo rate | oracle rate | whole frame | motion | score | rate "
        "| oracle rate | PSNR static 0.5 | PSNR global_elbo |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    half = [r for r in result["per_video"] if r["method"] == "InfoTok-Flex global_elbo" and r["avg_rate"] == 0.5]
    oracle_half = _at(c["oracle (per-clip search)"], 0.5)["clip_rates"]
    for r in sorted(half, key=lambda r: r["clip_rate"]):
        w = result["whole_frame_router"][r["video"]]
        L.append(
            f"| {r['video']} | {r['score']:.4f} | {r['clip_rate']:.3f} | {oracle_half[r['video']]:.3f} | "
            f"{w['size'][1]}x{w['size'][0]} | {w['motion']:.1f} | {w['score']:.4f} | {w['rate']:.3f} | "
            f"{w['oracle_rate']:.3f} | {w['psnr_static']:.2f} | {w['psnr_global_elbo']:.2f} |"
        )
    whole = result["whole_frame_router"].values()
    L += [
        "",
        f"Whole frames, mean over the clips: `static` 0.5 {np.mean([w['psnr_static'] for w in whole]):.2f} dB, "
        f"`global_elbo` 0.5 {np.mean([w['psnr_global_elbo'] for w in whole]):.2f} dB (mean rate "
        f"{np.mean([w['rate'] for w in whole]):.3f}), oracle {result['whole_frame_oracle_psnr']:.2f} dB; "
        "rank agreement (Spearman) of the router's and the oracle's whole-frame rates: "
        f"{spearman([w['rate'] for w in whole], [w['oracle_rate'] for w in whole]):+.2f}.",
    ]
    agreement = spearman([r["clip_rate"] for r in half], [oracle_half[r["video"]] for r in half])
    L += [
        "",
        f"Rank agreement (Spearman) between the router's and the oracle's per-clip rates: {agreement:+.2f} "
        "(+1: the router orders the clips as the oracle does).",
    ]
    L += content_section(result)
    search = c["ElasticTok-style binary search"]
    L += [
        "",
        f"- InfoTok router: 1 extra decoder pass per window (NFE 2 with the encoder); "
        f"encode + route = {result['router_seconds_per_clip']:.2f} s "
        f"per {proto['frames']}x{proto['size']}x{proto['size']} clip.",
        f"- ElasticTok-style binary search over 16 prefix lengths: {result['search_passes_mean']:.1f} decoder passes "
        f"per clip on average (NFE {1 + result['search_passes_mean'] + 1:.1f} with encoder and final decode); "
        f"{np.mean([p['seconds_per_clip'] for p in search]):.2f} s of search per clip.",
        "",
        "| search MSE threshold | realized rate | PSNR |",
        "|---|---|---|",
    ]
    for p in search:
        L.append(f"| {p['threshold']} | {p['realized_rate']:.3f} | {p['psnr']:.2f} |")
    L += ["", "## The paper's claims side by side with ours", "", "| claim | paper | ours |", "|---|---|---|"]
    need = _rate_for_psnr(elbo, fixed["psnr"])
    saved = (
        f"{(1 - need) * 100:.0f}% of tokens (global_elbo reaches the fixed-rate PSNR at rate {need:.2f})"
        if need
        else "none: global_elbo does not reach the fixed-rate base's PSNR at any rate below 1"
    )
    L.append(f"| tokens saved at no quality loss (vs fixed rate) | ~20% | {saved} |")
    for rate, bpp in zip(TABLE_RATES, ("0.81", "0.56")):
        gain = _at(elbo, rate)["psnr"] - _at(c["ElasticTok-style (tail drop)"], rate)["psnr"]
        L.append(f"| PSNR gain over tail dropping at BPP16 {bpp} | 1.6-2.0 dB | {gain:+.2f} dB |")
    gaps = [o["psnr"] - o["global_elbo_psnr"] for o in c["oracle (per-clip search)"] if o["rate"] in TABLE_RATES]
    L.append(f"| router vs oracle gap (0.81 / 0.56) | <= 0.1 dB | {gaps[0]:.2f} / {gaps[1]:.2f} dB |")
    L.append(f"| overhead NFE, router vs search | 1 vs 11 | 1 vs {result['search_passes_mean'] + 1:.1f} |")
    static_gain = [_at(elbo, r)["psnr"] - _at(c["InfoTok-Flex static"], r)["psnr"] for r in TABLE_RATES]
    L.append(
        f"| global_elbo vs static at 0.81 / 0.56 | (InfoTok vs InfoTok-static not tabulated) | "
        f"{static_gain[0]:+.2f} / {static_gain[1]:+.2f} dB |"
    )
    res = result.get("resources")
    if res:
        window = f"{proto['frames']}x{proto['size']}x{proto['size']}"
        L += [
            "",
            "## Throughput and memory",
            "",
            f"Model only, one {window} window, batch 1, fp32, CPU: encode (`static` 0.5, the checkpoint's default "
            "selection and fill) "
            f"{res['model']['encode_frames_per_s']:.1f} frames/s, decode "
            f"{res['model']['decode_frames_per_s']:.1f} frames/s.",
            "",
            f"CLI on `{res['video']}` (`infotok encode --size {proto['size']} --rate 0.5`, then `infotok decode`, "
            f"and `infotok viz` with the same settings), each in a fresh process; the peak resident memory is "
            "that process's own high-water mark (VmHWM):",
            "",
            "| frames | encode s | encode frames/s | encode peak MiB | decode s | decode peak MiB | viz s "
            "| viz peak MiB | .itok bytes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n, r in res["cli"].items():
            L.append(
                f"| {n} | {r['encode']['seconds']:.1f} | {r['encode']['frames_per_s']:.1f} | "
                f"{r['encode']['peak_rss_mib']:.0f} | {r['decode']['seconds']:.1f} | "
                f"{r['decode']['peak_rss_mib']:.0f} | {r['viz']['seconds']:.1f} | "
                f"{r['viz']['peak_rss_mib']:.0f} | {r['file_bytes']} |"
            )
        scaling = res.get("scaling")
        if scaling:
            L += [
                "",
                f"`model.encode` of one {proto['frames']}-frame window, as `infotok encode` runs by default "
                f"({scaling['default']}: strategy/selection/fill) and with `global_elbo` (the router's decoder pass): "
                + "; ".join(
                    f"{k} {v['seconds']:.1f} s ({v['us_per_pixel']:.2f} us per pixel)"
                    for k, v in scaling.items()
                    if k != "default"
                )
                + ".",
            ]
            for label in ("", ", global_elbo"):
                small, large = scaling["455x256" + label], scaling["1280x720" + label]
                L[-1] += (
                    f" Seconds per pixel at 1280x720 / at 455x256{label or ' (default)'}: "
                    f"{large['us_per_pixel'] / small['us_per_pixel']:.2f}."
                )
            whole = scaling.get("455x256 whole-frame attention, global_elbo")
            if whole:
                L[-1] += (
                    f" At 455x256 (global_elbo) the same weights with whole-frame attention take "
                    f"{whole['seconds'] / scaling['455x256, global_elbo']['seconds']:.2f}x the time of tiled attention."
                )
        if res.get("cli_720p"):
            e = res["cli_720p"]
            L += [
                "",
                f"`infotok encode --size 720 --rate 0.5` of {e['frames']} frames of `{res['video']}`, VmHWM of a fresh "
                f"process: {e['default']['seconds']:.1f} s, peak {e['default']['peak_rss_mib']:.0f} MiB with the "
                f"checkpoint's defaults; {e['global_elbo']['seconds']:.1f} s, peak "
                f"{e['global_elbo']['peak_rss_mib']:.0f} MiB with `--strategy global_elbo`.",
            ]
        rel = res.get("release")
        if rel:
            L += [
                "",
                f"The InfoTok release's architecture ({rel['which']} size: Cosmos DV4x8x8 base + transformer "
                f"stacks, {rel['parameters']:,} parameters, random weights), one {window} window, fp32, each "
                "step in a fresh process, model construction included (`make bench`, `release_speed`):",
                "",
                "| step | seconds | peak MiB |",
                "|---|---|---|",
                f"| encode (with the router's decoder pass, rate 0.5) | {rel['encode']['seconds']:.1f} | "
                f"{rel['encode']['peak_rss_mib']:.0f} |",
                f"| decode | {rel['decode']['seconds']:.1f} | {rel['decode']['peak_rss_mib']:.0f} |",
            ]
        batches = res.get("batches")
        if batches:
            L += [
                "",
                f"`model.encode` on one process, {window} windows, `static` 0.5 with the checkpoint's default "
                "selection and fill: " + ", ".join(f"batch {b} {fps:.1f} frames/s" for b, fps in batches.items()) + ".",
            ]
        dataset = res.get("dataset")
        if dataset:
            L += [
                "",
                f"`infotok encode-dataset` (Ray Data, local) over the {proto['clips']} clips (every frame, short "
                f"side at most {proto['size']}, rate 0.5), `measure_throughput`: frames/s and windows/s over the "
                "whole pipeline and after the first model load; each model worker's peak memory; Parquet shard "
                "bytes per window against `.itok`:",
                "",
                "| model workers | frames | frames/s | windows/s | frames/s after load | worker peak MiB "
                "| shard bytes / window | .itok bytes / window |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for w, d in dataset.items():
                peaks = list(d["peak_rss_mib"]["tokenizer"].values())
                L.append(
                    f"| {w} | {d['frames']} | {d['frames_per_s']:.1f} | {d['windows_per_s']:.2f} | "
                    f"{d['frames_per_s_after_load'] or float('nan'):.1f} | "
                    f"{max(peaks) if peaks else float('nan'):.0f} | {d['shard_bytes_per_window']:.0f} | "
                    f"{d['itok_bytes_per_window']:.0f} |"
                )
        refusal = res.get("token_refusal_s")
        if refusal:
            L += [
                "",
                "Refusing a `.itok` file with a forged length field: "
                + "; ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in refusal.items())
                + ".",
            ]
    L += ["", "Raw numbers: `bench_out/bench.json` and `bench_out/per_video.csv` (regenerated by `make bench`).", ""]
    return "\n".join(L)
