"""`infotok train prior`: the token prior (`prior.PriorNet`) on tokenized videos (shard folders of `infotok
encode-dataset`, or folders of `.itok` files of `infotok encode`, whose windows may continue each other),
exported as the exact integer `prior.TokenPrior`; on 1D-layout shards, the sequence prior
(`sequence_prior.SequencePriorNet`, at the end of this file).

A training example is one pass over one latent frame of one window, cropped to `crop` x `crop` latents: its
context (the state the hold fill would have there, from the window's earlier frames and the previous window of the
same video, and what the frame's earlier passes coded) and the symbols the pass codes. The loss is their bits.
The log follows the held-out videos' bits per kept code and per mask bit, and bytes per window, under the EMA
weights (float; the exported integer prior's coded size is within a fraction of a percent of it, docs/PRIOR.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .prior import (
    CodingOrder,
    PriorConfig,
    PriorNet,
    TokenPrior,
    asked_row,
    coded_here,
    context_bits,
    kept_bucket,
    no_held_codes,
    pass_context,
    video_window_states,
    warm_start,
    window_passes,
    window_states,
)
from .sequence_prior import SequencePriorConfig, SequencePriorNet, keep_prefix, rank_grid, region_grid
from .tokens import Tokens
from .train_ema import EmaTrainer


@dataclass
class PriorTrainConfig:
    shards: list[str] = field(default_factory=list)  # shard folders or `.itok` folders of tokenized training videos
    out: str = "runs/prior"
    steps: int = 4000
    batch: int = 8  # latent frames a step, each with all its passes
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    ema: float = 0.995
    time_limit: float = 0.0  # seconds over all resumes; the schedule follows steps or time, whichever is further
    log_every: int = 50
    checkpoint_every: int = 500
    crop: int = 32
    held_out: int = 3  # videos (last by path) held out for the log, never trained on
    fresh_fraction: float = 0.2  # windows trained as if they started a video (no previous window's state)
    seed: int = 0
    prior: dict = field(default_factory=dict)  # PriorConfig fields
    init: str = ""  # a prior folder to start from (`prior.warm_start`); `prior` may add `held_digits` to it
    name: str = "infotok-prior"
    network = PriorConfig  # the network config `prior` holds the fields of (a class attribute, not a field)

    def check(self) -> "PriorTrainConfig":
        if not self.shards:
            raise ValueError("no shard folders to train on")
        if min(self.steps, self.batch, self.log_every, self.checkpoint_every, self.crop) < 1:
            raise ValueError("steps, batch, log_every, checkpoint_every and crop must be positive")
        if not (self.lr > 0 and 0 <= self.ema < 1 and self.time_limit >= 0 and 0 <= self.fresh_fraction <= 1):
            raise ValueError("need lr > 0, 0 <= ema < 1, time_limit >= 0 and 0 <= fresh_fraction <= 1")
        self.network.from_dict(self.prior)
        return self


def iter_folder_tokens(root: str) -> Iterator[tuple[str, Tokens]]:
    """(video name, Tokens) of the `.itok` files in a folder, or else of a shard folder; the name is the file name
    without its suffix, so one video tokenized into several folders is one video."""
    files = sorted(Path(root).glob("*.itok"))
    if files:
        yield from ((f.stem, Tokens.load(f)) for f in files)
        return
    from .shard_reader import iter_video_tokens

    yield from ((Path(path).stem, tokens) for path, tokens in iter_video_tokens(root))


def videos_and_held_out(shards: list[str], held_out: int) -> tuple[list, set]:
    """Every (video name, Tokens) of the folders, and the names held out: the last `held_out` by name (a video in
    several folders, rates, is held out from all)."""
    videos = [item for root in shards for item in iter_folder_tokens(root)]
    names = sorted({name for name, _ in videos})
    if len(names) <= held_out:
        raise ValueError(f"{len(names)} videos in {shards}; need more than the {held_out} held out")
    return videos, set(names[len(names) - held_out :])


class TokenWindows:
    """Every window of the tokenized videos as tensors, with the states a decoder would have before each frame
    (continuing the video's previous window, and `fresh`: as if the window started the video; never for a window
    that continues the one before, `continues`, whose first latent frame keeps only what changed)."""

    def __init__(self, shards: list[str], held_out: int, crop: int):
        videos, validation = videos_and_held_out(shards, held_out)
        levels = videos[0][1].header.levels
        self.levels, self.crop, self.sets = levels, crop, {"train": [], "validation": []}
        for path, tokens in videos:
            if tokens.header.layout != "grid" or tokens.header.levels != levels:
                raise ValueError(f"{path}: the prior models grid tokens of levels {levels}")
            split = "validation" if path in validation else "train"
            for i, (w, mask, codes, before_held, before_age) in enumerate(video_window_states(tokens.windows)):
                fresh = window_states(mask, codes, *no_held_codes(mask.shape[1:]))[:2]
                self.sets[split].append(
                    {
                        "mask": mask,
                        "codes": codes,
                        "held": before_held,
                        "age": before_age,
                        "fresh": fresh,
                        "kept": kept_bucket(w.kept, mask.numel()),
                        "continues": tokens.header.continues(i),
                        "asked": asked_row(tokens.header),
                    }
                )
        # a video smaller than the crop lowers it for all (the network is convolutional: any size will do)
        self.crop = min([crop] + [min(w["mask"].shape[1:]) for w in self.sets["train"]])
        frames = torch.tensor([len(w["mask"]) for w in self.sets["train"]], dtype=torch.float)
        self.weights = frames / frames.sum()

    def batch(self, order: CodingOrder, size: int, fresh_fraction: float, generator: torch.Generator):
        """`size` random (window, latent frame, crop) examples, each as its `order`'s passes in order (the prior's
        trunk runs once a frame): (context, mask, codes, step)."""
        c, windows = self.crop, self.sets["train"]
        picks = torch.multinomial(self.weights, size, replacement=True, generator=generator).tolist()
        rows = {k: [] for k in ("held", "age", "mask", "codes", "frame", "kept", "continues", "asked")}
        for i in picks:
            w = windows[i]
            t = int(torch.randint(len(w["mask"]), (1,), generator=generator))
            # even offsets: a crop keeps the frame's stride-2 lattices, where a sparse key frame keeps every position
            y = 2 * int(torch.randint((w["mask"].shape[1] - c) // 2 + 1, (1,), generator=generator))
            x = 2 * int(torch.randint((w["mask"].shape[2] - c) // 2 + 1, (1,), generator=generator))
            fresh = float(torch.rand((), generator=generator)) < fresh_fraction and not w["continues"]
            held, age = w["fresh"] if fresh else (w["held"], w["age"])
            for key, value in (("held", held), ("age", age), ("mask", w["mask"]), ("codes", w["codes"])):
                rows[key].append(value[t, y : y + c, x : x + c])
            rows["frame"].append(t)
            rows["kept"].append(w["kept"])
            rows["continues"].append(w["continues"])
            rows["asked"].append(w["asked"])
        n = order.passes
        step = torch.arange(n).repeat(size)
        frame, kept, continues, asked = (
            torch.tensor(rows.pop(k)).long() for k in ("frame", "kept", "continues", "asked")
        )
        held, age, mask, codes = (torch.stack(rows[k]) for k in ("held", "age", "mask", "codes"))
        held, age, mask, codes, frame, kept, continues, asked = (
            v.repeat_interleave(n, 0) for v in (held, age, mask, codes, frame, kept, continues, asked)
        )
        ctx = pass_context(order, held, age, mask, codes, frame, step, kept, continues, asked)
        return ctx, mask, codes, step


def window_bits(net: PriorNet, w: dict) -> tuple[float, float]:
    """(mask bits, code bits) of a whole window under the float network: all its passes in one batch."""
    ctx, mask, codes, _ = window_passes(
        net.config.order, w["mask"], w["codes"], w["held"], w["age"], w["continues"], w["asked"]
    )
    mask_bits, code_bits = context_bits(net, ctx, mask, codes)
    return float(mask_bits), float(code_bits)


class PriorTrainer(EmaTrainer):
    network = PriorNet
    validation_fields = ("bits_per_code", "bits_per_mask_position", "kbytes_per_window")

    def __init__(self, cfg: PriorTrainConfig, progress=print):
        cfg.check()
        torch.manual_seed(cfg.seed)
        net = self.network(cfg.network.from_dict(cfg.prior))
        if cfg.init:
            if self.network is not PriorNet:
                raise ValueError("--init starts a grid prior only (not the 1D layout's sequence prior)")
            warm_start(net, TokenPrior.from_pretrained(cfg.init))
        self.setup(cfg, net, torch.device("cpu"), progress)

    def validation(self) -> dict[str, float]:
        mask_bits = code_bits = positions = kept = 0.0
        windows = self.data.sets["validation"]
        for w in windows:
            m, c = window_bits(self.model, w)
            mask_bits, code_bits = mask_bits + m, code_bits + c
            positions, kept = positions + w["mask"].numel(), kept + float(w["mask"].sum())
        return {
            "bits_per_code": code_bits / max(kept, 1),
            "bits_per_mask_position": mask_bits / max(positions, 1),
            "kbytes_per_window": (mask_bits + code_bits) / 8 / 1024 / max(len(windows), 1),
        }

    def ema_network(self) -> tuple[torch.nn.Module, dict]:
        """A network of the EMA weights, and the run's record for its folder's config."""
        net = self.network(self.model.config)
        net.load_state_dict(self.ema)
        return net, {"name": self.cfg.name, "trained_steps": self.step, "train_config": asdict(self.cfg)}

    def export(self, directory: Path | None = None) -> Path:
        """The EMA weights as an integer prior folder (`TokenPrior.from_pretrained` reads it)."""
        net, info = self.ema_network()
        return TokenPrior.from_net(net, info).save_pretrained(directory or self.out / "model")

    def load_data(self) -> None:
        self.data = TokenWindows(self.cfg.shards, self.cfg.held_out, self.cfg.crop)

    @property
    def log_fields(self) -> tuple[str, ...]:
        return ("train_bits_per_symbol", *self.validation_fields)

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.batch_loss()
        return loss, {"train_bits_per_symbol": loss.detach()}

    def evaluate(self) -> dict[str, str]:
        return {k: f"{v:.4f}" for k, v in self.with_ema(self.validation).items()}

    def batch_loss(self) -> torch.Tensor:
        """Bits per coded symbol of a random batch."""
        order = self.model.config.order
        ctx, mask, codes, step = self.data.batch(order, self.cfg.batch, self.cfg.fresh_fraction, self.generator)
        mask_bits, code_bits = context_bits(self.model, ctx, mask, codes)
        mask_here, code_here = coded_here(order, step, mask)
        symbols = float(mask_here.sum()) + float(code_here.sum()) * len(self.data.levels)
        return (mask_bits + code_bits) / max(symbols, 1)


# ----------------------------------------------------------------------------- the 1D layout's sequence prior
def shards_layout(shards: list[str]) -> str:
    """The token layout of shard or `.itok` folders ("grid" or "1d"); folders of both are refused."""
    layouts = {next(iter_folder_tokens(root))[1].header.layout for root in shards}
    if len(layouts) > 1:
        raise ValueError(f"shard folders of different layouts ({', '.join(sorted(layouts))}): train one prior each")
    return layouts.pop()


@dataclass
class SequencePriorTrainConfig(PriorTrainConfig):
    batch: int = 16  # windows a step
    crop: int = 4  # regions (64 pixels each at the shipped sizes) a side
    name: str = "infotok-sequence-prior"

    network = SequencePriorConfig


class SequenceWindows:
    """Every window of 1D-tokenized videos as a rank grid [ranks, region rows, region cols], with the window before
    it in its video."""

    def __init__(self, shards: list[str], held_out: int, crop: int):
        videos, validation = videos_and_held_out(shards, held_out)
        self.sets = {"train": [], "validation": []}
        for path, tokens in videos:
            header = tokens.header
            if header.layout != "1d":
                raise ValueError(f"{path}: the sequence prior models 1D-layout tokens")
            rows, cols = region_grid(header)
            previous = None
            for w in tokens.windows:
                grid = rank_grid(w.indices, w.kept, header.registers, rows, cols)
                self.sets["validation" if path in validation else "train"].append((grid, previous))
                previous = grid
        self.levels = videos[0][1].header.levels
        self.crop = min([crop] + [min(g.shape[1:]) for g, _ in self.sets["train"]])

    def batch(self, size: int, fresh_fraction: float, generator: torch.Generator):
        """`size` random windows cropped to `crop` x `crop` regions: (tokens, previous). The previous window is
        what a decoder would have of it: none for a `fresh_fraction` of them, else its first k tokens, k uniform."""
        c, windows = self.crop, self.sets["train"]
        tokens, previous = [], []
        for i in torch.randint(len(windows), (size,), generator=generator).tolist():
            grid, before = windows[i]
            y = int(torch.randint(grid.shape[1] - c + 1, (1,), generator=generator))
            x = int(torch.randint(grid.shape[2] - c + 1, (1,), generator=generator))
            if before is None or float(torch.rand((), generator=generator)) < fresh_fraction:
                before = torch.full_like(grid, -1)
            else:
                before = keep_prefix(before, int(torch.randint(before.numel() + 1, (1,), generator=generator)))
            tokens.append(grid[:, y : y + c, x : x + c])
            previous.append(before[:, y : y + c, x : x + c])
        return torch.stack(tokens), torch.stack(previous)


class SequencePriorTrainer(PriorTrainer):
    network = SequencePriorNet
    validation_fields = ("bits_per_token", "bits_per_token_first_64", "kbytes_per_window")

    def load_data(self) -> None:
        self.data = SequenceWindows(self.cfg.shards, self.cfg.held_out, self.cfg.crop)

    def batch_loss(self) -> torch.Tensor:
        tokens, previous = self.data.batch(self.cfg.batch, self.cfg.fresh_fraction, self.generator)
        return self.model.token_bits(tokens, previous).mean() / len(self.data.levels)

    def validation(self) -> dict[str, float]:
        bits = first = tokens = 0.0
        windows = self.data.sets["validation"]
        for grid, before in windows:
            before = torch.full_like(grid, -1) if before is None else before
            bits += float(self.model.token_bits(grid[None], before[None]).sum())
            cut = (keep_prefix(g, 64)[None] for g in (grid, before))  # both windows cut to 64 tokens
            first += float(self.model.token_bits(*cut).sum())
            tokens += grid.numel()
        return {
            "bits_per_token": bits / max(tokens, 1),
            "bits_per_token_first_64": first / max(64 * len(windows), 1),
            "kbytes_per_window": bits / 8 / 1024 / max(len(windows), 1),
        }

    def export(self, directory: Path | None = None) -> Path:
        net, info = self.ema_network()
        return net.save_pretrained(directory or self.out / "model", info)
