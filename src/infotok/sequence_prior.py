"""A learned prior over 1D-layout tokens: the probability of each window's coarse-to-fine sequence, token by token
in sequence order, so that `-log2 p` of any prefix is what a model of these tokens pays for it (docs/PRIOR.md).

A window's sequence is rank-major (`registers.RegisterTokenizer.encode`): the rank-0 token of every region, then
rank 1, and so on. Seen as a grid [ranks, region rows, region cols], a token is predicted from all tokens of the
earlier ranks (causal convolutions along the rank axis, dilated, each also 3x3 across regions) and from what its
decoder has of the window before it in the same video (that window's kept prefix: the same rank and every other).
Tokens of one rank do not see each other, so the bits of any prefix are the sum of its tokens' bits, and one
pass of the network gives them all. A code's six FSQ digits are coded in turn (`prior.digit_logits`).

This prior measures (the layout comparison of BENCHMARKS_PRIOR.md); 1D files are not entropy-coded with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .files import save_tensors
from .prior import checked_config, code_digits, digit_inputs, digit_logits, digit_rows

SEQUENCE_PRIOR_FILE, SEQUENCE_PRIOR_CONFIG = "sequence_prior.safetensors", "config.json"
SEQUENCE_PRIOR_FORMAT = "infotok-sequence-prior"


@dataclass
class SequencePriorConfig:
    levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    registers: int = 64  # ranks of a window (tokens per region)
    channels: int = 48
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # a residual block each: a causal
    # conv over (2 ranks, d apart) x 3 x 3 regions, ReLU, 1x1; it sees 1 + sum(dilations) ranks back

    @classmethod
    def from_dict(cls, d: dict) -> "SequencePriorConfig":
        cfg = checked_config(cls, d, ("dilations",))
        if min(cfg.registers, cfg.channels) < 1:
            raise ValueError("registers and channels must be positive")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def rank_grid(sequence: np.ndarray, known: int, registers: int, rows: int, cols: int) -> torch.Tensor:
    """A window's token sequence -> [registers, rows, cols] long, the tokens past its first `known` -1."""
    grid = torch.full((registers * rows * cols,), -1, dtype=torch.long)
    known = min(known, len(sequence))
    grid[:known] = torch.from_numpy(np.asarray(sequence[:known], dtype=np.int64))
    return grid.view(registers, rows, cols)


def keep_prefix(grid: torch.Tensor, known: int) -> torch.Tensor:
    """A rank grid with the tokens past its sequence's first `known` set to -1 (what a decoder of that prefix has)."""
    return torch.where(torch.arange(grid.numel(), device=grid.device).view(grid.shape) < known, grid, -1)


def region_grid(header) -> tuple[int, int]:
    """(rows, cols) of a 1D file's regions (`header`: its TokenHeader)."""
    side = header.spatial_factor * header.region
    return header.height // side, header.width // side


