"""`TrainConfig`: what `infotok train` runs with, checked before anything trains; importable without
torch, so the command line's help can show its defaults quickly."""

from __future__ import annotations

from dataclasses import dataclass, field

from .names import SELECTIONS

RATE_SAMPLINGS = ("flex", "uniform", "elbo", "grid")


@dataclass
class TrainConfig:
    kind: str = "base"  # "base", "infotok" or "predictor" (the value predictor alone, on a frozen model)
    data: list[str] = field(default_factory=list)
    out: str = "runs/base"
    init: str | None = None  # checkpoint to start from (required for kind=infotok)
    steps: int = 2000
    batch: int = 8
    frames: int = 17
    crop: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    ema: float = 0.999
    score_ema: float = 0.99
    selection: str = "error"  # InfoTok; "order" trains the ElasticTok-style tail-dropping baseline
    # "flex": one of FLEX_RATES per clip; "uniform": U[1/16, 1] per clip; "elbo": one of FLEX_RATES as
    # the average, turned into the clip's rate by global_elbo (the spread of rates inference produces);
    # "grid": k/16 for k uniform in 1..16 (every point of the value predictor's curve)
    rate_sampling: str = "flex"
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    synthetic_fraction: float = 0.1
    border_fraction: float = 0.0  # share of clips given static letterbox/pillarbox bars
    still_fraction: float = 0.0  # share of clips held still (wholly, or all but a moving box)
    long_side: int = 0  # elongated crops: (crop^2 / long_side) x long_side, landscape or portrait
    long_fraction: float = 0.0  # share of batches cropped that way
    workers: int = 1
    cache: str | None = "runs/cache"
    cache_size: int = 256
    mixed_precision: str = "no"  # "bf16" on CUDA
    # seconds of training (over all resumes) after which the run ends with a checkpoint; the learning
    # rate schedule then follows whichever of steps and time is further along (0: steps only)
    time_limit: float = 0.0
    base: dict = field(default_factory=dict)
    compressor: dict = field(default_factory=dict)  # with --init, overrides the checkpoint's fields
    predictor: dict = field(default_factory=dict)  # PredictorConfig fields; a predictor is added for selection=value
    predictor_points: int = 4  # kind=predictor: decodes per clip and step, each at a rate k/16 drawn uniformly
    name: str = ""
    # kind=infotok: the base (encoder, FSQ, decoder) stays as it is and only the stacks train (a 1D checkpoint
    # names its base's hash, so one made on this base keeps loading)
    freeze_base: bool = False
    # kind=infotok: the base's tensors from this checkpoint (a longer-trained base) under --init's stacks, whose
    # output projections and held-code embedding restart at zero, so the run starts decoding exactly as that base
    base_init: str = ""

    def check(self) -> "TrainConfig":
        """Refuse settings that cannot train (the CLI and the Python API refuse the same things)."""

        def bad(field_name: str, rule: str) -> ValueError:
            return ValueError(
                f"{field_name} (--{field_name.replace('_', '-')}) {rule}, got {getattr(self, field_name)!r}"
            )

        if self.kind not in ("base", "infotok", "predictor"):
            raise bad("kind", "must be 'base', 'infotok' or 'predictor'")
        if self.frames < 1 or (self.frames - 1) % 4:
            raise bad("frames", "must be 1 + 4k (e.g. 17 or 33)")
        if self.crop < 8 or self.crop % 8:
            raise bad("crop", "must be a positive multiple of 8")
        for name in ("steps", "batch", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("synthetic_fraction", "border_fraction", "long_fraction", "still_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "must be in [0, 1]")
        if self.long_fraction and (self.long_side % 8 or self.long_side < self.crop):
            raise bad("long_side", f"must be a multiple of 8 and at least crop ({self.crop})")
        if self.selection not in SELECTIONS:
            raise bad("selection", f"must be one of {', '.join(SELECTIONS)}")
        if self.rate_sampling not in RATE_SAMPLINGS:
            raise bad("rate_sampling", f"must be one of {', '.join(RATE_SAMPLINGS)}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise bad("mixed_precision", "must be no, bf16 or fp16")
        if not self.time_limit >= 0:
            raise bad("time_limit", "must be a number of seconds >= 0")
        if not (self.lr > 0 and 0 <= self.ema < 1 and self.warmup >= 0):
            raise ValueError(f"need lr > 0, 0 <= ema < 1 and warmup >= 0, got {self.lr}, {self.ema}, {self.warmup}")
        if self.freeze_base and self.kind != "infotok":
            raise bad("freeze_base", f"is for `train infotok` (the stacks on a base), not `train {self.kind}`")
        if self.base_init and self.kind != "infotok":
            raise bad("base_init", f"is for `train infotok` (a base under --init's stacks), not `train {self.kind}`")
        if self.kind in ("infotok", "predictor") and not self.init:
            raise ValueError(f"`train {self.kind}` starts from a checkpoint: pass --init <checkpoint>")
        return self
