"""What every `infotok` command shares: exit codes, argument types, progress, inputs and outputs, the
settings objects made from the options, and the summary lines.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    from ..router import check_rate

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


def _guidance(text: str) -> float:
    from ..registers import check_guidance

    try:
        return check_guidance(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rates(text: str) -> list[float]:
    return [_rate(t) for t in text.split(",") if t.strip()]


def _counts(text: str) -> list[int]:
    return [_positive(t) for t in text.split(",") if t.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _size(text: str) -> int | str:
    return text if text == "native" else _positive(text)


def _target(text: str) -> float:
    from ..router import check_target

    try:
        return check_target(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _load_model(args):
    from ..model import InfoTok

    return InfoTok.from_pretrained(args.checkpoint, device=args.device)


def _load_1d(args):
    from ..layout1d import InfoTok1D

    return InfoTok1D.from_pretrained(args.checkpoint, device=args.device)


def _one_d_options(args, windowing) -> dict:
    """What a 1D encode takes from the command line: its budget (--tokens, --rate, --target-psnr) and source."""
    return dict(
        tokens=args.tokens,
        rate=args.rate if args.rate_given else None,
        target_psnr=getattr(args, "target_psnr", None),  # encode-dataset offers none
        size=windowing.size,
        max_size=windowing.max_size,
        start=windowing.start,
        max_frames=windowing.max_frames,
    )


def _load_prior(args):
    from ..entropy import load_prior

    try:
        return load_prior(args.prior)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--prior: {exc}") from None


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
    from ..tokens import TOKEN_SUFFIX, check_token_output
    from ..video import check_video_output

    for src, dst in zip(inputs, targets):
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise UsageError(f"{dst}: the output would overwrite its own input")
        # before any work: `-o newdir` or `-o x.txt` fails now, not after encoding
        check_token_output(dst) if suffix == TOKEN_SUFFIX else check_video_output(dst)
        if dst.exists() and not overwrite:
            raise UsageError(f"{dst} exists; pass --overwrite to replace it")
    return targets


def _inputs(items: list[str], suffixes=None) -> list[Path]:
    from ..files import VIDEO_SUFFIXES, list_videos

    paths = list_videos(items, suffixes=suffixes or VIDEO_SUFFIXES)
    if not paths:
        raise UsageError(f"no inputs found in {' '.join(items)}")
    return paths


def _run_many(inputs: list[Path], outputs: list[Path], job, label: str) -> int:
    """Run job(input, output) for each; a bad file is reported and skipped, the rest go on."""
    from ..tokens import TokenFormatError
    from ..video import VideoError

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
    from ..spec import TokenizeSpec, Windowing

    if args.size == "native":
        size, max_size = None, None
    else:
        size, max_size = (None, DEFAULT_SIZE) if args.size is None else (args.size, None)
    try:
        return (
            TokenizeSpec(
                args.rate,
                args.strategy,
                args.selection,
                args.fill,
                seed=args.seed,
                refresh=args.refresh,
                key_density=args.key_density,
            ),
            Windowing(args.window, args.overlap, size, max_size, args.start, args.max_frames),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _rate_control(args, inputs: list[Path], model, spec, windowing) -> dict:
    """Each input's `TokenizeSpec` with --target-psnr / --budget run applied (a first pass
    over all inputs measures every window, then one exact budget is shared among them)."""
    from ..pipeline import run_budget_rates

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


def _check_grid_rate(args) -> None:
    """--rate was parsed as a 1D share (any in (0, 1]); the grid's rates are [1/16, 1]."""
    from ..router import check_rate

    if args.tokens is not None:
        raise UsageError("--tokens counts 1D tokens: pass --layout 1d (grid files take --rate)")
    if args.rate_given:
        try:
            check_rate(args.rate)
        except ValueError as exc:
            raise UsageError(f"--rate: {exc} (1D files go lower: --layout 1d)") from None


def _expected_windows(path: Path, args) -> int | None:
    from ..pipeline import expected_windows

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
    continuing = f" (continuing, refresh {h.refresh})" if h.refresh > 1 else ""
    line = (
        f"{src} -> {dst}: {h.num_frames} frames {h.width}x{h.height} at {h.fps:g} fps, "
        f"{plural(len(result.window_rates), 'window')}{continuing}, kept {ledger.kept}/{ledger.total} tokens "
        f"(rate {ledger.realized_rate:.3f}, {asked_rate(args, h.strategy)}; per window {shown}), "
        f"{ledger.file_bytes} bytes = {ledger.file_bpp16:.3f} BPP16 real vs {ledger.nominal_bpp16:.3f} nominal; "
        f"{ledger.tokens_per_second:.0f} tokens and {ledger.file_bits_per_second / 1000:.1f} kbit per second of video"
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
