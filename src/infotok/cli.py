"""The `infotok` command line: argument parsing, progress, messages and exit codes only."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A bad argument: reported in one line with exit code 2."""


def _rate(text: str) -> float:
    from .router import check_rate
    try:
        return check_rate(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rates(text: str) -> list[float]:
    return [_rate(t) for t in text.split(",") if t.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


# ------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:

    from .train import Trainer, TrainConfig

    if args.resume and Path(args.out, "train_state.json").exists():
        saved = json.loads(Path(args.out, "train_state.json").read_text())["config"]
        cfg = TrainConfig(**saved)
        cfg.steps = args.steps or cfg.steps
    else:
        if Path(args.out, "train_state.json").exists() and not args.overwrite:
            raise UsageError(f"{args.out} already holds a run; pass --resume to continue it or --overwrite to restart")
        cfg = TrainConfig(kind=args.kind, data=args.data, out=args.out, init=args.init, seed=args.seed,
                          name=args.name or ("infotok-base" if args.kind == "base" else "infotok-flex"))
        for key in ("steps", "batch", "frames", "crop", "lr", "warmup", "ema", "checkpoint_every",
                    "workers", "synthetic_fraction", "border_fraction", "long_side", "long_fraction", "mixed_precision",
                    "log_every", "cache"):
            value = getattr(args, key)
            if value is not None:
                setattr(cfg, key, value)
        cfg.selection, cfg.rate_sampling = args.train_selection, args.rate_sampling
        if args.base_config:
            cfg.base = json.loads(args.base_config)
        if args.compressor_config:
            cfg.compressor = json.loads(args.compressor_config)
    if cfg.frames < 1 or (cfg.frames - 1) % 4:
        raise UsageError(f"--frames must be 1 + 4k (e.g. 17 or 33), got {cfg.frames}")
    if cfg.crop % 8:
        raise UsageError(f"--crop must be a multiple of 8, got {cfg.crop}")
    for name in ("synthetic_fraction", "border_fraction", "long_fraction"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.long_fraction and (cfg.long_side % 8 or cfg.long_side < cfg.crop):
        raise UsageError(f"--long-side must be a multiple of 8 and at least --crop ({cfg.crop}), got {cfg.long_side}")
    trainer = Trainer(cfg, progress=not args.quiet)
    if args.resume:
        if trainer.resume():
            print(f"resumed {cfg.out} at step {trainer.step}", file=sys.stderr)
        else:
            print(f"no saved state in {cfg.out}; starting fresh", file=sys.stderr)
    trainer.run()
    print(json.dumps({"out": str(cfg.out), "step": trainer.step, "model": str(Path(cfg.out) / "model")}))
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a base tokenizer or fine-tune InfoTok-Flex (resumable)",
                       description="Train through accelerate (`accelerate launch -m infotok train ...` for "
                                   "several GPUs). Writes <out>/model (EMA weights), train_state.* and log.csv.")
    p.add_argument("kind", choices=["base", "infotok"], help="base: fixed-rate tokenizer; infotok: Flex fine-tuning")
    p.add_argument("--data", nargs="*", default=[], help="video files or folders (default: synthetic clips only)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--init", help="checkpoint folder to start from (required for `infotok`)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="restart a run that already exists in --out")
    p.add_argument("--steps", type=_positive)
    p.add_argument("--batch", type=_positive)
    p.add_argument("--frames", type=_positive, help="clip length, 1 + 4k (17 or 33)")
    p.add_argument("--crop", type=_positive, help="square crop size (multiple of 8)")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--ema", type=float)
    p.add_argument("--checkpoint-every", type=_positive)
    p.add_argument("--log-every", type=_positive)
    p.add_argument("--workers", type=int, help="data loader processes")
    p.add_argument("--synthetic-fraction", type=float)
    p.add_argument("--border-fraction", type=float, help="share of clips given static letterbox/pillarbox bars")
    p.add_argument("--long-side", type=_positive, help="long side of the elongated crops (multiple of 8, e.g. 456)")
    p.add_argument("--long-fraction", type=float,
                   help="share of batches cropped to (crop^2 / long side) x long side, landscape or portrait")
    p.add_argument("--cache", help="folder for small re-encoded copies of the training videos (default runs/cache)")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    p.add_argument("--base-config", help="JSON of BaseConfig fields, e.g. '{\"dec_lo\": 192}'")
    p.add_argument("--compressor-config", help="JSON of CompressorConfig fields")
    p.add_argument("--train-selection", choices=["error", "order", "random"], default="error",
                   help="infotok: which tokens survive in training (order = ElasticTok-style tail dropping)")
    p.add_argument("--rate-sampling", choices=["flex", "uniform", "elbo"], default="flex",
                   help="infotok: rates per clip from {1, .75, .5, .25} (flex), uniform on [1/16, 1], or "
                        "global_elbo's rate for an average drawn from {1, .75, .5, .25} (elbo)")
    p.add_argument("--name", help="model name stored in the checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------------------- shared helpers
def _load_model(args):
    import torch

    from .model import InfoTok

    device = getattr(args, "device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    return InfoTok.from_pretrained(args.checkpoint, device=device)


def _check_window(args) -> None:
    if args.window < 5:
        raise UsageError(f"--window must be at least 5 frames (one latent step of 4 frames after frame 0), got {args.window}")
    if not 0 <= args.overlap < args.window:
        raise UsageError(f"--overlap must be at least 0 and smaller than --window ({args.window}), got {args.overlap}")


def _outputs(inputs: list[Path], out: str, suffix: str, overwrite: bool) -> list[Path]:
    """One output per input: `out` is the file for one input, the folder for several."""
    out_path = Path(out)
    many = len(inputs) > 1 or out_path.is_dir() or out.endswith(("/", "\\"))
    if many:
        out_path.mkdir(parents=True, exist_ok=True)
        targets = [out_path / (p.stem + suffix) for p in inputs]
        stems = [t.name for t in targets]
        if len(set(stems)) != len(stems):
            raise UsageError("several inputs share a file name; their outputs would collide in " + str(out_path))
    else:
        targets = [out_path]
    for src, dst in zip(inputs, targets):
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise UsageError(f"{dst}: the output would overwrite its own input")
        if dst.exists() and not overwrite:
            raise UsageError(f"{dst} exists; pass --overwrite to replace it")
    return targets


def _inputs(items: list[str]) -> list[Path]:
    from .video import list_videos

    paths = list_videos(items)
    if not paths:
        raise UsageError(f"no inputs found in {' '.join(items)}")
    return paths


def _run_many(inputs: list[Path], outputs: list[Path], job, label: str) -> int:
    """Run job(input, output) for each; a bad file is reported and skipped, the rest go on."""
    from .tokens import TokenFormatError
    from .video import VideoError

    failures = []
    for src, dst in zip(inputs, outputs):
        try:
            job(src, dst)
        except (VideoError, TokenFormatError, ValueError, OSError) as exc:
            detail = str(exc)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                detail = f"{exc.filename or dst}: cannot read or write ({exc.strerror or exc})"
            message = detail if str(src) in detail else f"{src}: {detail}"
            if len(inputs) == 1:
                raise UsageError(message) from None
            print(f"infotok: warning: skipped {message}", file=sys.stderr)
            failures.append(message)
    if failures:
        print(f"infotok: {label}: {len(failures)} of {len(inputs)} inputs failed:", file=sys.stderr)
        for message in failures:
            print(f"  {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="win", dynamic_ncols=True, leave=False, disable=None)


def _estimated_windows(path: Path, window: int, overlap: int) -> int | None:
    from .video import probe, window_spans

    try:
        n = probe(path).num_frames
    except Exception:
        return None
    return len(window_spans(n, window, overlap)) if n else None


def _tokenize_to_file(model, src: Path, dst: Path, args) -> dict:
    """Stream one video into a .itok file; returns the summary printed by encode."""
    import os

    from .tokens import TokenWriter

    bar = _progress(_estimated_windows(src, args.window, args.overlap), f"encode {src.name}")
    writer, windows, nfe = None, [], 0
    try:
        for header, w, n in model.iter_tokenize(src, args.rate, args.strategy, args.selection, args.window,
                                                args.overlap, args.size, args.seed):
            if writer is None:
                writer = TokenWriter(dst, header, overwrite=args.overwrite)
            writer.write(w)
            windows.append((w.start, w.end, w.rate, w.kept, w.num_tokens))
            nfe += n
            bar.update(1)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    writer.close()  # its header is the object iter_tokenize finalised after the last window
    kept, total_tokens = sum(w[3] for w in windows), sum(w[4] for w in windows)
    pixels = header.num_frames * header.width * header.height
    summary = {"input": str(src), "output": str(dst), "windows": len(windows), "frames": header.num_frames,
               "size": f"{header.width}x{header.height}", "tokens_kept": kept, "tokens_total": total_tokens,
               "realized_rate": kept / total_tokens, "nominal_bpp16": kept / total_tokens + 1 / 16,
               "file_bytes": os.path.getsize(dst), "file_bpp16": os.path.getsize(dst) * 8 * 16 / pixels,
               "window_rates": [round(w[2], 4) for w in windows], "nfe": nfe}
    return summary


def _print_summary(summary: dict) -> None:
    rates = summary["window_rates"]
    shown = ", ".join(f"{r:.3f}" for r in rates[:8]) + (" ..." if len(rates) > 8 else "")
    line = (f"{summary['input']} -> {summary['output']}: {summary['frames']} frames {summary['size']}, "
            f"{summary['windows']} windows, kept {summary['tokens_kept']}/{summary['tokens_total']} tokens "
            f"(rate {summary['realized_rate']:.3f}; per window {shown}), "
            f"{summary['file_bytes']} bytes = {summary['file_bpp16']:.3f} BPP16 real vs {summary['nominal_bpp16']:.3f} nominal")
    if "psnr" in summary:
        line += f", PSNR {summary['psnr']:.2f} dB"
    print(line)


# ---------------------------------------------------------------------- encode / decode / ...
def add_tokenize_options(p, rate_default: float = 0.5) -> None:
    from .router import STRATEGIES
    from .selection import SELECTIONS

    p.add_argument("--rate", type=_rate, default=rate_default, help=f"average token rate in [1/16, 1] (default {rate_default})")
    p.add_argument("--strategy", choices=STRATEGIES, default="global_elbo", help="how each window's rate is chosen")
    p.add_argument("--selection", choices=SELECTIONS, default="error", help="which tokens are kept")
    p.add_argument("--window", type=int, default=33, help="frames per window (default 33)")
    p.add_argument("--overlap", type=int, default=5, help="frames shared by neighbouring windows (default 5)")
    p.add_argument("--size", type=_positive, help="resize so the short side is SIZE before tokenizing")
    p.add_argument("--seed", type=int, default=0, help="seed of the random strategy/selection")


def add_model_options(p) -> None:
    p.add_argument("--checkpoint", help="checkpoint folder (default: the shipped InfoTok-Flex)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def cmd_encode(args) -> int:
    _check_window(args)
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".itok", args.overwrite)
    model = _load_model(args)
    return _run_many(inputs, outputs, lambda s, d: _print_summary(_tokenize_to_file(model, s, d, args)), "encode")


def cmd_decode(args) -> int:
    from .tokens import TokenReader
    from .video import write_video

    inputs = [Path(p) for p in args.inputs]
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    model = _load_model(args)

    def job(src: Path, dst: Path) -> None:
        with TokenReader(src) as reader:
            bar = _progress(None, f"decode {src.name}")
            frames = model.iter_detokenize(reader.header, _counting(reader, bar))
            write_video(dst, frames, fps=reader.header.fps, lossless=args.lossless)
            bar.close()
            print(f"{src} -> {dst}: {reader.header.num_frames} frames {reader.header.width}x{reader.header.height}")
    return _run_many(inputs, outputs, job, "decode")


def _counting(iterable, bar):
    for item in iterable:
        bar.update(1)
        yield item


def cmd_reconstruct(args) -> int:
    import tempfile

    import numpy as np

    from .tokens import TokenReader
    from .video import iter_frames, resized_stream, write_video

    _check_window(args)
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    model = _load_model(args)

    def job(src: Path, dst: Path) -> None:
        with tempfile.TemporaryDirectory() as d:
            summary = _tokenize_to_file(model, src, Path(d, "tokens.itok"), args)
            summary["output"] = str(dst)
            with TokenReader(Path(d, "tokens.itok")) as reader:
                originals = resized_stream(iter_frames(src), args.size)
                sq, count = 0.0, 0

                def frames():
                    nonlocal sq, count
                    for o, r in zip(originals, model.iter_detokenize(reader.header, reader)):
                        sq += float(((o.astype(np.float64) - r) ** 2).sum())
                        count += o.size
                        yield r
                write_video(dst, frames(), fps=reader.header.fps, lossless=args.lossless)
            summary["psnr"] = 10 * np.log10(255.0**2 / max(sq / max(count, 1), 1e-12))
        _print_summary(summary)
    return _run_many(inputs, outputs, job, "reconstruct")


def cmd_info(args) -> int:
    from .tokens import TokenFormatError, TokenReader

    status = 0
    for item in args.inputs:
        try:
            with TokenReader(item) as reader:
                h = reader.header
                windows = list(reader)
                size = Path(item).stat().st_size
        except TokenFormatError as exc:
            print(f"infotok: error: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        kept = sum(w.kept for w in windows)
        total = sum(w.num_tokens for w in windows)
        pixels = h.num_frames * h.width * h.height
        window_pixels = sum((w.end - w.start) * h.width * h.height for w in windows)
        info = {
            "file": str(item), "format_version": h.format_version, "model": h.model, "model_hash": h.model_hash,
            "config_hash": h.config_hash, "levels": h.levels, "frames": h.num_frames, "fps": h.fps,
            "size": f"{h.width}x{h.height}", "source_size": f"{h.source_width}x{h.source_height}",
            "window": h.window, "overlap": h.overlap, "strategy": h.strategy, "selection": h.selection,
            "avg_rate": h.avg_rate, "score_mean": h.score_mean, "windows": len(windows),
            "tokens_kept": kept, "tokens_total": total, "realized_rate": kept / max(total, 1),
            "nominal_bpp16": kept / max(total, 1) + 1 / 16,
            "file_bytes": size, "header_bytes": reader.header_bytes,
            "window_bytes": sum(w.nbytes for w in windows), "trailer_bytes": 8,
            "file_bpp16": size * 8 * 16 / pixels,
            "file_bpp16_per_window_pixel": size * 8 * 16 / window_pixels,
            "per_window": [{"frames": [w.start, w.end], "rate": round(w.rate, 5), "kept": w.kept,
                            "tokens": w.num_tokens, "bytes": w.nbytes} for w in windows],
        }
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                if key != "per_window":
                    print(f"{key:>28}: {value}")
            for i, w in enumerate(info["per_window"]):
                print(f"{'window ' + str(i):>28}: frames {w['frames'][0]}-{w['frames'][1]}, rate {w['rate']:.4f}, "
                      f"kept {w['kept']}/{w['tokens']}, {w['bytes']} bytes")
    return status


def cmd_viz(args) -> int:
    from .video import iter_frames, resized_stream, write_video
    from .viz import render, strip

    _check_window(args)
    src = _inputs([args.input])[0]
    dst = _outputs([src], args.output, ".mp4", args.overwrite)[0]
    model = _load_model(args)
    tokens = model.tokenize(src, args.rate, args.strategy, args.selection, args.window, args.overlap, args.size, args.seed)
    originals = resized_stream(iter_frames(src), args.size)
    frames = list(render(originals, model.iter_detokenize(tokens.header, tokens.windows), tokens))
    write_video(dst, frames, fps=tokens.header.fps)
    png = Path(args.png) if args.png else dst.with_suffix(".png")
    strip(frames, png, title=f"{src.name}: original | reconstruction, kept tokens tinted | kept-token mask "
                              f"(rate {tokens.realized_rate:.2f}, {args.strategy})")
    print(f"{src} -> {dst}, {png}: kept {tokens.kept}/{tokens.num_tokens} tokens (rate {tokens.realized_rate:.3f})")
    return 0


def cmd_eval(args) -> int:
    from .eval import evaluate, write_report
    from .perceptual import Perceptual

    inputs = _inputs(args.inputs)
    model = _load_model(args)
    perceptual = Perceptual.from_paths(args.lpips_weights, args.fvd_weights, model.device)
    strategies = args.strategy.split(",")
    selections = args.selection.split(",")
    report = evaluate(model, inputs, args.rates, strategies, selections, args.size, args.frames,
                      with_vmaf=args.vmaf, seed=args.seed, progress=lambda m: print(m, file=sys.stderr),
                      perceptual=perceptual, crop=not args.whole_frame)
    if args.json:
        write_report(report, args.json)
    for r in report["results"]:
        line = (f"{r['strategy']:>11} {r['selection']:>6} rate {r['rate']:.3f}: realized {r['realized_rate']:.3f}, "
                f"BPP16 {r['bpp16']:.3f} (file {r['bpp16_file']:.3f}), PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}")
        for key, label in (("vmaf", "VMAF"), ("lpips", "LPIPS"), ("fvd", "FVD")):
            if key in r:
                line += f", {label} {r[key]:.4g}"
        print(line + f", {r['videos']} videos")
    return 0


def cmd_calibrate(args) -> int:
    import numpy as np

    from .eval import load_clip

    inputs = _inputs(args.inputs)
    model = _load_model(args)
    if not model.adaptive:
        raise UsageError("calibration is for InfoTok checkpoints (a base tokenizer has no router)")
    scores = []
    for p in inputs:
        clip = load_clip(model, p, args.size, args.frames)
        scores.append(clip.score)
        print(f"{p.name}: score {clip.score:.5f}", file=sys.stderr)
    mean = float(np.mean(scores))
    print(json.dumps({"score_mean": mean, "previous": float(model.score_mean), "videos": len(scores)}))
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} exists; pass --overwrite to replace it")
        from .model import read_config

        previous = read_config(args.checkpoint or _default_checkpoint())
        model.score_mean.fill_(mean)
        extra = {k: v for k, v in previous.items() if k not in model.config_dict()}
        extra["calibration"] = {"videos": [p.name for p in inputs], "size": args.size, "frames": args.frames}
        model.save_pretrained(out, extra=extra)
    return 0


def _default_checkpoint() -> Path:
    import os

    from .model import DEFAULT_CHECKPOINT

    return Path(os.environ.get("INFOTOK_CHECKPOINT") or DEFAULT_CHECKPOINT)


def cmd_demo(args) -> int:

    from .eval import psnr
    from .video import synthetic_video, write_video
    from .viz import render, strip

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model = _load_model(args)
    video = synthetic_video(args.frames, args.height, args.width, seed=args.seed)
    write_video(out / "sample.mp4", video, fps=24)
    report = {"checkpoint": model.name, "sample": {"frames": args.frames, "size": f"{args.width}x{args.height}"},
              "runs": []}
    rates = [1.0] if not model.adaptive else args.rates
    for rate in rates:
        tokens = model.tokenize(video, rate=rate, strategy="static", window=args.frames, overlap=0)
        tag = f"rate{rate:g}"
        tokens.save(out / f"sample_{tag}.itok")
        recon = model.detokenize(tokens)
        write_video(out / f"reconstruction_{tag}.mp4", recon, fps=24)
        frames = list(render(video, recon, tokens))
        write_video(out / f"viz_{tag}.mp4", frames, fps=24)
        strip(frames, out / f"viz_{tag}.png",
              title=f"built-in sample, rate {rate:g}: original | reconstruction, kept tokens tinted | kept-token mask")
        size = (out / f"sample_{tag}.itok").stat().st_size
        report["runs"].append({"rate": rate, "psnr": psnr(video, recon), "tokens_kept": tokens.kept,
                               "tokens_total": tokens.num_tokens, "nominal_bpp16": tokens.nominal_bpp16(),
                               "file_bytes": size, "file_bpp16": size * 8 * 16 / video[..., 0].size})
        print(f"rate {rate:g}: PSNR {report['runs'][-1]['psnr']:.2f} dB, kept {tokens.kept}/{tokens.num_tokens} "
              f"tokens, {size} bytes")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}/ (sample.mp4, reconstruction_*.mp4, viz_*.mp4, viz_*.png, report.json)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("encode", help="video(s) -> .itok token file(s)")
    p.add_argument("inputs", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="FILE.itok for one input, a folder for several")
    add_tokenize_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".itok token file(s) -> MP4")
    p.add_argument("inputs", nargs="+", help=".itok files")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 for one input, a folder for several")
    p.add_argument("--lossless", action="store_true", help="store the decoded frames exactly (large MP4)")
    add_model_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="video(s) -> tokens -> MP4, with PSNR against the input")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--lossless", action="store_true", help="store the reconstructed frames exactly (large MP4)")
    add_tokenize_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("viz", help="side-by-side video + PNG strip of where the tokens went")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4")
    p.add_argument("--png", help="PNG strip path (default: OUT.png)")
    add_tokenize_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_viz)

    p = sub.add_parser("info", help="header, token counts and real vs nominal bits of .itok files")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="rate-distortion evaluation (TokenBench PSNR/SSIM, optional VMAF)")
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument("--rates", type=_rates, default=[1.0], help="comma-separated average rates, e.g. 1,0.75,0.5,0.25")
    p.add_argument("--strategy", default="static", help="comma-separated: global_elbo, static, uniform")
    p.add_argument("--selection", default="error", help="comma-separated: error, order, random")
    p.add_argument("--size", type=_positive, default=256)
    p.add_argument("--frames", type=_positive, default=33)
    p.add_argument("--whole-frame", action="store_true",
                   help="keep whole frames (short side --size) instead of the protocol's centre crop")
    p.add_argument("--vmaf", action="store_true", help="also compute VMAF (FFmpeg libvmaf)")
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="also compute LPIPS with this torchvision AlexNet/VGG16 state dict (never downloaded)")
    p.add_argument("--fvd-weights", metavar="FILE",
                   help="also compute FVD with this TorchScript feature network, e.g. i3d_torchscript.pt")
    p.add_argument("--json", help="write the report here (and a per-video CSV beside it)")
    p.add_argument("--seed", type=int, default=0)
    add_model_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="measure the mean clip score global_elbo divides by")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", help="write a checkpoint copy with the new calibration here")
    p.add_argument("--size", type=_positive, default=256)
    p.add_argument("--frames", type=_positive, default=33)
    add_model_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("demo", help="tokenize the built-in sample at two rates; writes demo_out/")
    p.add_argument("-o", "--output", default="demo_out")
    p.add_argument("--rates", type=_rates, default=[0.5, 0.25])
    p.add_argument("--frames", type=_positive, default=33)
    p.add_argument("--height", type=_positive, default=128)
    p.add_argument("--width", type=_positive, default=192)
    p.add_argument("--seed", type=int, default=0)
    add_model_options(p)
    p.set_defaults(func=cmd_demo)


# -------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infotok", description="Adaptive discrete video tokenization (InfoTok).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .model import CheckpointError
    from .video import VideoError
    from .tokens import TokenFormatError
    try:
        return args.func(args)
    except (UsageError, VideoError, CheckpointError, TokenFormatError, ValueError, OSError) as exc:
        if os.environ.get("INFOTOK_DEBUG"):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            exc = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
        print(f"infotok: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("infotok: interrupted", file=sys.stderr)
        return 130
