"""`infotok convert`: the InfoTok release's or a Cosmos tokenizer's checkpoint -> our checkpoint folder."""

from __future__ import annotations

from pathlib import Path

from .common import _positive


def cmd_convert(args) -> int:
    from ..convert import convert_cosmos_jit, convert_release

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


def add_convert(sub) -> None:
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
