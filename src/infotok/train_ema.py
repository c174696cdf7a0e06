"""What the small trainers share (`train registers`, `train prior`): the loop and its log, AdamW with warm-up and
a cosine schedule that follows steps or seconds, an EMA of the weights (what is exported), a resumable state file
(safetensors: weights, EMA, optimizer moments, step, seconds and each process's data generator), and accelerate
for several processes (`accelerate launch -m infotok train ...`): every process draws its own batches, their
gradients are averaged before each step, so the processes hold the same weights throughout (checked at every
checkpoint); the main process alone evaluates, logs and writes.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .extras import require

STATE_FILE = "train_state.safetensors"


class EmaTrainer:
    """Subclasses call `setup` with their model, and give the loop its data (`load_data`), one step's loss and
    training columns (`train_step`), the validation columns under the EMA weights (`evaluate`) and their names
    (`log_fields`). `cfg` needs the fields out, steps, lr, min_lr_ratio, warmup, weight_decay, ema, time_limit,
    log_every, checkpoint_every and seed."""

    no_decay: tuple[str, ...] = ()  # parameter names (substrings) kept out of weight decay besides biases and norms
    log_fields: tuple[str, ...] = ()  # the log's columns after step, seconds and lr
    train_digits = 4  # decimals of the training columns in the log

    def setup(self, cfg, model: nn.Module, device: torch.device, progress=print) -> None:
        # cpu=True only where a GPU would otherwise be taken (one accelerate state per process: keep it alike)
        self.accelerator = require("accelerate", "training").Accelerator(
            cpu=device.type == "cpu" and torch.cuda.is_available()
        )
        device = self.accelerator.device if device.type != "cpu" else device
        self.cfg, self.model, self.device, self.progress = cfg, model.to(device), device, progress
        self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        decay, rest = [], []
        for name, p in self.model.named_parameters():
            (decay if p.dim() >= 2 and not any(n in name for n in self.no_decay) else rest).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.95),
        )
        self.step, self.seconds = 0, 0.0
        self.out = Path(cfg.out)
        self.generator = torch.Generator().manual_seed(cfg.seed + self.accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def processes(self) -> int:
        return self.accelerator.num_processes

    # ---------------------------------------------------------------------- what a subclass gives
    def load_data(self) -> None:
        raise NotImplementedError

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One batch: the loss to minimise and the log's training columns (tensors, read on logged steps only: on
        a GPU reading one waits for the step)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, str]:
        """The log's validation columns, under the EMA weights (`with_ema`)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------- the loop
    def run(self) -> None:
        cfg = self.cfg
        self.load_data()
        log = self.out / "log.csv"
        fields = ["step", "seconds", "lr", *self.log_fields]
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not log.exists() or self.step == 0:
                log.write_text(",".join(fields) + "\n")
        self.model.train()
        started = time.time() - self.seconds
        while not self.done():
            loss, trained = self.train_step()
            self.optimizer_step(loss)
            self.seconds = self._elapsed(started)
            if self.is_main and (self.step % cfg.log_every == 0 or self.done()):
                row = {"step": self.step, "seconds": round(self.seconds, 1), "lr": f"{self.lr():.3g}"}
                row |= {k: f"{float(v):.{self.train_digits}f}" for k, v in trained.items()}
                row |= self.evaluate()
                with log.open("a", newline="") as f:
                    csv.DictWriter(f, fields).writerow(row)
                self.progress(" ".join(f"{k}={v}" for k, v in row.items()))
            if self.step % cfg.checkpoint_every == 0:
                self.save()
        self.save()

    def _elapsed(self, started: float) -> float:
        """Training seconds so far, the same on every process (the schedule and a time limit follow them)."""
        seconds = time.time() - started
        if self.processes > 1:
            seconds = float(self.accelerator.reduce(torch.tensor([seconds], device=self.device), "max")[0])
        return seconds

    # --------------------------------------------------------------------- schedule and step
    def fraction(self) -> float:
        by_time = self.seconds / self.cfg.time_limit if self.cfg.time_limit else 0.0
        return max(self.step / self.cfg.steps, by_time)

    def lr(self) -> float:
        cfg = self.cfg
        if self.step < cfg.warmup:
            return cfg.lr * (self.step + 1) / cfg.warmup
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, self.fraction())))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)

    def done(self) -> bool:
        return self.step >= self.cfg.steps or bool(self.cfg.time_limit and self.seconds >= self.cfg.time_limit)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.processes > 1:  # one all-reduce of every gradient, and of which processes had one
            params = list(self.model.parameters())
            used = torch.tensor([float(p.grad is not None) for p in params], device=self.device)
            grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            flat = self.accelerator.reduce(torch.cat([*grads, used]), "mean")
            *grads, used = flat.split([p.numel() for p in params] + [len(params)])
            for p, g, u in zip(params, grads, used):
                p.grad = g.view_as(p) if u > 0 else None  # unused everywhere: skipped, as by one process
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
            for k, v in self.model.state_dict().items():
                self.ema[k].lerp_(v.float(), 1 - decay) if v.is_floating_point() else self.ema[k].copy_(v)
        self.step += 1

    def with_ema(self, fn):
        """`fn()` with the EMA weights loaded (evaluation), the live ones restored after."""
        live = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        self.model.eval()
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.model.load_state_dict(live)
            self.model.train()

    # --------------------------------------------------------------------- state
    def save(self) -> None:
        """Every process calls it (it gathers their data generators and checks their weights agree); the main
        process writes."""
        from safetensors.torch import save

        from .files import atomic_write

        generators = self.generator.get_state().to(torch.int32)[None]
        if self.processes > 1:
            generators = self.accelerator.gather(generators.to(self.device)).cpu()
            sums = self.accelerator.gather(
                torch.stack([p.detach().double().sum() for p in self.model.parameters()])[None]
            )
            if not bool((sums == sums[:1]).all()):
                raise RuntimeError(
                    f"the {self.processes} training processes hold different weights at step {self.step}"
                )
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v.contiguous() for k, v in self.ema.items()}
        for i, group in enumerate(self.opt.state_dict()["state"].values()):
            for key, value in group.items():
                tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).contiguous()
        tensors["generators"] = generators.contiguous()
        meta = {
            "step": str(self.step),
            "seconds": str(self.seconds),
            "rng": json.dumps(self.generator.get_state().tolist()),
        }
        atomic_write(self.out / STATE_FILE, lambda f: f.write(save(tensors, metadata=meta)))
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))

    def resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.is_file():
            return False
        from safetensors import safe_open
        from safetensors.torch import load_file

        tensors = load_file(path, device=str(self.device))
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        state = self.opt.state_dict()
        for i, p in enumerate(state["param_groups"][0]["params"] + state["param_groups"][1]["params"]):
            if f"opt.{i}.step" in tensors:
                state["state"][p] = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        self.opt.load_state_dict(state)
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        generators = tensors.get("generators")  # one row per process (states from before it: the main's alone)
        rank = self.accelerator.process_index
        if generators is not None and len(generators) == self.processes:
            self.generator.set_state(generators[rank].cpu().to(torch.uint8))
        elif rank == 0:  # another process count: the main process goes on, the others draw afresh
            self.generator.set_state(torch.tensor(json.loads(meta["rng"]), dtype=torch.uint8))
        return True
