"""Drop adapters: an adaptive model whose full rate is its base, exactly (issue #32).

InfoTok-Flex fine-tunes its base decoder with the stacks so that it decodes dropped positions well, and
pays for it at full rate (25.28 dB where the longer-trained base alone gives 26.77 on the evaluation
clips). A model with drop adapters keeps the base frozen and as it is: its tokens are the base's codes
(no compressor), and what learns to fill drops acts only where a drop can be seen, a position within
`reach` latent positions of one without its own code (`gate`). There the decompressor's output replaces
the features, and a small residual branch beside each block of the base decoder adds its output; elsewhere
both are off. With every token kept the gate is shut everywhere, and the model decodes as its base, bit
for bit; a kept token far from every drop decodes as the base decodes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DropAdapterConfig:
    lo_rank: int = 32  # channels of the branches beside the decoder's 1/8-resolution blocks
    hi_rank: int = 16  # ... and beside its 1/4-resolution blocks
    reach: int = 1  # latent positions around a position without its own code where the gate is open

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DropAdapterConfig":
        config = cls(**d)
        if min(config.lo_rank, config.hi_rank) < 1 or config.reach < 0:
            raise ValueError(f"drop adapters need ranks >= 1 and a reach >= 0, got {d}")
        return config


class Branch(nn.Module):
    """conv3x3 to `rank` channels - SiLU - conv3x3 back, its last layer zero: a new branch adds nothing."""

    def __init__(self, ch: int, rank: int):
        super().__init__()
        self.down = nn.Conv2d(ch, rank, 3, padding=1)
        self.up = nn.Conv2d(rank, ch, 3, padding=1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.silu(self.down(F.silu(x))))


class DropAdapters(nn.Module):
    """One branch beside each residual block of a `base.CausalConvTokenizer`'s decoder."""

    def __init__(self, config: DropAdapterConfig, base: nn.Module):
        super().__init__()
        c = getattr(base, "config", None)
        if not hasattr(c, "dec_lo_blocks"):
            raise ValueError(f"drop adapters sit beside this project's base decoder, not {type(base).__name__}'s")
        self.config = config
        self.lo = nn.ModuleList(Branch(c.dec_lo, config.lo_rank) for _ in range(c.dec_lo_blocks))
        self.hi = nn.ModuleList(Branch(c.dec_hi, config.hi_rank) for _ in range(c.dec_hi_blocks))

    def gate(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """keep-mask [B, t, h, w] (as selected, before any fill) -> where a drop can be seen, bool [B, t, h, w];
        None where every token is kept (the base decodes alone)."""
        if mask is None or bool(mask.all()):
            return None
        k = 2 * self.config.reach + 1
        dropped = (~mask.bool()).float()[:, None]
        return F.max_pool3d(dropped, (1, k, k), stride=1, padding=(0, k // 2, k // 2))[:, 0] > 0

    def side(self, gate: torch.Tensor) -> Callable[[str, int, int], list | None]:
        """The base decoder's side branches for latent frames j0..j1-1 of a stage ("lo" or "hi"): each block's
        branch output times the gate at that stage's resolution; None where the gate is shut on those frames."""

        def branches(stage: str, j0: int, j1: int) -> list | None:
            g = gate[:, j0:j1]
            if not bool(g.any()):
                return None
            g = g.flatten(0, 1)[:, None]
            if stage == "hi":  # the 1/4-resolution stage: each latent position covers 2x2
                g = g.repeat_interleave(2, -2).repeat_interleave(2, -1)
            return [lambda x, branch=branch: branch(x) * g.to(x.dtype) for branch in getattr(self, stage)]

        return branches
