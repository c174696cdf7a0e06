"""`infotok encode`, `decode` and `info`: videos to `.itok` files and back, and what a file holds."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .common import (
    EXIT_BAD_INPUT,
    Progress,
    UsageError,
    _check_grid_rate,
    _expected_windows,
    _inputs,
    _load_1d,
    _load_model,
    _load_prior,
    _one_d_options,
    _outputs,
    _positive,
    _print_summary,
    _rate_control,
    _run_many,
    _share,
    _specs,
    plural,
)
from .options import (
    add_guidance_option,
    add_layout_options,
    add_model_options,
    add_prior_option,
    add_rate_control_options,
    add_tokenize_options,
)


def cmd_encode(args) -> int:
    from ..pipeline import encode_file

    if args.layout == "1d":
        return cmd_encode_1d(args)
    _check_grid_rate(args)
    spec, windowing = _specs(args)
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".itok", args.overwrite)
    model = _load_model(args)
    prior = _load_prior(args) if args.entropy == "prior" else None
    if prior is not None and not prior.config.continuing and args.refresh is None:
        spec = replace(spec, refresh=1)  # a prior that never saw continuing windows codes them poorly
    specs = _rate_control(args, inputs, model, spec, windowing)

    def job(src: Path, dst: Path) -> None:
        bar = Progress(_expected_windows(src, args), f"encode {src.name}")
        try:
            result = encode_file(model, src, dst, args.overwrite, lambda w: bar.update(), specs[src], windowing, prior)
        finally:
            bar.close()
        _print_summary(src, dst, result, args)

    return _run_many(inputs, outputs, job, "encode")


def cmd_encode_1d(args) -> int:
    from .. import layout1d

    if args.entropy != "zlib":
        raise UsageError("--entropy prior codes grid files; 1D files are stored with zlib")
    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, ".itok", args.overwrite)
    model = _load_1d(args)
    _, windowing = _specs(args)

    def job(src: Path, dst: Path) -> None:
        out = layout1d.encode_file(model, src, dst, args.overwrite, **_one_d_options(args, windowing))
        h, ledger = out.header, out.ledger(file_bytes=dst.stat().st_size)
        print(
            f"{src} -> {dst}: {h.num_frames} frames {h.width}x{h.height}, {plural(len(out.windows), 'window')} of "
            f"{'/'.join(str(k) for k in sorted({w.kept for w in out.windows}))} tokens (1D layout; {ledger.kept} "
            f"tokens, rate {h.avg_rate:.4f} of the grid's; {ledger.tokens_per_second:.0f} tokens and "
            f"{ledger.file_bits_per_second / 1000:.1f} kbit per second of video)"
        )

    return _run_many(inputs, outputs, job, "encode")


def cmd_decode(args) -> int:
    from ..pipeline import decode_file
    from ..tokens import TOKEN_SUFFIX, TokenReader, window_count

    inputs = _inputs(args.inputs, suffixes={TOKEN_SUFFIX})
    outputs = _outputs(inputs, args.output, ".mp4", args.overwrite)
    prior = _load_prior(args) if args.prior else None
    with TokenReader(inputs[0], prior) as reader:
        layout = reader.header.layout
    if layout == "1d":
        return cmd_decode_1d(args, inputs, outputs)
    if args.tokens is not None or args.steps or args.guidance != 1:
        raise UsageError("--tokens, --steps and --guidance decode 1D-layout files; this one is a grid file")
    model = _load_model(args)

    def job(src: Path, dst: Path) -> None:
        with TokenReader(src, prior) as reader:
            total = window_count(reader.header)
        bar = Progress(total, f"decode {src.name}")
        try:
            header, _ = decode_file(
                model,
                src,
                dst,
                args.lossless,
                lambda w: bar.update(),
                start=args.start,
                max_frames=args.max_frames,
                prior=prior,
            )
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
        frames = min(args.max_frames or header.num_frames, header.num_frames - args.start)
        last = args.start + frames - 1
        segment = f" (frames {args.start}-{last} of {header.num_frames})" if frames < header.num_frames else ""
        print(f"{src} -> {dst}: {frames} frames{segment} {header.width}x{header.height} at {header.fps:g} fps{padded}")

    return _run_many(inputs, outputs, job, "decode")


def cmd_decode_1d(args, inputs: list[Path], outputs: list[Path]) -> int:
    from .. import layout1d

    model = _load_1d(args)

    def job(src: Path, dst: Path) -> None:
        from ..registers import guided

        out = layout1d.decode_file(
            model,
            src,
            dst,
            args.tokens,
            args.steps,
            args.seed,
            args.lossless,
            args.start,
            args.max_frames,
            args.guidance,
        )
        how = (
            f"flow decoder, {args.steps} steps, seed {args.seed}{guided(args.guidance)}"
            if args.steps
            else "regression decoder"
        )
        print(f"{src} -> {dst}: {out.header.num_frames} frames from {out.windows[0].kept} tokens a window ({how})")

    return _run_many(inputs, outputs, job, "decode")


def cmd_info(args) -> int:
    from ..tokens import TOKEN_SUFFIX, TokenFormatError, describe

    status = 0
    prior = _load_prior(args) if args.prior else None
    for item in _inputs(args.inputs, suffixes={TOKEN_SUFFIX}):
        try:
            info = describe(item, prior)
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


def cmd_sample(args) -> int:
    from ..sample import sample_tokens
    from ..spec import Windowing
    from ..video import check_video_output, write_video

    out = check_video_output(args.output)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    model, prior = _load_model(args), _load_prior(args)
    prompt = None
    if args.video:
        prompt = model.tokenize(args.video, max_frames=Windowing().window)  # its first window
    width, height = args.size
    tokens = sample_tokens(model, prior, args.windows, prompt, (width, height), seed=args.seed)
    write_video(out, model.iter_detokenize(tokens.header, tokens.windows), fps=tokens.header.fps)
    if args.tokens:
        tokens.save(args.tokens, overwrite=args.overwrite)
    h, drawn = tokens.header, len(tokens.windows) - (1 if prompt else 0)
    print(
        f"{out}: {h.num_frames} frames {h.width}x{h.height}, {plural(drawn, 'window')} drawn from prior {prior.hash} "
        f"(seed {args.seed}){' after the first window of ' + str(args.video) if prompt else ''}; "
        f"{tokens.ledger().kept} tokens"
    )
    return 0


def add_encode(sub) -> None:
    p = sub.add_parser("encode", help="video(s) -> .itok token file(s)")
    p.add_argument("inputs", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="FILE.itok for one input, a folder for several")
    add_tokenize_options(p, rate_type=_share)
    add_rate_control_options(p)
    add_model_options(p)
    add_layout_options(p)
    entropy = p.add_argument_group("entropy coding")
    entropy.add_argument(
        "--entropy",
        choices=["zlib", "prior"],
        default="zlib",
        help="how the file stores the kept tokens: zlib (16 bits a code, zlib-packed; default) or prior "
        "(range-coded with a learned prior over the tokens, lossless; the file names the prior it needs; "
        "under a prior trained on independent windows only, windows start afresh unless --refresh says otherwise)",
    )
    add_prior_option(entropy, "codes the file with --entropy prior")
    p.set_defaults(func=cmd_encode)


def add_decode(sub) -> None:
    p = sub.add_parser("decode", help=".itok token file(s) -> video")
    p.add_argument("inputs", nargs="+", help=".itok files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 for one input, a folder for several")
    p.add_argument("--lossless", action="store_true", help="store the decoded frames exactly (large file)")
    p.add_argument(
        "--start", type=int, default=0, help="first frame to decode (default 0): only the windows that hold the "
        "segment are decoded",
    )  # fmt: skip
    p.add_argument("--max-frames", type=_positive, help="decode at most this many frames (default: to the end)")
    add_model_options(p)
    layout = p.add_argument_group("1D-layout files")
    layout.add_argument("--tokens", type=_positive, help="decode each window's first N tokens only (no re-encoding)")
    layout.add_argument(
        "--steps", type=int, default=0, help="0: regression decoder (default); N: the flow decoder in N steps"
    )
    layout.add_argument("--seed", type=int, default=0, help="seed of the flow decoder's noise (default 0)")
    add_guidance_option(layout)
    add_prior_option(p, "decodes prior-coded files")
    p.set_defaults(func=cmd_decode)


def add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="a new video drawn from the token prior, decoded by the tokenizer",
        description="Windows of tokens drawn one after another from a token prior (`infotok train prior`), "
        "decoded with the checkpoint: unconditional, or continuing the first window of --video.",
    )
    p.add_argument("-o", "--output", required=True, help="OUT.mp4")
    p.add_argument("--windows", type=_positive, default=2, help="windows of 33 frames in all (default 2)")
    p.add_argument("--video", help="continue this video's first window (tokenized at short side 256)")
    p.add_argument(
        "--size", type=_frame_size, default=(256, 256), help="WIDTHxHEIGHT without --video (default 256x256)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--tokens", help="also save the drawn tokens as this .itok")
    add_prior_option(p, "draws the windows")
    add_model_options(p)
    p.set_defaults(func=cmd_sample)


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 256x256, got {text!r}") from None
    if width < 8 or height < 8 or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"width and height must be multiples of 8, at least 8, got {text!r}")
    return width, height


def add_info(sub) -> None:
    p = sub.add_parser("info", help="header, token counts and real vs nominal bits of .itok files")
    p.add_argument("inputs", nargs="+", help=".itok files, folders or glob patterns")
    p.add_argument("--json", action="store_true", help="print one JSON object per file instead of a table")
    add_prior_option(p, "decodes prior-coded files; given for a zlib file, it codes its tokens to show what "
                     "--entropy prior would take (prior_bpp16, beside the real and nominal BPP16)")  # fmt: skip
    p.set_defaults(func=cmd_info)
