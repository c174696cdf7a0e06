"""The `infotok` command line: argument parsing, progress, messages and exit codes only.

Every check of a value and every computation lives in the library (config objects, `pipeline`,
`eval`, `tokens`, `checkpoint`), so the Python API refuses and reports what the CLI does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

EXIT_BAD_INPUT = 2
DEFAULT_SIZE = 256  # short side the shipped checkpoints were trained at


class UsageError(ValueError):
    """A bad argument: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an argument error is one line that points to --help instead of the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` says more)\n")


def _rate(text: str) -> float:
    from .router import check_rate

    try:
        return check_rate(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share(text: str) -> float:
    """A rate of the 1D layout: any share of the grid's positions in (0, 1] (checked against the
    window's sequence length when the size is known)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share of the grid's tokens in (0, 1], got {text!r}")
    return value


def _rates(text: str) -> list[float]:
    return [_rate(t) for t in text.split(",") if t.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _size(text: str) -> int | str:
    return text if text == "native" else _positive(text)


# ---------------------------------------------------------------------------------- progress
class Progress:
    """A bar with a total and an ETA on a terminal; elsewhere (a log, a pipe) one status line every
    `interval` seconds. `close` leaves the end-of-run summary to the caller."""

    def __init__(self, total: int | None, desc: str, unit: str = "win", interval: float = 10.0):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.count, self.start, self.last = 0, time.time(), time.time()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.time() - self.last >= self.interval:
            self.last = time.time()
            print(f"infotok: {self.status()}", file=sys.stderr, flush=True)

    def status(self) -> str:
        elapsed = time.time() - self.start
        speed = self.count / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self.desc}: {self.count}"
            + (f"/{self.total}" if self.total else "")
            + f" {self.unit}, {speed:.2f} {self.unit}/s"
        )
        if self.total and speed > 0:
            line += f", ETA {max(0.0, (self.total - self.count) / speed):.0f} s"
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    if args.kind in ("latents", "registers"):
        return cmd_train_registers(args)
    from .train import TrainConfig, Trainer

    settings = {
        key: getattr(args, key)
        for key in (
            "steps",
            "batch",
            "frames",
            "crop",
            "lr",
            "warmup",
            "ema",
            "checkpoint_every",
            "workers",
            "synthetic_fraction",
            "border_fraction",
            "still_fraction",
            "predictor_points",
            "long_side",
            "long_fraction",
            "mixed_precision",
            "log_every",
            "cache",
            "time_limit",
        )
        if getattr(args, key) is not None
    }
    settings |= {"selection": args.train_selection, "rate_sampling": args.rate_sampling}
    for key, text in (
        ("base", args.base_config),
        ("compressor", args.compressor_config),
        ("predictor", args.predictor_config),
    ):
        if text:
            try:
                settings[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--{key}-config is not valid JSON ({exc})") from None
    cfg = TrainConfig(
        kind=args.kind,
        data=args.data,
        out=args.out,
        init=args.init,
        seed=args.seed,
        name=args.name or {"base": "infotok-base", "infotok": "infotok-flex"}.get(args.kind, ""),
        **settings,
    )
    trainer, resumed = Trainer.open(
        cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, steps=args.steps
    )
    if args.resume:
        print(
            f"resumed {trainer.cfg.out} at step {trainer.step}"
            if resumed
            else f"no saved state in {trainer.cfg.out}; starting fresh",
            file=sys.stderr,
        )
    trainer.run()
    trainer.accelerator.end_training()  # tears the process group down before exit (else gloo may abort there)
    print(
        json.dumps({"out": str(trainer.cfg.out), "step": trainer.step, "model": str(Path(trainer.cfg.out) / "model")})
    )
    return 0


def cmd_train_registers(args) -> int:
    """`train latents` (the base's codes of the training clips) and `train registers` (the 1D layout)."""
    from . import train_registers as tr

    if args.kind == "latents":
        from .data import training_videos

        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} exists; pass --overwrite to encode again")
        print(json.dumps({"latents": str(tr.build_latents(training_videos(args.data), args.init, out))}))
        return 0
    settings = {
        key: getattr(args, key)
        for key in ("steps", "batch", "lr", "warmup", "ema", "checkpoint_every", "log_every", "time_limit")
        if getattr(args, key) is not None
    }
    if args.mixed_precision:
        settings["mixed_precision"] = args.mixed_precision
    if args.register_config:
        try:
            settings["registers"] = json.loads(args.register_config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--register-config is not valid JSON ({exc})") from None
    cfg = tr.RegisterTrainConfig(
        latents=args.latents, out=args.out, seed=args.seed, name=args.name or "infotok-1d", **settings
    )
    trainer = tr.RegisterTrainer(cfg, progress=(lambda line: None) if args.quiet else print)
    if (Path(args.out) / "train_state.safetensors").exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{args.out} holds a run; pass --resume to continue it or --overwrite to restart")
    if args.resume and not trainer.resume():
        print(f"no saved state in {args.out}; starting fresh", file=sys.stderr)
    trainer.run()
    print(json.dumps({"out": args.out, "step": trainer.step, "model": str(trainer.export())}))
    return 0


def add_train(sub) -> None:
    from .train_config import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a base tokenizer or fine-tune InfoTok-Flex (resumable)",
        description="Train through accelerate "
        "(`accelerate launch --multi_gpu --num_processes N -m infotok train ...` for "
        "several processes or GPUs). Writes <out>/model (EMA weights), train_state.* "
        "and log.csv. Unset options take TrainConfig's defaults.",
    )
    p.add_argument(
        "kind",
        choices=["base", "infotok", "predictor", "latents", "registers"],
        help="base: fixed-rate tokenizer; infotok: Flex fine-tuning; predictor: the value predictor alone "
        "(token values and rate-distortion curves) on a frozen InfoTok checkpoint; latents: the base codes of "
        "--data's clips into the .npz --out (base from --init, default InfoTok-Flex); registers: the 1D "
        "layout on --latents",
    )
    p.add_argument("--data", nargs="*", default=[], help="video files or folders (default: synthetic clips only)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--init", help="checkpoint folder to start from (required for `infotok`)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (its saved settings win)")
    p.add_argument("--overwrite", action="store_true", help="restart a run that already exists in --out")
    p.add_argument("--steps", type=_positive, help=f"optimizer steps in all (default {TrainConfig.steps})")
    p.add_argument("--batch", type=_positive, help=f"clips per step and process (default {TrainConfig.batch})")
    p.add_argument("--frames", type=_positive, help=f"clip length, 1 + 4k (default {TrainConfig.frames})")
    p.add_argument("--crop", type=_positive, help=f"square crop size, a multiple of 8 (default {TrainConfig.crop})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.lr:g})")
    p.add_argument("--warmup", type=int, help=f"linear warm-up steps (default {TrainConfig.warmup})")
    p.add_argument("--ema", type=float, help=f"EMA decay of the exported weights (default {TrainConfig.ema})")
    p.add_argument(
        "--checkpoint-every", type=_positive, help=f"steps between checkpoints (default {TrainConfig.checkpoint_every})"
    )
    p.add_argument("--log-every", type=_positive, help=f"steps between log.csv rows (default {TrainConfig.log_every})")
    p.add_argument("--workers", type=int, help=f"data loader processes (default {TrainConfig.workers})")
    p.add_argument(
        "--synthetic-fraction", type=float, help=f"share of procedural clips (default {TrainConfig.synthetic_fraction})"
    )
    p.add_argument(
        "--border-fraction",
        type=float,
        help=f"share of clips given static letterbox/pillarbox bars (default {TrainConfig.border_fraction})",
    )
    p.add_argument(
        "--predictor-points",
        type=_positive,
        help="predictor: decodes per clip and step, each at a random rate k/16 "
        f"(default {TrainConfig.predictor_points})",
    )
    p.add_argument(
        "--still-fraction",
        type=float,
        help=f"share of clips held still, wholly or but for a moving box (default {TrainConfig.still_fraction})",
    )
    p.add_argument("--long-side", type=_positive, help="long side of the elongated crops (multiple of 8, e.g. 456)")
    p.add_argument(
        "--long-fraction",
        type=float,
        help="share of batches cropped to (crop^2 / long side) x long side, landscape or portrait "
        f"(default {TrainConfig.long_fraction})",
    )
    p.add_argument(
        "--cache", help=f"folder for small re-encoded copies of the training videos (default {TrainConfig.cache})"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        help="seconds of training after which the run ends with a checkpoint "
        "(the learning rate follows steps or time, whichever is further)",
    )
    p.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        help=f"autocast on GPUs (default {TrainConfig.mixed_precision})",
    )
    p.add_argument("--base-config", help="JSON of BaseConfig fields, e.g. '{\"dec_lo\": 192}'")
    p.add_argument(
        "--compressor-config",
        help="JSON of CompressorConfig fields (with --init: the ones to change, "
        "e.g. '{\"window\": 8}' for tiled attention)",
    )
    p.add_argument("--predictor-config", help="JSON of PredictorConfig fields (the value predictor)")
    p.add_argument("--latents", default="runs/latents.npz", help="registers: the file `train latents` wrote")
    p.add_argument("--register-config", help="registers: JSON of RegisterConfig fields, e.g. '{\"registers\": 256}'")
    p.add_argument(
        "--train-selection",
        choices=["error", "order", "random", "value", "drift"],
        default="error",
        help="infotok: which tokens survive in training (order = ElasticTok-style tail dropping; value "
        "adds and trains the value predictor, mixing value, random and error masks; drift trains "
        "the decoding side alone for the hold fill, adding a held-code embedding, half the windows "
        "drift-selected under hold, the rest value or random under mask)",
    )
    p.add_argument(
        "--rate-sampling",
        choices=["flex", "uniform", "elbo", "grid"],
        default="flex",
        help="infotok: rates per clip from {1, .75, .5, .25} (flex), uniform on [1/16, 1], "
        "global_elbo's rate for an average drawn from {1, .75, .5, .25} (elbo), or k/16 (grid)",
    )
    p.add_argument("--name", help="model name stored in the checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and rate draws (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------------------- shared helpers
def _load_model(args):
    from .model import InfoTok

    return InfoTok.from_pretrained(args.checkpoint, device=args.device)


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
    from .tokens import TOKEN_SUFFIX, check_token_output
    from .video import check_video_output

    for src, dst in zip(inputs, targets):
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise UsageError(f"{dst}: the output would overwrite its own input")
        # before any work: `-o newdir` or `-o x.txt` fails now, not after encoding
        check_token_output(dst) if suffix == TOKEN_SUFFIX else check_video_output(dst)
        if dst.exists() and not overwrite:
            raise UsageError(f"{dst} exists; pass --overwrite to replace it")
    return targets


def _inputs(items: list[str], suffixes=None) -> list[Path]:
    from .files import VIDEO_SUFFIXES, list_videos

    paths = list_videos(items, suffixes=suffixes or VIDEO_SUFFIXES)
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


def _specs(args):
    """encode / reconstruct / viz / encode-dataset's options as the two settings objects, made (and so
    checked) once: (`spec.TokenizeSpec`, `spec.Windowing`)."""
    from .spec import TokenizeSpec, Windowing

    if args.size == "native":
        size, max_size = None, None
    else:
        size, max_size = (None, DEFAULT_SIZE) if args.size is None else (args.size, None)
    try:
        return (
            TokenizeSpec(args.rate, args.strategy, args.selection, args.fill, seed=args.seed),
            Windowing(args.window, args.overlap, size, max_size, args.start, args.max_frames),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _rate_control(args, inputs: list[Path], model, spec, windowing) -> dict:
    """Each input's `TokenizeSpec` with --target-psnr / --budget run applied (a first pass
    over all inputs measures every window, then one exact budget is shared among them)."""
    from .pipeline import run_budget_rates

    if args.target_psnr is not None and (args.rate_given or args.strategy_given or args.budget == "run"):
        raise UsageError("--target-psnr chooses each window's rate itself: drop --rate, --strategy and --budget")
    try:
        spec = replace(spec, target_psnr=args.target_psnr)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.budget != "run":
        return {p: spec for p in inputs}
    if model.choices(args.strategy, args.selection, args.fill)[0] != "rd":
        raise UsageError("--budget run shares one budget by rate-distortion: use it with --strategy rd")
    rates = run_budget_rates(model, inputs, spec, windowing)
    return {p: replace(spec, rates=r) for p, r in zip(inputs, rates)}


def _target(text: str) -> float:
    from .router import check_target

    try:
        return check_target(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _expected_windows(path: Path, args) -> int | None:
    from .pipeline import expected_windows

    return expected_windows(path, args.window, args.overlap, args.start, args.max_frames)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def asked_rate(args, strategy: str) -> str:
    """What the user asked for, to print beside the realized rate: under `rd` with the calibrated
    threshold (the default) the realized rate follows the content, not --rate."""
    if getattr(args, "target_psnr", None) is not None:
        return f"target {args.target_psnr:g} dB"
    if getattr(args, "budget", "calibrated") == "run":
        return f"asked {args.rate:g} over all inputs, --budget run"
    if strategy == "rd":
        return f"asked {args.rate:g}, rd at the threshold calibrated for it: the content decides"
    return f"asked {args.rate:g}"


def _print_summary(src, dst, result, args, psnr: float | None = None) -> None:
    h, ledger = result.header, result.ledger
    shown = ", ".join(f"{r:.3f}" for r in result.window_rates[:8]) + (" ..." if len(result.window_rates) > 8 else "")
    line = (
        f"{src} -> {dst}: {h.num_frames} frames {h.width}x{h.height} at {h.fps:g} fps, "
        f"{plural(len(result.window_rates), 'window')}, kept {ledger.kept}/{ledger.total} tokens "
        f"(rate {ledger.realized_rate:.3f}, {asked_rate(args, h.strategy)}; per window {shown}), "
        f"{ledger.file_bytes} bytes = {ledger.file_bpp16:.3f} BPP16 real vs {ledger.nominal_bpp16:.3f} nominal"
    )
    if psnr is not None:
        line += f", PSNR {psnr:.2f} dB"
    print(line)
    if result.predicted_psnr and h.strategy in (
        "rd",
        "target",
    ):  # the predictor chose the rates: what it promised, and what came
        target = f"target {h.target_psnr:.2f} dB, " if h.target_psnr is not None else ""
        for i, ((a, b), rate, predicted) in enumerate(
            zip(result.window_spans, result.window_rates, result.predicted_psnr)
        ):
            measured = f", measured {result.window_psnr[i]:.2f} dB" if result.window_psnr else ""
            print(f"  window {i} (frames {a}-{b - 1}): rate {rate:.4f}, {target}predicted {predicted:.2f} dB{measured}")


# ---------------------------------------------------------------------- encode / decode / ...
RATE_HELP = (
    "average token rate in [1/16, 1] (default {default}). Under the default strategy (rd, hold fill) each "
    "window gets the drift threshold calibrated on the training clips for this rate, so the realized rate "
    "follows the content and the summary prints it; --budget run makes it exact over all inputs, "
    "--preset fixed (--strategy static) exact in every window"
)


def add_preset_option(p) -> None:
    from .names import PRESETS

    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="default",
        help="default: the checkpoint's own choices (the shipped one: rd + drift + hold); paper: InfoTok's "
        "configuration (global_elbo + error + mask); fixed: every window exactly --rate (static). "
        "The advanced options below override a preset",
    )


def add_tokenize_options(p, rate_default: float = 0.5, rate_type=_rate) -> None:
    from .names import FILLS, SELECTIONS, STRATEGIES

    p.add_argument("--rate", type=rate_type, help=RATE_HELP.format(default=rate_default))
    add_preset_option(p)
    advanced = p.add_argument_group("advanced: how rates and tokens are chosen (a --preset sets these)")
    advanced.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="how each window's rate is chosen (default: rd under --fill hold where the checkpoint is "
        "calibrated for it, as the shipped one is, else global_elbo; rd: equal rate-distortion slopes, "
        "on the codes' drift under hold, on the value predictor's curves under mask)",
    )
    p.set_defaults(rate_default=rate_default)
    advanced.add_argument(
        "--selection",
        choices=SELECTIONS,
        help="which tokens are kept (default: drift under --fill hold; under mask, value where the "
        "checkpoint has a value predictor, else error)",
    )
    advanced.add_argument(
        "--fill",
        choices=FILLS,
        help="how dropped tokens decode: hold (the code last kept at that position; the shipped "
        "checkpoint's default) or mask (the paper's: the decompressor infers them; the default of "
        "converted release weights and of --target-psnr)",
    )
    p.add_argument("--window", type=int, default=33, help="frames per window (default 33)")
    p.add_argument("--overlap", type=int, default=5, help="frames shared by neighbouring windows (default 5)")
    p.add_argument(
        "--size",
        type=_size,
        help=f"resize so the short side is SIZE before tokenizing; default: sources with a short side over "
        f"{DEFAULT_SIZE} (the resolution the shipped checkpoints were trained at) are shrunk to "
        f"{DEFAULT_SIZE}, smaller ones kept; `native` keeps every source's size (slow on a CPU)",
    )
    p.add_argument("--start", type=int, default=0, help="first frame to tokenize (default 0)")
    p.add_argument(
        "--max-frames", type=_positive, help="tokenize at most this many frames (default: all), for a quick look"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the uniform strategy and random selection (default 0)")


def add_rate_control_options(p) -> None:
    p.add_argument(
        "--target-psnr",
        type=_target,
        metavar="DB",
        help="give each window the fewest tokens predicted (less the checkpoint's calibrated margins, "
        "so that about 90%% of windows get there) to reach this PSNR (instead of --rate). It plans "
        "on the value predictor's curves, which describe value selection with the mask fill, so it "
        "tokenizes that way (not with --fill hold, which on still content reaches a PSNR with far "
        "fewer tokens); windows the target is out of reach for get every token, with a warning",
    )
    p.add_argument(
        "--budget",
        choices=["calibrated", "run"],
        default="calibrated",
        help="--strategy rd (the default): a threshold calibrated in the checkpoint, so a video's tokens "
        "do not depend on the other inputs and its realized rate follows its content (default), or "
        "one exact budget shared by all inputs of this command (run): --rate exactly, still adaptive",
    )


def add_model_options(p, outputs: bool = True) -> None:
    p.add_argument(
        "--checkpoint",
        help="checkpoint folder, or a Hugging Face repo id (owner/name) with the hub extra "
        "(default: $INFOTOK_CHECKPOINT or the installed InfoTok-Flex)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    if outputs:
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _check_grid_rate(args) -> None:
    """--rate was parsed as a 1D share (any in (0, 1]); the grid's rates are [1/16, 1]."""
    from .router import check_rate

    if args.tokens is not None:
        raise UsageError("--tokens counts 1D tokens: pass --layout 1d (grid files take --rate)")
    if args.rate_given:
        try:
            check_rate(args.rate)
        except ValueError as exc:
            raise UsageError(f"--rate: {exc} (1D files go lower: --layout 1d)") from None


def _load_1d(args):
    from .layout1d import InfoTok1D

    return InfoTok1D.from_pretrained(args.checkpoint, device=args.device)


def cmd_encode(args) -> int:
    from .pipeline import encode_file

    if args.layout == "1d":
        return cmd_encode_1d(args)
    _check_grid_rate(args)
    spec, windowing = _specs(args)
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".itok", args.overwrite)
    model = _load_model(args)
    specs = _rate_control(args, inputs, model, spec, windowing)

    def job(src: Path, dst: Path) -> None:
        bar = Progress(_expected_windows(src, args), f"encode {src.name}")
        try:
            result = encode_file(model, src, dst, args.overwrite, lambda w: bar.update(), specs[src], windowing)
        finally:
            bar.close()
        _print_summary(src, dst, result, args)

    return _run_many(inputs, outputs, job, "encode")


def cmd_encode_1d(args) -> int:
    from . import layout1d

    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".itok", args.overwrite)
    model = _load_1d(args)
    _, windowing = _specs(args)

    def job(src: Path, dst: Path) -> None:
        out = layout1d.encode_file(
            model,
            src,
            dst,
            args.overwrite,
            tokens=args.tokens,
            rate=args.rate if args.rate_given else None,
            target_psnr=args.target_psnr,
            size=windowing.size,
            max_size=windowing.max_size,
            start=windowing.start,
            max_frames=windowing.max_frames,
        )
        h, kept = out.header, out.ledger().kept
        print(
            f"{src} -> {dst}: {h.num_frames} frames {h.width}x{h.height}, {plural(len(out.windows), 'window')} of "
            f"{'/'.join(str(k) for k in sorted({w.kept for w in out.windows}))} tokens (1D layout; {kept} tokens, "
            f"rate {h.avg_rate:.4f} of the grid's)"
        )

    return _run_many(inputs, outputs, job, "encode")


def cmd_decode(args) -> int:
    from .pipeline import decode_file
    from .tokens import TOKEN_SUFFIX, TokenReader, window_count

    inputs = _inputs(args.inputs, suffixes={TOKEN_SUFFIX})
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    with TokenReader(inputs[0]) as reader:
        layout = reader.header.layout
    if layout == "1d":
        return cmd_decode_1d(args, inputs, outputs)
    if args.tokens is not None or args.steps:
        raise UsageError("--tokens and --steps decode 1D-layout files; this one is a grid file")
    model = _load_model(args)

    def job(src: Path, dst: Path) -> None:
        with TokenReader(src) as reader:
            total = window_count(reader.header)
        bar = Progress(total, f"decode {src.name}")
        try:
            header, _ = decode_file(model, src, dst, args.lossless, lambda w: bar.update())
        finally:
            bar.close()
        padded = (
            ""
            if dst.suffix.lower() in (".webm", ".avi") or args.lossless or not (header.width % 2 or header.height % 2)
            else (
                f" (H.264 codes even sizes only: the file repeats its last {'column' if header.width % 2 else 'row'}, "
                "which infotok crops off when it reads the file; .webm keeps odd sizes exactly)"
            )
        )
        print(
            f"{src} -> {dst}: {header.num_frames} frames {header.width}x{header.height} at {header.fps:g} fps{padded}"
        )

    return _run_many(inputs, outputs, job, "decode")


def cmd_decode_1d(args, inputs: list[Path], outputs: list[Path]) -> int:
    from . import layout1d

    model = _load_1d(args)

    def job(src: Path, dst: Path) -> None:
        out = layout1d.decode_file(model, src, dst, args.tokens, args.steps, args.seed, args.lossless)
        how = f"flow decoder, {args.steps} steps, seed {args.seed}" if args.steps else "regression decoder"
        print(f"{src} -> {dst}: {out.header.num_frames} frames from {out.windows[0].kept} tokens a window ({how})")

    return _run_many(inputs, outputs, job, "decode")


def cmd_reconstruct(args) -> int:
    from .pipeline import reconstruct_file

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


def cmd_info(args) -> int:
    from .tokens import TOKEN_SUFFIX, TokenFormatError, describe

    status = 0
    for item in _inputs(args.inputs, suffixes={TOKEN_SUFFIX}):
        try:
            info = describe(item)
        except TokenFormatError as exc:
            print(f"infotok: error: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        if args.json:
            print(json.dumps(info, indent=2))
            continue
        for key, value in info.items():
            if key != "per_window":
                print(f"{key:>28}: {value}")
        for i, w in enumerate(info["per_window"]):
            print(
                f"{'window ' + str(i):>28}: frames {w['frames'][0]}-{w['frames'][1]}, rate {w['rate']:.4f}, "
                f"kept {w['kept']}/{w['tokens']}, {w['bytes']} bytes"
            )
    return status


def cmd_viz(args) -> int:
    from .viz import visualize_file

    spec, windowing = _specs(args)
    src = _inputs([args.input])[0]
    dst = _outputs([src], args.output, ".mp4", args.overwrite)[0]
    png = Path(args.png) if args.png else dst.with_suffix(".png")
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


def cmd_eval(args) -> int:
    from .eval import evaluate, write_report
    from .extras import require
    from .perceptual import Perceptual

    require("torchmetrics", "`infotok eval` (SSIM)")  # before any work, not after the first clip
    if args.vmaf:
        require("imageio_ffmpeg", "`infotok eval --vmaf`")
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
    from .checkpoint import default_checkpoint, save_calibrated
    from .eval import calibrate

    inputs = _inputs(args.inputs)
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"{args.output} exists; pass --overwrite to replace it")
    model = _load_model(args)
    calibration = calibrate(model, inputs, args.size, args.frames, progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(
            json.dumps(
                {
                    k: calibration[k]
                    for k in ("score_mean", "previous", "videos", "rd_thresholds", "target_margins")
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
    )
    if "target_margins" in calibration:
        margins = calibration["target_margins"]
        print(f"  --target-psnr margins {min(margins):.2f} to {max(margins):.2f} dB over {len(margins)} rates")


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .layout1d import InfoTok1D

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


def cmd_convert(args) -> int:
    from .convert import convert_cosmos_jit, convert_release

    src = Path(args.source)
    if src.is_dir():
        out = convert_cosmos_jit(src, args.output, name=args.name)
    else:
        out = convert_release(src, args.output, ema=args.ema, name=args.name, heads=args.heads)
    print(
        f"{src} -> {out}: an infotok checkpoint folder; the release stores no calibration, so run "
        f"`infotok calibrate VIDEOS --checkpoint {out} -o CALIBRATED` before --strategy global_elbo"
    )
    return 0


def add_layout_options(p) -> None:
    layout = p.add_argument_group("1D layout: coarse-to-fine token sequences (docs/LAYOUT_1D.md)")
    layout.add_argument(
        "--layout",
        choices=["grid", "1d"],
        default="grid",
        help="grid: InfoTok's keep-masked 4x8x8 grid (default); 1d: each window a coarse-to-fine sequence "
        "from the 1D checkpoint (default: the installed infotok-1d), any prefix of which decodes",
    )
    layout.add_argument(
        "--tokens",
        type=_positive,
        help="1d: tokens kept per window (default: all, 1024 at 256x256); or --rate (tokens in all = rate x the grid's "
        "positions, shared among windows by content) or --target-psnr (each window the fewest that reach it)",
    )


def add_commands(sub) -> None:
    from .names import FILLS

    p = sub.add_parser("encode", help="video(s) -> .itok token file(s)")
    p.add_argument("inputs", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="FILE.itok for one input, a folder for several")
    add_tokenize_options(p, rate_type=_share)
    add_rate_control_options(p)
    add_model_options(p)
    add_layout_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".itok token file(s) -> video")
    p.add_argument("inputs", nargs="+", help=".itok files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 for one input, a folder for several")
    p.add_argument("--lossless", action="store_true", help="store the decoded frames exactly (large file)")
    add_model_options(p)
    layout = p.add_argument_group("1D-layout files")
    layout.add_argument("--tokens", type=_positive, help="decode each window's first N tokens only (no re-encoding)")
    layout.add_argument(
        "--steps", type=int, default=0, help="0: regression decoder (default); N: the flow decoder in N steps"
    )
    layout.add_argument("--seed", type=int, default=0, help="seed of the flow decoder's noise (default 0)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="video(s) -> tokens -> video, with PSNR against the input")
    p.add_argument("inputs", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 for one input, a folder for several")
    p.add_argument("--lossless", action="store_true", help="store the reconstructed frames exactly (large file)")
    add_tokenize_options(p)
    add_rate_control_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("viz", help="side-by-side video + PNG strip of where the tokens went")
    p.add_argument("input", help="a video file")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4: original | reconstruction | keep-mask")
    p.add_argument("--png", help="PNG strip path (default: OUT.png)")
    add_tokenize_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_viz)

    p = sub.add_parser("info", help="header, token counts and real vs nominal bits of .itok files")
    p.add_argument("inputs", nargs="+", help=".itok files, folders or glob patterns")
    p.add_argument("--json", action="store_true", help="print one JSON object per file instead of a table")
    p.set_defaults(func=cmd_info)

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
    p.add_argument("--seed", type=int, default=0, help="seed of the uniform strategy and random selection (default 0)")
    add_model_options(p, outputs=False)
    p.set_defaults(func=cmd_eval)

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
    p.add_argument("--json", action="store_true", help="print the calibration as one JSON object instead of a summary")
    add_model_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "convert",
        help="the InfoTok release's checkpoint or a Cosmos tokenizer folder -> a checkpoint folder",
        description="SOURCE is the release's trainer checkpoint file (read with torch.load(weights_only=True) "
        "only) or a Cosmos Tokenizer DV4x8x8 folder (encoder.jit, decoder.jit). Nothing is "
        "written unless every tensor maps. See docs/RELEASE.md.",
    )
    p.add_argument("source", help="release checkpoint file (.pt) or Cosmos tokenizer folder")
    p.add_argument("-o", "--output", required=True, help="new checkpoint folder (must not exist, or be empty)")
    p.add_argument("--ema", action="store_true", help="release file: take the EMA weights instead of the network's")
    p.add_argument(
        "--heads",
        type=_positive,
        help="release file: attention heads of the transformer stacks "
        "(not stored in the file; default width / 8, i.e. 32)",
    )
    p.add_argument("--name", help="model name stored in the checkpoint (default: the output folder's name)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="tokenize the built-in sample at two rates; writes demo_out/")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--rates", type=_rates, default=[0.5, 0.25], help="comma-separated rates (default 0.5,0.25)")
    p.add_argument("--frames", type=_positive, default=33, help="frames of the sample (default 33)")
    p.add_argument("--height", type=_positive, default=128, help="sample height (default 128)")
    p.add_argument("--width", type=_positive, default=192, help="sample width (default 192)")
    p.add_argument("--seed", type=int, default=0, help="which procedural sample (default 0)")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)


# ----------------------------------------------------------------------------- encode-dataset
class _DatasetBar(Progress):
    """Videos done of the run's total, with windows and frames/s in the status line."""

    extra = ""

    def status(self) -> str:
        return super().status() + (f", {self.extra}" if self.extra else "")


def cmd_encode_dataset_1d(args) -> int:
    """encode-dataset --layout 1d: one video at a time in this process (no Ray), into the same shards."""
    from . import layout1d
    from .dataset import list_sources

    _, windowing = _specs(args)
    model = _load_1d(args)
    videos = list_sources(args.inputs)
    if not videos:
        raise UsageError(f"no videos found in {' '.join(args.inputs)}")
    bar = Progress(len(videos), "encode-dataset (1D layout)", unit="video")
    try:
        manifest = layout1d.encode_dataset(
            model,
            videos,
            args.out,
            args.tokens,
            args.rate if args.rate_given else None,
            None,
            windowing.size,
            windowing.max_size,
            args.windows_per_shard,
            args.overwrite,
            progress=lambda path: bar.update(),
        )
    finally:
        bar.close()
    counts = manifest["counts"]
    print(
        f"{args.out}: {counts['videos']} videos, {counts['windows']} windows, {counts['tokens_kept']} tokens "
        f"(1D layout) in {counts['shards']} shards" + (f"; {counts['failed']} failed" if counts["failed"] else "")
    )
    return EXIT_BAD_INPUT if counts["failed"] else 0


def cmd_encode_dataset(args) -> int:
    if args.layout == "1d":
        return cmd_encode_dataset_1d(args)
    _check_grid_rate(args)
    from .dataset import require_scale

    require_scale()  # before any work; main reports a missing extra in one line
    import ray.exceptions

    from .dataset import encode_dataset

    spec, windowing = _specs(args)
    bars: list[_DatasetBar] = []

    def progress(p) -> None:
        if not bars or bars[-1].stage != p.stage:  # a bar per stage: --budget run's first pass, then tokenizing
            if bars:
                bars[-1].close()
            bars.append(
                _DatasetBar(
                    p.videos, "encode-dataset" + (" (first pass)" if p.stage == "measure" else ""), unit="video"
                )
            )
            bars[-1].stage = p.stage
        bar = bars[-1]
        bar.extra = (
            f"{p.windows} windows measured"
            if p.stage == "measure"
            else f"{p.windows} windows, {p.frames_per_s:.1f} frames/s"
        ) + (f", {p.failed} failed" if p.failed else "")
        if bar.bar is not None:
            bar.bar.set_postfix_str(bar.extra, refresh=False)
        bar.update(p.done + p.failed - bar.count)

    try:
        run = encode_dataset(
            args.inputs,
            args.out,
            args.checkpoint,
            rate=spec.rate,
            strategy=spec.strategy,
            selection=spec.selection,
            fill=spec.fill,
            seed=spec.seed,
            window=windowing.window,
            overlap=windowing.overlap,
            size=windowing.size,
            max_size=windowing.max_size,
            start=windowing.start,
            max_frames=windowing.max_frames,
            budget=args.budget,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            num_gpus_per_worker=args.num_gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            device=args.device,
            windows_per_shard=args.windows_per_shard,
            ray_address=args.ray_address,
            num_cpus=args.num_cpus,
            overwrite=args.overwrite,
            progress=progress,
        )
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        print(
            f"infotok: error: the Ray pipeline failed ({lines[-1] if lines else exc.__class__.__name__}); "
            f"finished shards are kept: rerun the same command to resume",
            file=sys.stderr,
        )
        return 1
    finally:
        for bar in bars:
            bar.close()
    rate = run.frames / run.pipeline_s if run.pipeline_s else 0.0
    print(
        f"{run.out}: {run.completed} videos tokenized"
        + (f", {run.skipped} already complete" if run.skipped else "")
        + (f", {len(run.failures)} failed" if run.failures else "")
        + f"; {run.windows} windows, {run.frames} frames in {run.elapsed:.1f} s ({rate:.1f} frames/s), "
        f"kept {run.tokens_kept}/{run.tokens_total} tokens, rate {run.realized_rate:.3f} realized"
        + (" over all complete videos" if run.skipped else "")
        + f" (asked {run.rate:g}, {run.budget}), "
        f"{len(run.shards)} new shards ({run.shard_bytes} bytes); "
        f"manifest {run.out / 'manifest.json'}"
    )
    if run.failures:
        print(
            f"infotok: encode-dataset: {len(run.failures)} of {run.inputs} inputs failed "
            f"(listed in {run.out / 'failures.jsonl'}):",
            file=sys.stderr,
        )
        for failure in run.failures:
            print(f"  {failure['error']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def add_encode_dataset(sub) -> None:
    p = sub.add_parser(
        "encode-dataset",
        help="videos -> Parquet token shards, on Ray Data (resumable)",
        description="Tokenize many videos on Ray Data: CPU tasks read and cut them into windows, "
        "model actors tokenize batches of windows, and whole videos are written into "
        "Parquet shards listed in DIR/manifest.json (format: docs/FORMAT.md). A rerun "
        "skips the videos already complete; videos that fail are listed in "
        "DIR/failures.jsonl (exit code 2). Needs the extra: pip install 'infotok[scale]'.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SRC",
        help="video files, folders, glob patterns, or text files (.txt/.lst/.list) of paths, one per line",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="shard folder (created; a rerun resumes it)")
    add_tokenize_options(p, rate_type=_share)
    add_layout_options(p)
    p.add_argument(
        "--budget",
        choices=["calibrated", "run"],
        default="calibrated",
        help="what --rate means: calibrated (default), each window on its own at the threshold calibrated "
        "for --rate on the checkpoint's training clips, so the average realized on other data "
        "differs from --rate; run, exactly --rate over all the inputs, still adaptive (a still shot "
        "gets fewer tokens than a busy one), from a first pass whose statistics stay in DIR/budget "
        "(--strategy rd only)",
    )
    p.add_argument(
        "--checkpoint",
        help="checkpoint folder, readable at the same path on every Ray node "
        "(default: $INFOTOK_CHECKPOINT or the shipped InfoTok-Flex)",
    )
    p.add_argument(
        "--device", help="device of the model workers: cpu, cuda (default: cuda with --num-gpus-per-worker, else cpu)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        help="windows per model call (default: 8 with GPUs, 1 on CPUs, where batching is slower and costs "
        "memory); on a CPU the tokens are encode's whatever the batch, on a GPU up to kernel rounding (1: exactly)",
    )
    p.add_argument(
        "--concurrency", type=_positive, default=1, help="model workers (Ray actors, one model load each; default 1)"
    )
    p.add_argument("--num-gpus-per-worker", type=float, default=0.0, help="GPUs per model worker (default 0)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per model worker (default 1)")
    p.add_argument(
        "--windows-per-shard",
        type=_positive,
        default=2048,
        help="about this many windows per shard; whole videos only (default 2048)",
    )
    p.add_argument(
        "--ray-address",
        help="join this Ray cluster (e.g. auto, or HOST:6379; default $RAY_ADDRESS, else start Ray on this machine)",
    )
    p.add_argument("--num-cpus", type=_positive, help="CPUs of the Ray started on this machine (default: all)")
    p.add_argument("--overwrite", action="store_true", help="start DIR afresh instead of resuming it")
    p.set_defaults(func=cmd_encode_dataset)


# -------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = Parser(prog="infotok", description="Adaptive discrete video tokenization (InfoTok).")
    try:
        installed = version("infotok")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"infotok {installed}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    add_encode_dataset(sub)
    add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "rate_default"):  # explicit --rate / --strategy are told apart from the defaults
        args.rate_given, args.strategy_given = args.rate is not None, args.strategy is not None
        args.rate = args.rate if args.rate is not None else args.rate_default
    if hasattr(args, "preset"):
        from .names import PRESETS

        for key, value in PRESETS[args.preset].items():  # what was given explicitly wins
            if getattr(args, key) is None:
                setattr(args, key, value)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"infotok: warning: {message}", file=sys.stderr)  # the message names the file, no source line

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return args.func(args)
    except BrokenPipeError:  # `infotok info x.itok | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as exc:  # an optional dependency: say which extra installs it
        from .extras import MissingExtra, describe

        message = str(exc) if isinstance(exc, MissingExtra) else describe(exc, f"`infotok {args.command}`")
        if message is None or os.environ.get("INFOTOK_DEBUG"):
            raise
        print(f"infotok: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the library's own errors, imported here: `--help` and `info` start without torch
        from .checkpoint import CheckpointError
        from .tokens import TokenFormatError
        from .video import VideoError

        if os.environ.get("INFOTOK_DEBUG") or not isinstance(
            exc, (UsageError, VideoError, CheckpointError, TokenFormatError, ValueError, OSError)
        ):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            exc = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
        print(f"infotok: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("infotok: interrupted", file=sys.stderr)
        return 130
