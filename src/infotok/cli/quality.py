"""`infotok reconstruct`, `viz`, `eval`, `calibrate` and `demo`: tokenize and decode again, to look at
and measure what the tokens keep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import (
    DEFAULT_SIZE,
    Progress,
    UsageError,
    _counts,
    _expected_windows,
    _inputs,
    _load_1d,
    _load_model,
    _one_d_options,
    _outputs,
    _positive,
    _print_summary,
    _rate_control,
    _rates,
    _run_many,
    _specs,
    asked_rate,
    plural,
)
from .options import (
    add_guidance_option,
    add_key_density_option,
    add_layout_options,
    add_model_options,
    add_preset_option,
    add_rate_control_options,
    add_tokenize_options,
)


def cmd_reconstruct(args) -> int:
    from ..pipeline import reconstruct_file

    if args.layout == "1d":
        return cmd_reconstruct_1d(args)
    if args.steps or args.guidance != 1:
        raise UsageError("--steps and --guidance pick the 1D layout's decoder: pass --layout 1d")
    spec, windowing = _specs(args)
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    model = _load_model(args)
    specs = _rate_control(args, inputs, model, spec, windowing)

    def job(src: Path, dst: Path) -> None:
        expected = _expected_windows(src, args)
        bar = Progress(2 * expected if expected else None, f"reconstruct {src.name} (encode, then decode)")
        try:
            result, psnr = reconstruct_file(
                model,
                src,
                dst,
                args.lossless,
                args.overwrite,
                lambda w: bar.update(),
                specs[src],
                windowing,
            )
        finally:
            bar.close()
        _print_summary(src, dst, result, args, psnr)

    return _run_many(inputs, outputs, job, "reconstruct")


def cmd_reconstruct_1d(args) -> int:
    from .. import layout1d

    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    model = _load_1d(args)
    _, windowing = _specs(args)

    def job(src: Path, dst: Path) -> None:
        from ..registers import guided

        out, psnr = layout1d.reconstruct_file(
            model,
            src,
            dst,
            args.steps,
            args.seed,
            args.lossless,
            guidance=args.guidance,
            **_one_d_options(args, windowing),
        )
        ledger = out.ledger()
        how = f"flow decoder, {args.steps} steps{guided(args.guidance)}" if args.steps else "regression decoder"
        print(
            f"{src} -> {dst}: {out.header.num_frames} frames {out.header.width}x{out.header.height}, "
            f"{plural(len(out.windows), 'window')}, {ledger.kept} tokens (1D layout, {how}; "
            f"{ledger.tokens_per_second:.0f} tokens per second of video), PSNR {psnr:.2f} dB"
        )

    return _run_many(inputs, outputs, job, "reconstruct")


VIZ_PREFIXES = (16, 64, 256)  # `viz --layout 1d`: the prefixes shown besides the whole sequence


def cmd_viz(args) -> int:
    from ..viz import visualize_file

    spec, windowing = _specs(args)
    src = _inputs([args.input])[0]
    dst = _outputs([src], args.output, ".mp4", args.overwrite)[0]
    png = Path(args.png) if args.png else dst.with_suffix(".png")
    if args.layout == "1d":
        return _viz_1d(args, src, dst, png, windowing)
    model = _load_model(args)
    expected = _expected_windows(src, args)
    bar = Progress(expected, f"viz {src.name}")
    try:
        ledger = visualize_file(model, src, dst, png, lambda w: bar.update(), spec, windowing)
    finally:
        bar.close()
    print(
        f"{src} -> {dst}, {png}: kept {ledger.kept}/{ledger.total} tokens (rate {ledger.realized_rate:.3f}, "
        f"{asked_rate(args, model.choices(args.strategy, args.selection, args.fill)[0])})"
    )
    return 0


def _viz_1d(args, src: Path, dst: Path, png: Path, windowing) -> int:
    """`viz --layout 1d`: the source beside its 1D decodes from ever longer prefixes of the same tokens."""
    import numpy as np

    from ..layout1d import source_stream
    from ..viz import prefix_panels

    model = _load_1d(args)
    w = windowing
    frames, height, width, source = source_stream(model, src, w.size, w.max_size, w.start, w.max_frames)
    frames = np.stack(list(frames))
    prefixes = (*VIZ_PREFIXES, model.tokens_per_window(height, width))
    tokens, psnrs = prefix_panels(model, frames, source["fps"], dst, png, prefixes)
    shown = ", ".join(f"{k} tokens {v:.2f} dB" for k, v in psnrs.items())
    print(f"{src} -> {dst}, {png}: {len(frames)} frames {width}x{height}, {len(tokens.windows)} windows; {shown}")
    return 0


def cmd_eval(args) -> int:
    from ..eval import evaluate, write_report
    from ..extras import require
    from ..perceptual import Perceptual

    require("torchmetrics", "`infotok eval` (SSIM)")  # before any work, not after the first clip
    if args.vmaf:
        require("imageio_ffmpeg", "`infotok eval --vmaf`")
    if args.layout == "1d":
        return cmd_eval_1d(args)
    if args.tokens or args.steps or args.guidance != 1:
        raise UsageError("--tokens, --steps and --guidance evaluate the 1D layout: pass --layout 1d")
    inputs = _inputs(args.inputs)
    model = _load_model(args)
    perceptual = Perceptual.from_paths(args.lpips_weights, args.fvd_weights, model.device)
    strategies = args.strategy.split(",") if args.strategy else None
    selections = args.selection.split(",") if args.selection else None
    bar = Progress(len(inputs) + len(strategies or [0]) * len(selections or [0]) * len(args.rates), "eval", unit="step")

    def progress(message: str) -> None:
        bar.update()
        if bar.bar is None:
            print(message, file=sys.stderr)

    try:
        report = evaluate(
            model,
            inputs,
            args.rates,
            strategies,
            selections,
            args.size,
            args.frames,
            with_vmaf=args.vmaf,
            seed=args.seed,
            progress=progress,
            perceptual=perceptual,
            crop=not args.whole_frame,
            fill=args.fill,
            budget=args.budget,
            key_density=args.key_density,
        )
    finally:
        bar.close()
    if args.json:
        write_report(report, args.json)
    for r in report["results"]:
        line = (
            f"{r['strategy']:>11} {r['selection']:>8} {r['fill']:>4} rate {r['rate']:.3f}: "
            f"realized {r['realized_rate']:.3f}, "
            f"BPP16 {r['bpp16']:.3f} (file {r['bpp16_file']:.3f}), PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}"
        )
        for key, label in (("vmaf", "VMAF"), ("lpips", "LPIPS"), ("fvd", "FVD")):
            if key in r:
                line += f", {label} {r[key]:.4g}"
        print(line + f", {r['videos']} videos")
    return 0


def cmd_calibrate(args) -> int:
    from ..checkpoint import default_checkpoint, save_calibrated
    from ..eval import calibrate

    inputs = _inputs(args.inputs)
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"{args.output} exists; pass --overwrite to replace it")
    model = _load_model(args)
    calibration = calibrate(
        model,
        inputs,
        args.size,
        args.frames,
        progress=lambda m: print(m, file=sys.stderr),
        key_density=args.key_density,
    )
    if args.json:
        print(
            json.dumps(
                {
                    k: calibration[k]
                    for k in (
                        "score_mean",
                        "previous",
                        "videos",
                        "rd_thresholds",
                        "rd_continuing_thresholds",
                        "continuing_windows",
                        "key_density",
                        "target_margins",
                    )  # fmt: skip
                    if k in calibration
                }
            )
        )
    else:
        _print_calibration(calibration, args)
    if args.output:
        if args.default_fill:
            model.default_fill = args.default_fill
        out = save_calibrated(model, args.checkpoint or default_checkpoint(), args.output, calibration, args.overwrite)
        print(
            f"wrote {out}: it decodes the source checkpoint's tokens too (the same decoding weights)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _print_calibration(calibration: dict, args) -> None:
    thresholds = ", ".join(f"{r:g}: {t:.4g}" for r, t in calibration["rd_thresholds"])
    print(
        f"calibrated on {calibration['videos']} clips (first {args.frames} frames, {args.size}x{args.size}):\n"
        f"  global_elbo score mean {calibration['score_mean']:.5f} (was {calibration['previous']:.5f})\n"
        f"  rd drift thresholds by rate {thresholds}"
        + (f" (sparse key frames, density {calibration['key_density']:g})" if calibration["key_density"] != 1 else "")
    )
    if "rd_continuing_thresholds" in calibration:
        continuing = ", ".join(f"{r:g}: {t:.4g}" for r, t in calibration["rd_continuing_thresholds"])
        print(f"  for chains of windows ({calibration['continuing_windows']} continuing windows) {continuing}")
    if "target_margins" in calibration:
        margins = calibration["target_margins"]
        print(f"  --target-psnr margins {min(margins):.2f} to {max(margins):.2f} dB over {len(margins)} rates")


def cmd_demo(args) -> int:
    from ..demo import run_demo
    from ..layout1d import InfoTok1D

    model = _load_model(args)
    one_d = None if args.checkpoint or args.height % 64 or args.width % 64 else InfoTok1D.from_pretrained()

    def show(r: dict) -> None:
        if "1d" in r:
            scores = ", ".join(f"{k} tokens {v:.2f} dB" for k, v in r["1d"]["psnr_by_prefix"].items())
            print(f"1D layout ({r['1d']['tokens_per_window']} tokens a window): {scores}")
        else:
            print(
                f"rate {r['rate']:g}: PSNR {r['psnr']:.2f} dB, kept {r['tokens_kept']}/"
                f"{r['tokens_total']} tokens, {r['file_bytes']} bytes"
            )

    report = run_demo(
        model, args.output, args.rates, args.frames, args.height, args.width, args.seed, on_rate=show, one_d=one_d
    )
    extra = ", prefixes_1d.mp4/.png" if one_d else ""
    print(
        f"wrote {args.output}/ (sample.mp4, reconstruction_*.mp4, viz_*.mp4, viz_*.png{extra}, report.json) "
        f"with {report['checkpoint']}"
    )
    return 0


def add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="video(s) -> tokens -> video, with PSNR against the input")
    p.add_argument("inputs", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 for one input, a folder for several")
    p.add_argument("--lossless", action="store_true", help="store the reconstructed frames exactly (large file)")
    add_tokenize_options(p)
    add_rate_control_options(p)
    add_model_options(p)
    add_layout_options(p)
    one_d = p.add_argument_group("1D layout")
    one_d.add_argument(
        "--steps", type=int, default=0, help="1d: 0, the regression decoder (default); N: the flow decoder in "
        "N steps, its noise seeded by --seed",
    )  # fmt: skip
    add_guidance_option(one_d)
    p.set_defaults(func=cmd_reconstruct)


def add_viz(sub) -> None:
    p = sub.add_parser("viz", help="side-by-side video + PNG strip of where the tokens went")
    p.add_argument("input", help="a video file")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4: original | reconstruction | keep-mask")
    p.add_argument("--png", help="PNG strip path (default: OUT.png)")
    p.add_argument(
        "--layout",
        choices=["grid", "1d"],
        default="grid",
        help="grid: original | reconstruction | keep-mask (default); 1d: original | the 1D checkpoint's decodes "
        f"from each window's first {', '.join(map(str, VIZ_PREFIXES))} tokens and all of them (the grid's rate "
        "options do not apply; give --max-frames for a long video: the columns are held in memory)",
    )
    add_tokenize_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_viz)


def add_eval(sub) -> None:
    from ..names import FILLS

    p = sub.add_parser("eval", help="rate-distortion evaluation (TokenBench PSNR/SSIM, optional VMAF)")
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument(
        "--rates",
        type=_rates,
        default=[0.5],
        help="comma-separated average rates, e.g. 1,0.75,0.5,0.25 (default 0.5, as encode's --rate)",
    )
    add_preset_option(p)
    p.add_argument(
        "--strategy", help="comma-separated: global_elbo, static, uniform, rd (default: the checkpoint's, as in encode)"
    )
    p.add_argument(
        "--selection",
        help="comma-separated: error, order, random, temporal, value, drift (default: the checkpoint's, as in encode)",
    )
    p.add_argument(
        "--fill",
        choices=FILLS,
        help="how dropped tokens decode (default: the checkpoint's, as in encode; mask is the paper's)",
    )
    p.add_argument(
        "--budget",
        choices=["calibrated", "run"],
        default="calibrated",
        help="rd: each clip at the checkpoint's calibrated threshold or slope, as encode does (default), "
        "or one exact budget shared by the clips (run)",
    )
    add_key_density_option(p)
    p.add_argument(
        "--size",
        type=_positive,
        default=DEFAULT_SIZE,
        help=f"short side each clip is resized to, then centre-cropped to SIZE x SIZE (default {DEFAULT_SIZE})",
    )
    p.add_argument("--frames", type=_positive, default=33, help="frames of each clip, from its start (default 33)")
    p.add_argument(
        "--whole-frame",
        action="store_true",
        help="keep whole frames (short side --size) instead of the protocol's centre crop",
    )
    p.add_argument("--vmaf", action="store_true", help="also compute VMAF (FFmpeg libvmaf)")
    p.add_argument(
        "--lpips-weights",
        metavar="FILE",
        help="also compute LPIPS with this torchvision AlexNet/VGG16 state dict (never downloaded)",
    )
    p.add_argument(
        "--fvd-weights",
        metavar="FILE",
        help="also compute FVD with this TorchScript feature network, e.g. i3d_torchscript.pt",
    )
    p.add_argument("--json", help="write the report here (and a per-video CSV beside it)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the uniform strategy and random selection; 1d: of the flow decoder"
    )
    add_model_options(p, outputs=False)
    layout = p.add_argument_group("1D layout (docs/LAYOUT_1D.md)")
    layout.add_argument("--layout", choices=["grid", "1d"], default="grid", help="1d: evaluate the 1D checkpoint")
    layout.add_argument(
        "--tokens", type=_counts, help="1d: comma-separated tokens per window to decode from (default 16,64,256,1024)"
    )
    layout.add_argument("--steps", type=int, default=0, help="1d: 0, the regression decoder; N, the flow in N steps")
    add_guidance_option(layout)
    p.set_defaults(func=cmd_eval)


def cmd_eval_1d(args) -> int:
    from ..eval import evaluate_1d, write_report

    if args.lpips_weights or args.fvd_weights:
        raise UsageError("--lpips-weights and --fvd-weights evaluate grid checkpoints (the 1D one: PSNR, SSIM, VMAF)")
    inputs = _inputs(args.inputs)
    model = _load_1d(args)
    counts = args.tokens or [16, 64, 256, 1024]
    bar = Progress(len(inputs), "eval (1D layout)", unit="video")
    try:
        report = evaluate_1d(
            model, inputs, counts, args.size, args.frames, not args.whole_frame, args.steps, args.seed, args.vmaf,
            lambda message: bar.update(), args.guidance,
        )  # fmt: skip
    finally:
        bar.close()
    if args.json:
        write_report(report, args.json)
    for r in report["results"]:
        vmaf = f", VMAF {r['vmaf']:.4g}" if "vmaf" in r else ""
        print(
            f"1D {report['decoder']:>10} {r['tokens']:>5} tokens a window (rate {r['rate']:.4f} of the grid's): "
            f"PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}{vmaf}, {r['videos']} videos"
        )
    return 0


def add_calibrate(sub) -> None:
    from ..names import FILLS

    p = sub.add_parser(
        "calibrate",
        help="measure what rate control needs: global_elbo's mean clip score, rd's "
        "thresholds and slopes, --target-psnr's margins",
    )
    p.add_argument("inputs", nargs="+", help="video files or folders (clips like the ones you will tokenize)")
    p.add_argument("-o", "--output", help="write a checkpoint copy with the new calibration here")
    p.add_argument(
        "--size",
        type=_positive,
        default=DEFAULT_SIZE,
        help=f"short side, then centre crop, as in eval (default {DEFAULT_SIZE})",
    )
    p.add_argument("--frames", type=_positive, default=33, help="frames of each clip (default 33)")
    p.add_argument(
        "--default-fill",
        choices=FILLS,
        help="the fill the written copy tokenizes with by default (default: the source's)",
    )
    add_key_density_option(p, calibrating=True)
    p.add_argument("--json", action="store_true", help="print the calibration as one JSON object instead of a summary")
    add_model_options(p)
    p.set_defaults(func=cmd_calibrate)


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="tokenize the built-in sample at two rates; writes demo_out/")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--rates", type=_rates, default=[0.5, 0.25], help="comma-separated rates (default 0.5,0.25)")
    p.add_argument("--frames", type=_positive, default=33, help="frames of the sample (default 33)")
    p.add_argument("--height", type=_positive, default=128, help="sample height (default 128)")
    p.add_argument("--width", type=_positive, default=192, help="sample width (default 192)")
    p.add_argument("--seed", type=int, default=0, help="which procedural sample (default 0)")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)
