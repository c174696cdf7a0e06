"""Training loop (through accelerate): base tokenizer, or InfoTok-Flex fine-tuning (Algorithm 1).

Everything needed to resume lives in `<out>/train_state.safetensors` + `train_state.json` (raw
weights, EMA, AdamW moments, step, RNG); the data position is the step itself because dataset
item k is a pure function of (seed, k). Checkpoints are written atomically, so a run killed at any
moment resumes from its last complete checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from .base import BaseConfig
from .calibration import Calibration
from .compressor import CompressorConfig
from .data import ResumableSampler, VideoClipDataset, prepare_cache, training_videos
from .extras import require
from .files import atomic_write, save_tensors
from .metrics import psnr_from_mse
from .model import InfoTok
from .predictor import PredictorConfig
from .selection import MIN_RATE
from .train_config import TrainConfig

FLEX_RATES = (1.0, 0.75, 0.5, 0.25)
# `--train-selection value`: how each window's mask is drawn (the rest of the windows teach the
# decompressor to fill in after other kinds of drops, and give the value predictor its targets)
VALUE_MIX = {"value": 0.5, "random": 0.25, "error": 0.25}
# `--train-selection drift` (the decoding side alone learns the hold fill): half the windows drift-
# selected and decoded under hold, the rest under mask so that it keeps working (value: random
# where the checkpoint has no value predictor)
DRIFT_MIX = {"drift": 0.5, "value": 0.25, "random": 0.25}
PREDICTOR_WEIGHT = 0.01  # small enough that the predictor's gradients never dominate the clipped norm
LOG_FIELDS = ["step", "loss", "psnr", "lr", "rate", "score_ema", "frames_per_s", "elapsed_s"]


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine from lr to lr * min_lr_ratio over the steps (or the time limit's
    `time_fraction`, when that is further along)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_model(cfg: TrainConfig) -> InfoTok:
    """The model a run starts from: `init` as it is, or grown by what the run adds (a compressor on
    a base, changed compressor fields, a value predictor, the held-code embedding of `drift` runs);
    only the added parameters are new."""
    if not cfg.init:
        return InfoTok(BaseConfig(**cfg.base), None, name=cfg.name or "infotok-base")
    init = InfoTok.from_pretrained(cfg.init)
    if cfg.kind == "base":
        init.name = cfg.name or init.name
        return init
    if cfg.kind == "predictor" and not init.adaptive:
        raise ValueError(f"{cfg.init} is a fixed-rate base tokenizer: a value predictor needs an InfoTok checkpoint")
    if init.adaptive:
        compressor = type(init.compressor_config).from_dict(init.compressor_config.to_dict() | cfg.compressor)
    else:
        compressor = CompressorConfig(**cfg.compressor)
    predictor = init.predictor_config
    if cfg.predictor or (predictor is None and (cfg.selection == "value" or cfg.kind == "predictor")):
        predictor = PredictorConfig.from_dict((predictor.to_dict() if predictor else {}) | cfg.predictor)
    drift = cfg.selection == "drift"
    if drift and not init.adaptive:
        raise ValueError(
            f"{cfg.init} is a fixed-rate base tokenizer: --train-selection drift fine-tunes an InfoTok checkpoint"
        )
    model = InfoTok(
        init.base.config,
        compressor,
        score_mean=float(init.score_mean),
        name=cfg.name or (init.name if init.adaptive else "infotok-flex"),
        dropped=init.dropped_mode,
        predictor=predictor,
        held=drift or init.held is not None,
    )
    unexpected = model.load_state_dict(init.state_dict(), strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{cfg.init} holds weights the new model has no place for: {', '.join(unexpected[:5])}")
    if cfg.base_init:
        put_base_under_stacks(model, InfoTok.from_pretrained(cfg.base_init).base, cfg.base_init)
    # the key density stays: drift windows are selected with the sparse key frames `infotok encode` makes
    model.calibration = Calibration(rd_slopes=init.calibration.rd_slopes, key_density=init.calibration.key_density)
    # drift runs train the decoding side alone: codes, rankings and calibrations stay as they were; `freeze_base`
    # keeps the whole base as well, so a 1D checkpoint made on this base (it names the base's hash) still loads
    frozen_modules = [*(model.encoding_modules() if drift else []), *([model.base] if cfg.freeze_base else [])]
    frozen = {id(p) for m in frozen_modules for p in m.parameters()}
    for name, p in model.named_parameters():  # what a run does not train has no gradient (distributed runs need that)
        predictor_part = name.startswith("predictor.")
        p.requires_grad_(
            id(p) not in frozen
            and (predictor_part if cfg.kind == "predictor" else not predictor_part or cfg.selection == "value")
        )
    return model


@torch.no_grad()
def put_base_under_stacks(model: InfoTok, base: torch.nn.Module, source: str) -> None:
    """A better-trained base under stacks trained on another: the stacks' residual outputs and the held-code
    embedding restart at zero (each stack is then the identity), so the model decodes exactly as `base` at rate
    1 and under `hold`, and training adapts the stacks' trained layers to the new base's features."""
    if base.config != model.base.config:
        raise ValueError(f"{source}: its base ({base.config}) is not the architecture of --init's base")
    if not isinstance(model.compressor_config, CompressorConfig):
        raise ValueError("--base-init restarts this project's stacks; --init holds the release's")
    model.base.load_state_dict(base.state_dict())
    for stack in (model.compressor, model.decompressor):
        stack.restart_as_identity()
    if model.held is not None:
        model.held.zero_()


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def step_rates(cfg: TrainConfig, step: int, total: int) -> list:
    """Algorithm 1's rate per clip of a step's global batch of `total` clips, drawn from (seed, step), so a
    run on N processes trains on the same rates as one process with an N times larger batch. Under
    `elbo` they are averages that the model's forward turns into each clip's global_elbo rate."""
    rng = np.random.default_rng([cfg.seed, 7, step])
    if cfg.kind == "predictor":
        return [[int(k) / 16 for k in rng.integers(1, 17, cfg.predictor_points)] for _ in range(total)]
    if cfg.rate_sampling == "uniform":
        return [float(rng.uniform(MIN_RATE, 1.0)) for _ in range(total)]
    if cfg.rate_sampling == "grid":
        return [int(rng.integers(1, 17)) / 16 for _ in range(total)]
    return [float(rng.choice(FLEX_RATES)) for _ in range(total)]


def step_selections(cfg: TrainConfig, step: int, total: int, predictor: bool) -> str | list[str]:
    """The selection of each clip of a step's global batch: `value` runs mix VALUE_MIX and `drift` runs
    DRIFT_MIX, drawn from (seed, step) like the rates (value becomes random without a predictor)."""
    if cfg.selection not in ("value", "drift"):
        return cfg.selection
    mix = VALUE_MIX if cfg.selection == "value" else DRIFT_MIX
    drawn = np.random.default_rng([cfg.seed, 11, step]).choice(list(mix), size=total, p=list(mix.values()))
    return [str(s) for s in (drawn if predictor else np.where(drawn == "value", "random", drawn))]


def this_process(drawn: list, accelerator, batch: int) -> list:
    """This process's `batch` of values drawn for the whole global batch."""
    first = batch * accelerator.process_index
    return list(drawn[first : first + batch])


