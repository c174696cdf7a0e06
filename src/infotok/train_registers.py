"""Training the 1D layout (`registers.RegisterTokenizer`) on the frozen base's codes.

Two steps, both run by `infotok train`:
1. `infotok train latents`: encode the training clips once with the base (short side 256, 33-frame
   windows every 16 frames, and each clip mirrored) into one `.npz` of uint16 code indices per clip.
   Small (tens of MB), so training needs no video decoding, and the codes are exactly what `infotok
   encode` computes for such windows.
2. `infotok train registers`: random 32x32-latent (256x256-pixel) crops of those windows, nested dropout
   over the registers, regression + rectified-flow losses; resumable; logs a code-space PSNR curve at
   several prefix lengths on windows of held-out training clips.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import save_tensors
from .registers import RegisterConfig, RegisterTokenizer
from .train_ema import EmaTrainer

MIRRORED = "~mirrored"  # suffix of a clip's mirrored copy in the latents file
BASE_FIELDS = ("base_hash", "base_checkpoint")  # the latents file's record of the base that made it


def code_windows(path: Path, base, size: int = 256, window: int = 33, stride: int = 16, device="cpu"):
    """Base code indices [n, t, h, w] (uint16) of `path`'s windows of `window` frames every `stride` frames at
    short side `size` (width cropped to a multiple of 8), and of the same windows mirrored."""
    from .video import center_crop, iter_frames, probe

    info = probe(path)
    scale = size / min(info.width, info.height)
    dims = (max(8, round(info.width * scale / 2) * 2), max(8, round(info.height * scale / 2) * 2))
    frames = np.stack(list(iter_frames(path, size=dims)))
    frames = center_crop(frames, frames.shape[1] // 8 * 8, frames.shape[2] // 8 * 8)
    if len(frames) < window:  # hold the last frame, as the tokenizer pads a short clip
        frames = np.concatenate([frames, np.repeat(frames[-1:], window - len(frames), axis=0)])
    starts = range(0, len(frames) - window + 1, stride)
    plain, mirrored = [], []
    with torch.no_grad():
        for s in starts:
            x = torch.from_numpy(frames[s : s + window]).permute(3, 0, 1, 2)[None].to(device)
            plain.append(base.encode(x)[0].to(torch.int32).cpu().numpy().astype(np.uint16))
            mirrored.append(base.encode(x.flip(-1))[0].to(torch.int32).cpu().numpy().astype(np.uint16))
    return np.stack(plain), np.stack(mirrored)


def build_latents(videos: list[Path], checkpoint: str | None, out: Path, progress=print) -> Path:
    """Encode `videos` with the base of `checkpoint` (default: the shipped InfoTok-Flex) into `out` (.npz)."""
    from .checkpoint import tensor_hash
    from .files import atomic_write
    from .model import InfoTok

    model = InfoTok.from_pretrained(checkpoint)
    # which base made these codes: a 1D checkpoint trained on them decodes through that base only
    source = "" if checkpoint is None else str(Path(checkpoint).resolve())
    arrays = {"base_hash": np.array(tensor_hash(model.base.state_dict())), "base_checkpoint": np.array(source)}
    for path in videos:
        plain, mirrored = code_windows(path, model.base)
        arrays[path.stem], arrays[path.stem + MIRRORED] = plain, mirrored
        progress(f"{path.name}: {len(plain)} windows of {tuple(plain.shape[1:])} latents")
    atomic_write(out, lambda f: np.savez(f, **arrays))
    return out


@dataclass
class RegisterTrainConfig:
    latents: str = "runs/latents.npz"
    out: str = "runs/registers"
    steps: int = 20000
    batch: int = 64
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup: int = 500
    weight_decay: float = 0.05
    ema: float = 0.999
    # seconds of training (over all resumes) after which the run ends with a checkpoint; the learning rate
    # schedule follows whichever of steps and time is further along (0: steps only)
    time_limit: float = 0.0
    log_every: int = 50
    checkpoint_every: int = 1000
    crop: int = 32  # latents per side of a training crop (32: 256x256 pixels)
    held_out: int = 3  # clips (last by name) whose windows are the validation set, never trained on
    seed: int = 0
    mixed_precision: str = "no"  # "bf16" on CUDA
    registers: dict = field(default_factory=dict)  # RegisterConfig fields
    name: str = "infotok-1d"

    def check(self) -> "RegisterTrainConfig":
        if self.steps < 1 or self.batch < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch, log_every and checkpoint_every must be positive")
        if not (self.lr > 0 and 0 <= self.ema < 1 and self.time_limit >= 0):
            raise ValueError(
                f"need lr > 0, 0 <= ema < 1, time_limit >= 0, got {self.lr}, {self.ema}, {self.time_limit}"
            )
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        RegisterConfig.from_dict(self.registers)
        return self


class LatentWindows:
    """The latents file's windows as tensors on `device`; draws random crops of the model's latent grid."""

    def __init__(self, path: str | Path, frames: int, crop: int, held_out: int, device: torch.device):
        with np.load(path) as data:
            clips = sorted({k.removesuffix(MIRRORED) for k in data.files if k not in BASE_FIELDS})
            self.base_hash, self.base_checkpoint = (str(data[k]) if k in data.files else "" for k in BASE_FIELDS)
            if len(clips) <= held_out:
                raise ValueError(f"{path} holds {len(clips)} clips; need more than the {held_out} held out")
            names = {"train": clips[: len(clips) - held_out], "validation": clips[len(clips) - held_out :]}
            self.sets = {
                split: [
                    torch.from_numpy(data[k].astype(np.int32)).to(device) for n in chosen for k in (n, n + MIRRORED)
                ]
                for split, chosen in names.items()
            }
        self.crop, self.device = crop, device
        for windows in self.sets["train"] + self.sets["validation"]:
            if windows.shape[1] != frames or min(windows.shape[2:]) < crop:
                raise ValueError(f"latents {tuple(windows.shape[1:])} hold no {frames}x{crop}x{crop} crop")
        counts = torch.tensor([len(w) for w in self.sets["train"]], dtype=torch.float)
        self.weights = counts / counts.sum()

    def batch(self, size: int, generator: torch.Generator) -> torch.Tensor:
        c, train = self.crop, self.sets["train"]
        clips = torch.multinomial(self.weights, size, replacement=True, generator=generator).tolist()
        crops = []
        for i in clips:
            w = train[i]
            j = int(torch.randint(len(w), (1,), generator=generator))
            y = int(torch.randint(w.shape[2] - c + 1, (1,), generator=generator))
            x = int(torch.randint(w.shape[3] - c + 1, (1,), generator=generator))
            crops.append(w[j, :, y : y + c, x : x + c])
        return torch.stack(crops)

    def validation(self, limit: int = 64) -> torch.Tensor:
        """Centre crops of the held-out windows (at most `limit`, evenly spaced)."""
        c, crops = self.crop, []
        for w in self.sets["validation"]:
            y, x = (w.shape[2] - c) // 2, (w.shape[3] - c) // 2
            crops.append(w[:, :, y : y + c, x : x + c])
        crops = torch.cat(crops)
        return crops[torch.linspace(0, len(crops) - 1, min(limit, len(crops))).long()]


def code_psnr(model: RegisterTokenizer, indices: torch.Tensor, prefixes: list[int]) -> dict[str, float]:
    """PSNR of the regression's codes against the true codes (range 2) at each prefix length."""
    codes = model.fsq.indices_to_codes(indices.long()).float()
    tokens = model.encode(codes)
    out = {}
    for k in prefixes:
        mse = torch.mean((model.decode(tokens[:, :k], *codes.shape[-2:]) - codes) ** 2).item()
        out[f"psnr@{k}"] = 10 * math.log10(4 / max(mse, 1e-12))
    return out