class SequencePriorNet(nn.Module):
    """The sequence prior (float): `token_bits` gives each token's `-log2 p` given the earlier ranks of its window
    and what a decoder has of the window before; `layer`/`embed` have the grid prior's names, so its digit heads
    (`prior.digit_inputs`, `prior.digit_logits`) run on this network too."""

    def __init__(self, cfg: SequencePriorConfig):
        super().__init__()
        self.config = cfg
        c, levels = cfg.channels, cfg.levels
        tables = {f"before{j}": nn.Embedding(n + 1, c) for j, n in enumerate(levels)}  # the rank before; + none
        tables |= {f"previous{j}": nn.Embedding(n + 1, c) for j, n in enumerate(levels)}  # the window before
        tables |= {f"digit{j}": nn.Embedding(n, c) for j, n in enumerate(levels[:-1])}
        tables["rank"] = nn.Embedding(cfg.registers, c)
        self.tables = nn.ModuleDict(tables)
        layers = {f"a{i}": nn.Conv3d(c, c, (2, 3, 3), dilation=(d, 1, 1)) for i, d in enumerate(cfg.dilations)}
        layers |= {f"b{i}": nn.Conv3d(c, c, 1) for i in range(len(cfg.dilations))}
        layers |= {f"hidden{j}": nn.Linear(c, c) for j in range(len(levels))}
        layers |= {f"out{j}": nn.Linear(c, n) for j, n in enumerate(levels)}
        self.layers = nn.ModuleDict(layers)
        for i in range(len(cfg.dilations)):  # residual blocks start as the identity
            nn.init.zeros_(self.layers[f"b{i}"].weight)
            nn.init.zeros_(self.layers[f"b{i}"].bias)
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.5)

    def embed(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        return self.tables[name](rows)

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name.startswith("a"):  # causal along ranks: pad d ranks before, none after
            x = F.pad(x, (1, 1, 1, 1, self.config.dilations[int(name[1:])], 0))
        return self.layers[name](x)

    def features(self, tokens: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """[B, channels, R, rows, cols] from tokens and the previous window's [B, R, rows, cols] (-1: none);
        position (r, i, j) sees tokens of ranks < r only."""
        levels = self.config.levels
        before = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)
        x = self.embed("rank", torch.arange(tokens.shape[1], device=tokens.device))[None, :, None, None]
        for name, codes in (("before", before), ("previous", previous)):
            x = x + sum(self.embed(k, rows) for k, rows in digit_rows(name, codes, levels).items())
        x = x.permute(0, 4, 1, 2, 3)
        for i in range(len(self.config.dilations)):
            x = x + self.layer(f"b{i}", F.relu(self.layer(f"a{i}", F.relu(x))))
        return x

    def token_bits(self, tokens: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Bits of each token [B, R, rows, cols] (0 where tokens is -1)."""
        known = tokens >= 0
        vectors = self.features(tokens, previous).permute(0, 2, 3, 4, 1)[known]
        digits = code_digits(tokens[known], self.config.levels)
        nats = sum(
            F.cross_entropy(digit_logits(self, x, j).float(), digits[:, j], reduction="none")
            for j, x in digit_inputs(self, vectors, digits)
        )
        bits = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
        bits[known] = nats / np.log(2)
        return bits

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, directory: str | Path, info: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().half().contiguous() for k, v in self.state_dict().items()}  # half the bytes
        save_tensors(directory / SEQUENCE_PRIOR_FILE, state, {"format": SEQUENCE_PRIOR_FORMAT})
        config = dict(info or {}) | {"format": SEQUENCE_PRIOR_FORMAT, "prior": self.config.to_dict()}
        (directory / SEQUENCE_PRIOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "SequencePriorNet":
        from safetensors.torch import load_file

        directory = Path(directory)
        config_file = directory / SEQUENCE_PRIOR_CONFIG
        info = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if info.get("format") != SEQUENCE_PRIOR_FORMAT:
            raise ValueError(f"{directory}: not a 1D-layout prior folder ({SEQUENCE_PRIOR_FORMAT!r} config expected)")
        net = cls(SequencePriorConfig.from_dict(info["prior"]))
        net.load_state_dict({k: v.float() for k, v in load_file(str(directory / SEQUENCE_PRIOR_FILE)).items()})
        net.info = info
        return net.eval()


def window_prefix_bits(net: SequencePriorNet, tokens, prefixes: list[int]) -> dict[int, float]:
    """Bits of a 1D `Tokens` video cut to each of `prefixes` tokens a window (every window's first k tokens, each
    given the previous window's first k), summed over its windows."""
    header = tokens.header
    rows, cols = region_grid(header)
    out = {}
    with torch.no_grad():
        for k in prefixes:
            grids = [rank_grid(w.indices, k, header.registers, rows, cols) for w in tokens.windows]
            previous = [torch.full_like(grids[0], -1)] + grids[:-1]
            out[k] = float(net.token_bits(torch.stack(grids), torch.stack(previous)).sum())
    return out
