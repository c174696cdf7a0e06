"""The option groups several commands take: how rates and tokens are chosen, rate control, the model, the layout."""

from __future__ import annotations

from ..spec import DEFAULT_REFRESH
from .common import DEFAULT_SIZE, _guidance, _positive, _rate, _size, _target

RATE_HELP = (
    "average token rate in [1/16, 1] (default {default}). Under the default strategy (rd, hold fill) each "
    "window gets the drift threshold calibrated on the training clips for this rate, so the realized rate "
    "follows the content and the summary prints it; --budget run makes it exact over all inputs, "
    "--preset fixed (--strategy static) exact in every window"
)


def add_preset_option(p) -> None:
    from ..names import PRESETS

    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="default",
        help="default: the checkpoint's own choices (the shipped one: rd + drift + hold); paper: InfoTok's "
        "configuration (global_elbo + error + mask); fixed: every window exactly --rate (static). "
        "The advanced options below override a preset",
    )


def add_tokenize_options(p, rate_default: float = 0.5, rate_type=_rate) -> None:
    from ..names import FILLS, SELECTIONS, STRATEGIES

    p.add_argument("--rate", type=rate_type, help=RATE_HELP.format(default=rate_default))
    add_preset_option(p)
    advanced = p.add_argument_group("advanced: how rates and tokens are chosen (a --preset sets these)")
    advanced.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="how each window's rate is chosen (default: rd under --fill hold where the checkpoint is "
        "calibrated for it, as the shipped one is, else global_elbo; rd: equal rate-distortion slopes, "
        "on the codes' drift under hold, on the value predictor's curves under mask; uniform: the "
        "data-agnostic peer, for comparisons)",
    )
    p.set_defaults(rate_default=rate_default)
    advanced.add_argument(
        "--selection",
        choices=SELECTIONS,
        help="which tokens are kept (default: drift under --fill hold; under mask, value where the "
        "checkpoint has a value predictor, else error; order (ElasticTok's tail dropping), temporal and "
        "random: peers, for comparisons)",
    )
    advanced.add_argument(
        "--fill",
        choices=FILLS,
        help="how dropped tokens decode: hold (the code last kept at that position; the shipped "
        "checkpoint's default) or mask (the paper's: the decompressor infers them; the default of "
        "converted release weights and of --target-psnr)",
    )
    p.add_argument("--window", type=int, default=33, help="frames per window (default 33)")
    p.add_argument(
        "--overlap",
        type=int,
        default=1,
        help="frames shared by neighbouring windows (default 1: each window starts on the last frame of the one "
        "before; 5 costs about 10%% more tokens at equal PSNR on long clips, BENCHMARKS_LONG.md)",
    )
    p.add_argument(
        "--refresh",
        type=_positive,
        metavar="N",
        help="under --fill hold and drift selection (the defaults), windows continue each other: a position "
        "that does not change costs no token after the first window, and every Nth window starts afresh "
        "(like a codec's key frame: a decode of any window starts at most N-1 windows back; default "
        f"{DEFAULT_REFRESH}, BENCHMARKS_LONG.md); 1: independent windows",
    )
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
    add_key_density_option(advanced)


def add_key_density_option(p, calibrating: bool = False) -> None:
    from ..fill import KEY_DENSITIES, SPARSE_KEY_DENSITY

    default = (
        f"{SPARSE_KEY_DENSITY:g} where the checkpoint fills in dropped positions, else 1"
        if calibrating
        else "the checkpoint's: the one its rd thresholds were calibrated with, 0.25 for the shipped one"
    )
    p.add_argument(
        "--key-density",
        type=float,
        choices=KEY_DENSITIES,
        help="under --fill hold and drift selection: the share of a window's first latent frame kept whatever it "
        "shows (1: all of it; 0.5: a checkerboard; 0.25: every other row and column); elsewhere a position is "
        "kept where its code differs from what that lattice suggests, like any token, and the decompressor "
        f"fills in the rest, so more of a low rate goes to the frames after it (default: {default}; "
        "docs/RATE_CONTROL.md)",
    )


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


def add_guidance_option(group) -> None:
    group.add_argument(
        "--guidance",
        type=_guidance,
        default=1.0,
        help="1d: the flow decoder's classifier-free guidance (default 1: none; 2 sharpens at twice the flow's work, "
        "docs/LAYOUT_1D.md)",
    )


def add_prior_option(p, what: str) -> None:
    p.add_argument(
        "--prior",
        metavar="DIR",
        help=f"token prior folder (`infotok train prior`) that {what} (default: the installed prior, trained on "
        "the shipped checkpoint's tokens)",
    )
