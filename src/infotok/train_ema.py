"""What the small single-process trainers share (`train registers`, `train prior`): AdamW with warm-up and a
cosine schedule that follows steps or seconds, an EMA of the weights (what is exported), and a resumable state
file (safetensors: weights, EMA, optimizer moments, step, seconds and the data generator's state).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

STATE_FILE = "train_state.safetensors"


class EmaTrainer:
    """Subclasses set `self.model` (an nn.Module) before calling `setup`, and `run` their own loop, calling
    `optimizer_step(loss)` once a step and `save()` at checkpoints. `cfg` needs the fields steps, lr, min_lr_ratio,
    warmup, weight_decay, ema, time_limit and seed."""

    no_decay: tuple[str, ...] = ()  # parameter names (substrings) kept out of weight decay besides biases and norms

    def setup(self, cfg, model: nn.Module, device: torch.device, progress=print) -> None:
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
        self.generator = torch.Generator().manual_seed(cfg.seed)

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
        from safetensors.torch import save

        from .files import atomic_write

        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        tensors |= {f"ema.{k}": v.contiguous() for k, v in self.ema.items()}
        for i, group in enumerate(self.opt.state_dict()["state"].values()):
            for key, value in group.items():
                tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).contiguous()
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
        self.generator.set_state(torch.tensor(json.loads(meta["rng"]), dtype=torch.uint8))
        return True