class EMA:
    """Exponential moving average of a model's parameters, in fp32 on the parameters' device.

    Updated with one fused lerp over all parameters per step (no state-dict walk); buffers (the
    calibrated score mean) are not averaged: the live model's are exported with the weights.
    """

    def __init__(self, model: torch.nn.Module):
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]

    def to(self, device: torch.device) -> "EMA":
        self.shadow = [t.to(device) for t in self.shadow]
        return self

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in model.parameters()], 1 - decay)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t.detach().cpu().contiguous() for n, t in zip(self.names, self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """From `tensors()`'s keys; states written before buffers were left out carry those too."""
        device = self.shadow[0].device if self.shadow else "cpu"
        self.shadow = [tensors[f"ema.{n}"].float().to(device) for n in self.names]

    def state_dict_of(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters in place of the live ones."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state |= {n: t.to(state[n].dtype) for n, t in zip(self.names, self.shadow)}
        return state


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        Accelerator = require("accelerate", "training").Accelerator

        self.cfg = cfg.check()
        self.out = Path(cfg.out)
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        self.ema = EMA(self.model)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.step = 0
        self.trained_s = 0.0  # training seconds of earlier sessions of this run (for time_limit)
        self.score_ema = float(self.model.score_mean)
        self.progress = progress

    @classmethod
    def open(
        cls,
        cfg: TrainConfig,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        steps: int | None = None,
    ) -> tuple["Trainer", bool]:
        """A trainer for `cfg.out`: with `resume`, the run saved there continues under its own saved
        settings (`steps` may set a new total); an existing run is never restarted without
        `overwrite`. Returns (trainer, whether a saved state was resumed)."""
        meta = Path(cfg.out, "train_state.json")
        if resume and meta.exists():
            cfg = TrainConfig(**json.loads(meta.read_text())["config"])
            cfg.steps = steps or cfg.steps
        elif meta.exists() and not overwrite:
            raise FileExistsError(
                f"{cfg.out} already holds a run; pass --resume to continue it or --overwrite to restart"
            )
        trainer = cls(cfg, progress=progress)
        return trainer, resume and trainer.resume()

    # ------------------------------------------------------------------------ state on disk
    def save(self) -> None:
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors |= self.ema.tensors()
        tensors |= _optimizer_tensors(self.opt)
        tensors["rng.torch"] = torch.get_rng_state()
        progress = {"step": str(self.step), "score_ema": repr(self.score_ema), "trained_s": repr(self._trained())}
        meta = {
            "step": self.step,
            "score_ema": self.score_ema,
            "trained_s": self._trained(),
            "config": asdict(self.cfg),
        }
        # the tensors carry their own step, so a crash between the two writes cannot pair them with
        # another step; the JSON (config, and the step for people) follows
        save_tensors(self.out / "train_state.safetensors", tensors, progress)
        atomic_write(self.out / "train_state.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
        self.export(self.out / "model")

    def export(self, directory: Path) -> None:
        """The EMA weights as a self-describing model checkpoint folder."""
        model = self.accelerator.unwrap_model(self.model)
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.ema.state_dict_of(model))
        model.score_mean.fill_(self.score_ema)
        model.save_pretrained(directory, extra={"trained_steps": self.step, "train_config": asdict(self.cfg)})
        model.load_state_dict(live)

    def resume(self) -> bool:
        state_file, meta_file = self.out / "train_state.safetensors", self.out / "train_state.json"
        if not (state_file.exists() and meta_file.exists()):
            return False
        with safe_open(str(state_file), "pt") as f:  # one read: the tensors and the step they belong to
            progress = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "step" not in progress:  # states written before the step moved into the tensors' file
            progress = json.loads(meta_file.read_text())
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load(tensors)
        _load_optimizer(self.opt, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        self.step, self.score_ema = int(progress["step"]), float(progress["score_ema"])
        self.trained_s = float(progress.get("trained_s", 0.0))
        return True

    def _trained(self) -> float:
        """Seconds trained by this run so far, over all its sessions."""
        return self.trained_s + (time.time() - self.t0 if getattr(self, "t0", None) else 0.0)

    def _time_fraction(self) -> float:
        """How far along time_limit this process is (0 without one)."""
        return self._trained() / self.cfg.time_limit if self.cfg.time_limit else 0.0

    # ------------------------------------------------------------------------------- loop
    def _log(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._log_fields())
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _log_fields(self) -> list[str]:
        """log.csv's columns; runs that train the value predictor also log its loss."""
        return LOG_FIELDS + (["predictor_loss"] if self._trains_predictor() else [])

    def _trains_predictor(self) -> bool:
        return self.cfg.selection == "value" or self.cfg.kind == "predictor"

    def _truncate_log(self) -> None:
        """After a resume, drop log rows past the resumed step (written after the last checkpoint)."""
        path = self.out / "log.csv"
        if not path.exists():
            return
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._log_fields())
            writer.writeheader()
            writer.writerows(rows)

    def _rates(self, batch: int) -> list[float] | None:
        """This process's share of the step's rates (`step_rates`); None for a fixed-rate base."""
        if not self.accelerator.unwrap_model(self.model).adaptive:
            return None
        drawn = step_rates(self.cfg, self.step, batch * self.accelerator.num_processes)
        return this_process(drawn, self.accelerator, batch)

    def _selections(self, batch: int) -> str | list[str]:
        """This process's share of the step's selections (`step_selections`)."""
        predictor = self.accelerator.unwrap_model(self.model).predictor_config is not None
        drawn = step_selections(self.cfg, self.step, batch * self.accelerator.num_processes, predictor)
        return drawn if isinstance(drawn, str) else this_process(drawn, self.accelerator, batch)

    def run(self, on_step=None) -> None:
        """Train to cfg.steps. On N processes, step k's global batch is dataset items
        [k * N * batch, (k + 1) * N * batch): accelerate hands process i the i-th `batch` of them, so
        the run sees the items (and, from `_rates`, the rates) of one process with an N times larger
        batch, and elongated crops share a shape across the global batch."""
        cfg, acc = self.cfg, self.accelerator
        paths = training_videos(cfg.data) if cfg.data else []
        if paths and cfg.cache:
            with acc.main_process_first():  # one process encodes the cache, the others then reuse it
                paths = prepare_cache(paths, Path(cfg.cache), cfg.cache_size)
        global_batch = cfg.batch * acc.num_processes
        dataset = VideoClipDataset(
            paths,
            cfg.frames,
            cfg.crop,
            cfg.seed,
            synthetic_fraction=cfg.synthetic_fraction if paths else 1.0,
            border_fraction=cfg.border_fraction,
            still_fraction=cfg.still_fraction,
            long_side=cfg.long_side,
            long_fraction=cfg.long_fraction,
            batch=global_batch,
        )
        sampler = ResumableSampler(self.step * global_batch)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch,
            sampler=sampler,
            num_workers=cfg.workers,
            persistent_workers=cfg.workers > 0,
            prefetch_factor=2 if cfg.workers else None,
        )
        model, opt, loader = acc.prepare(self.model, self.opt, loader)
        raw = acc.unwrap_model(model)
        self.ema.to(next(raw.parameters()).device)
        if acc.is_main_process:  # files of the run: written by one process
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
            self._truncate_log()  # rows past the resumed step (all of them in a fresh or overwritten run)
        t0, frames_done, window = time.time(), 0, []
        self.t0 = t0
        time_fraction = self._time_fraction()  # agreed by every process (a mean over them), so all stop together
        bar = None
        if self.progress and acc.is_main_process:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.kind}", dynamic_ncols=True)
        for x in loader:
            if self.step >= cfg.steps or time_fraction >= 1:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(self.step, cfg, time_fraction)
            elbo_mean = self.score_ema if cfg.rate_sampling == "elbo" and self.score_ema > 0 else None
            with acc.autocast():
                y, rates, smap, predictor_loss = model(
                    x,
                    self._rates(x.shape[0]),
                    self._selections(x.shape[0]),
                    elbo_mean,
                    predictor_only=cfg.kind == "predictor",
                    train_predictor=cfg.selection == "value",
                )
            if cfg.kind == "predictor":
                loss = predictor_loss.float()
            else:
                loss = (y.float() - x).abs().mean()
                if predictor_loss is not None:
                    loss = loss + PREDICTOR_WEIGHT * predictor_loss.float()
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            self.ema.update(raw, min(cfg.ema, (1 + self.step) / (10 + self.step)))
            with torch.no_grad():  # logged figures are means over every process's share of the batch
                zero = torch.zeros((), device=x.device)
                stats = torch.stack(
                    [
                        loss.detach().float(),
                        ((y.float().clamp(-1, 1) - x) ** 2).mean(),
                        smap.mean().float() if smap is not None else zero,
                        torch.tensor(float(np.mean(rates)), device=x.device),
                        predictor_loss.detach().float() if predictor_loss is not None else zero,
                        torch.tensor(self._time_fraction(), device=x.device),
                    ]
                )
                loss_all, mse, clip_score, rate, pred_loss, time_fraction = acc.reduce(stats, "mean").tolist()
            if smap is not None:
                self.score_ema = (
                    clip_score
                    if self.score_ema <= 0
                    else cfg.score_ema * self.score_ema + (1 - cfg.score_ema) * clip_score
                )
            self.step += 1
            frames_done += x.shape[0] * x.shape[2] * acc.num_processes
            window.append((loss_all, psnr_from_mse(mse, peak=2.0), rate, pred_loss))
            last = self.step == cfg.steps or time_fraction >= 1
            if self.step % cfg.log_every == 0 or last:
                loss_m, psnr_m, rate_m, pred_m = np.mean(window, axis=0)
                row = {
                    "step": self.step,
                    "loss": f"{loss_m:.5f}",
                    "psnr": f"{psnr_m:.3f}",
                    "lr": f"{opt.param_groups[0]['lr']:.3g}",
                    "rate": f"{rate_m:.3f}",
                    "score_ema": f"{self.score_ema:.5f}",
                    "frames_per_s": f"{frames_done / (time.time() - t0):.1f}",
                    "elapsed_s": f"{time.time() - t0:.1f}",
                }
                if self._trains_predictor():
                    row["predictor_loss"] = f"{pred_m:.4f}"
                window = []
                if acc.is_main_process:
                    self._log(row)
                if bar:
                    bar.set_postfix(loss=row["loss"], psnr=row["psnr"])
            if bar:
                bar.update(1)
            if self.step % cfg.checkpoint_every == 0 or last:
                self.save()
            if on_step:
                on_step(self.step, loss_all)
        if bar:
            bar.close()