class RegisterTrainer(EmaTrainer):
    no_decay = ("position", "registers")
    train_digits = 5

    def __init__(self, cfg: RegisterTrainConfig, device: str | None = None, progress=print):
        cfg.check()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.seed)
        self.setup(cfg, RegisterTokenizer(RegisterConfig.from_dict(cfg.registers)), device, progress)

    def export(self, directory: Path | None = None) -> Path:
        """A 1D checkpoint folder (`layout1d.InfoTok1D.from_pretrained` reads it): the EMA weights in fp16
        and a config naming the base the latents came from (None: the installed InfoTok-Flex) with its hash."""
        from .checkpoint import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE

        directory = Path(directory or self.out / "model")
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.half().contiguous() for k, v in sorted(self.ema.items())}
        save_tensors(directory / WEIGHTS_FILE, weights, {"format": CHECKPOINT_FORMAT})
        config = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "name": self.cfg.name,
            "layout": "1d",
            "base_checkpoint": self.data.base_checkpoint or None,
            "base_hash": self.data.base_hash,
            "registers": self.model.config.to_dict(),
            "trained_steps": self.step,
            "train_config": asdict(self.cfg),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    # --------------------------------------------------------------------- loop
    def _prefixes(self) -> list[int]:
        """Prefix lengths the log follows: 16, 64, 256 and all registers (those the model has)."""
        k = self.model.tokens_for(self.cfg.crop, self.cfg.crop)
        return sorted({min(n, k) for n in (16, 64, 256, k)})

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.mixed_precision == "bf16")

    @property
    def log_fields(self) -> tuple[str, ...]:
        return ("regression", "flow", *(f"psnr@{k}" for k in self._prefixes()))

    def load_data(self) -> None:
        cfg = self.cfg
        self.data = LatentWindows(cfg.latents, self.model.config.frames, cfg.crop, cfg.held_out, self.device)
        self.regions = self.model.regions(cfg.crop, cfg.crop)

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        indices = self.data.batch(self.cfg.batch, self.generator)
        codes = self.model.fsq.indices_to_codes(indices.long()).float()
        keep = self.model.draw_keep(self.cfg.batch * self.regions, self.generator).to(self.device)
        with self._autocast():
            losses = self.model.loss(codes, keep)
        return losses["regression"] + losses["flow"], {k: losses[k].detach() for k in ("regression", "flow")}

    def evaluate(self) -> dict[str, str]:
        with self._autocast():
            psnr = self.with_ema(lambda: code_psnr(self.model, self.data.validation(), self._prefixes()))
        return {k: f"{v:.2f}" for k, v in psnr.items()}
