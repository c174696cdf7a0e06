"""`infotok train`: base, InfoTok, predictor, latents and registers runs, options to `TrainConfig`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import UsageError, _positive


def cmd_train(args) -> int:
    if args.kind in ("latents", "registers"):
        return cmd_train_registers(args)
    if args.kind == "prior":
        return cmd_train_prior(args)
    from ..train import TrainConfig, Trainer

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
            "base_init",
        )
        if getattr(args, key) is not None
    }
    settings |= {
        "selection": args.train_selection,
        "rate_sampling": args.rate_sampling,
        "freeze_base": args.freeze_base,
    }
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
    from .. import train_registers as tr

    if args.kind == "latents":
        from ..data import training_videos

        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} exists; pass --overwrite to encode again")
        print(json.dumps({"latents": str(tr.build_latents(training_videos(args.data), args.init, out))}))
        return 0
    settings = _small_run_settings(args, "register_config", "registers")
    if args.mixed_precision:
        settings["mixed_precision"] = args.mixed_precision
    cfg = tr.RegisterTrainConfig(
        latents=args.latents, out=args.out, seed=args.seed, name=args.name or "infotok-1d", **settings
    )
    return _run_small(tr.RegisterTrainer(cfg, progress=(lambda line: None) if args.quiet else print), args)


def cmd_train_prior(args) -> int:
    """`train prior`: the token prior on shard folders of tokenized training videos (grid tokens: the prior that
    codes files; 1D tokens: the sequence prior that measures them)."""
    from .. import train_prior as tp

    if not args.shards:
        raise UsageError("train prior needs --shards: folders written by `infotok encode-dataset` or `infotok encode`")
    settings = _small_run_settings(args, "prior_config", "prior")
    try:
        one_d = tp.shards_layout(args.shards) == "1d"
        config, trainer = (
            (tp.SequencePriorTrainConfig, tp.SequencePriorTrainer) if one_d else (tp.PriorTrainConfig, tp.PriorTrainer)
        )
        cfg = config(shards=args.shards, out=args.out, seed=args.seed, init=args.init or "", **settings)
        cfg.name = args.name or cfg.name
        cfg.check()
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    return _run_small(trainer(cfg, progress=(lambda line: None) if args.quiet else print), args)


def _small_run_settings(args, json_option: str, field: str) -> dict:
    """The options a small trainer's config takes (`train registers` / `train prior`), as its fields."""
    settings = {
        key: getattr(args, key)
        for key in ("steps", "batch", "lr", "warmup", "ema", "checkpoint_every", "log_every", "time_limit")
        if getattr(args, key) is not None
    }
    if getattr(args, json_option):
        try:
            settings[field] = json.loads(getattr(args, json_option))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--{json_option.replace('_', '-')} is not valid JSON ({exc})") from None
    return settings


def _run_small(trainer, args) -> int:
    """Run (or resume) a small trainer in --out and export its model folder."""
    from ..train_ema import STATE_FILE

    if (Path(args.out) / STATE_FILE).exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{args.out} holds a run; pass --resume to continue it or --overwrite to restart")
    if args.resume and not trainer.resume():
        print(f"no saved state in {args.out}; starting fresh", file=sys.stderr)
    trainer.run()
    if trainer.is_main:
        print(json.dumps({"out": args.out, "step": trainer.step, "model": str(trainer.export())}))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # tears the process group down before exit
    return 0


def add_train(sub) -> None:
    from ..train_config import TrainConfig

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
        choices=["base", "infotok", "predictor", "latents", "registers", "prior"],
        help="base: fixed-rate tokenizer; infotok: Flex fine-tuning; predictor: the value predictor alone "
        "(token values and rate-distortion curves) on a frozen InfoTok checkpoint; latents: the base codes of "
        "--data's clips into the .npz --out (base from --init, default InfoTok-Flex); registers: the 1D "
        "layout on --latents; prior: the token prior (entropy coding, `infotok encode --entropy prior`) on --shards",
    )
    p.add_argument("--data", nargs="*", default=[], help="video files or folders (default: synthetic clips only)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--init", help="checkpoint folder to start from (required for `infotok`; prior: a prior folder)")
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
        "--shards",
        nargs="*",
        default=[],
        help="prior: shard folders of `infotok encode-dataset`, or folders of `.itok` files (`infotok encode`: "
        "windows that continue each other, the default, need these)",
    )
    p.add_argument("--prior-config", help="prior: JSON of PriorConfig fields, e.g. '{\"channels\": 64}'")
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
    p.add_argument(
        "--freeze-base",
        action="store_true",
        help="infotok: the base (encoder, FSQ, decoder) stays as it is and only the stacks train, so a 1D "
        "checkpoint made on it still loads (it names the base's hash)",
    )
    p.add_argument(
        "--base-init",
        help="infotok: take the base's tensors from this checkpoint (e.g. a longer-trained checkpoints/base) under "
        "--init's stacks; their output projections and held-code embedding restart at zero, so training starts "
        "from that base's exact decoding",
    )
    p.add_argument("--name", help="model name stored in the checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and rate draws (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
