"""The `infotok` command line: argument parsing, progress, messages and exit codes only.

Every check of a value and every computation lives in the library (config objects, `pipeline`,
`eval`, `tokens`, `checkpoint`), so the Python API refuses and reports what the CLI does.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .common import (  # noqa: F401 (re-exported)
    DEFAULT_SIZE,
    EXIT_BAD_INPUT,
    Parser,
    Progress,
    UsageError,
    asked_rate,
    plural,
)
from .conversion import add_convert, cmd_convert  # noqa: F401 (re-exported)
from .encode_dataset import add_encode_dataset, cmd_encode_dataset  # noqa: F401 (re-exported)
from .encode_decode import (  # noqa: F401 (re-exported)
    add_decode,
    add_encode,
    add_info,
    add_sample,
    cmd_decode,
    cmd_decode_1d,
    cmd_encode,
    cmd_encode_1d,
    cmd_info,
    cmd_sample,
)
from .options import (  # noqa: F401 (re-exported)
    RATE_HELP,
    add_layout_options,
    add_model_options,
    add_preset_option,
    add_rate_control_options,
    add_tokenize_options,
)
from .quality import (  # noqa: F401 (re-exported)
    add_calibrate,
    add_demo,
    add_eval,
    add_reconstruct,
    add_viz,
    cmd_calibrate,
    cmd_demo,
    cmd_eval,
    cmd_reconstruct,
    cmd_viz,
)
from .training import add_train, cmd_train, cmd_train_registers  # noqa: F401 (re-exported)


def add_commands(sub) -> None:
    """The commands of one video or file at a time, in the order `infotok --help` lists them."""
    for add in (
        add_encode,
        add_decode,
        add_reconstruct,
        add_viz,
        add_info,
        add_sample,
        add_eval,
        add_calibrate,
        add_convert,
        add_demo,
    ):
        add(sub)


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
        from ..names import PRESETS

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
        from ..extras import MissingExtra, describe

        message = str(exc) if isinstance(exc, MissingExtra) else describe(exc, f"`infotok {args.command}`")
        if message is None or os.environ.get("INFOTOK_DEBUG"):
            raise
        print(f"infotok: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the library's own errors, imported here: `--help` and `info` start without torch
        from ..checkpoint import CheckpointError
        from ..tokens import TokenFormatError
        from ..video import VideoError

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
