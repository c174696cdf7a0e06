"""The 1D layout: a window's base codes summarized by K register tokens, ordered coarse to fine.

FlexTok / VideoFlexTok's design at this project's scale, on InfoTok's frozen base (its codes are the
input and the regression target; its decoder turns them back into pixels):

- **Encoder.** The window's base codes [6, t, h, w] are cut into 1 x p x p patches (one token each) and read
  by a transformer together with K learned registers. Patches attend to patches; register i attends to
  every patch and to registers 0..i, so the first k registers never depend on later ones: encoding with K
  and cutting to k equals encoding k alone (a prefix is a valid token sequence, not an approximation).
- **Tokens.** Each register is projected to len(levels) values and quantized by FSQ (the base's levels,
  8,8,8,5,5,5: 64,000 codes, 15.97 bits, so a 1D token costs what a grid token does).
- **Nested dropout.** In training each window keeps a prefix of k registers, k a power of two in 1..K drawn
  uniformly over the exponents; the rest become a learned mask token. The first tokens thus must carry what
  matters most at every budget: coarse to fine.
- **Decoders from any prefix.** `decode` regresses the codes (one pass, the conditional mean: sharp at
  large k, soft at small k). `sample` is a rectified flow over the codes conditioned on the prefix (and on
  the regression, so the flow learns what the mean leaves out), integrated in a few Euler steps from seeded
  noise: plausible detail at small k instead of a blur.

Registers are per window, not per latent time step: a window is the causal unit of the whole pipeline (the
base encodes windows independently; long videos are sequences of windows), one k per window is what a
per-window budget allocates, and a still window needs few tokens in total rather than a few per step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from vector_quantize_pytorch import FSQ

from .base import FSQ_LEVELS


@dataclass(frozen=True)
class RegisterConfig:
    """Sizes of `RegisterTokenizer`. `frames`, `height`, `width` are the window's latent grid (33x256x256
    pixels -> 9x32x32): position embeddings are learned for exactly that grid."""

    registers: int = 1024
    width: int = 256
    heads: int = 4
    encoder_depth: int = 4
    decoder_depth: int = 4
    flow_depth: int = 4
    patch: int = 4
    frames: int = 9
    height: int = 32
    width_latent: int = 32
    code_dim: int = 6
    levels: tuple[int, ...] = field(default_factory=lambda: FSQ_LEVELS)

    def __post_init__(self):
        if self.registers < 1 or self.registers & (self.registers - 1):
            raise ValueError(f"registers must be a power of two, got {self.registers}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if self.height % self.patch or self.width_latent % self.patch:
            raise ValueError(
                f"the latent grid {self.height}x{self.width_latent} must be a multiple of patch {self.patch}"
            )

    @property
    def patches(self) -> int:
        return self.frames * (self.height // self.patch) * (self.width_latent // self.patch)

    @property
    def patch_dim(self) -> int:
        return self.code_dim * self.patch * self.patch

    @property
    def prefixes(self) -> list[int]:
        """The token counts nested dropout trains: 1, 2, 4, ..., registers."""
        return [1 << i for i in range(self.registers.bit_length())]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RegisterConfig":
        d = dict(d)
        d["levels"] = tuple(d.get("levels", FSQ_LEVELS))
        return cls(**d)


class Block(nn.Module):
    """Pre-norm transformer block; `mask` is a boolean attention mask (True = may attend) or None."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        x = x + self.proj(rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "b h n d -> b n (h d)"))
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    def __init__(self, width: int, heads: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def time_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal embedding of flow times t in [0, 1] -> [B, width]."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class RegisterTokenizer(nn.Module):
    """Base codes [B, 6, t, h, w] (values in [-1, 1]) <-> register token indices [B, k], k <= K."""

    def __init__(self, config: RegisterConfig | None = None):
        super().__init__()
        self.config = c = config or RegisterConfig()
        w = c.width
        self.patch_in = nn.Linear(c.patch_dim, w)
        self.position = nn.Parameter(torch.randn(1, c.patches, w) * 0.02)
        self.registers = nn.Parameter(torch.randn(1, c.registers, w) * 0.02)
        self.encoder = Stack(w, c.heads, c.encoder_depth)
        self.to_code = nn.Linear(w, len(c.levels))
        self.fsq = FSQ(levels=list(c.levels))
        self.from_code = nn.Linear(len(c.levels), w)
        self.register_position = nn.Parameter(torch.randn(1, c.registers, w) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, c.patches, w) * 0.02)
        self.decoder = Stack(w, c.heads, c.decoder_depth)
        self.patch_out = nn.Linear(w, c.patch_dim)
        self.flow_in = nn.Linear(2 * c.patch_dim, w)
        self.flow_time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.flow = Stack(w, c.heads, c.flow_depth)
        self.flow_out = nn.Linear(w, c.patch_dim)
        nn.init.zeros_(self.flow_out.weight)
        nn.init.zeros_(self.flow_out.bias)
        n, k = c.patches, c.registers
        allowed = torch.zeros(n + k, n + k, dtype=torch.bool)
        allowed[:, :n] = True  # everything reads the patches
        allowed[n:, n:] = torch.ones(k, k, dtype=torch.bool).tril()  # register i reads registers 0..i
        self.register_buffer("encoder_mask", allowed, persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.config.levels)

    # ------------------------------------------------------------------ layout
    def _patchify(self, codes: torch.Tensor) -> torch.Tensor:
        c = self.config
        if tuple(codes.shape[1:]) != (c.code_dim, c.frames, c.height, c.width_latent):
            raise ValueError(
                f"register tokenizer takes base codes of shape [B, {c.code_dim}, {c.frames}, {c.height}, "
                f"{c.width_latent}] (a {1 + 4 * (c.frames - 1)}x{8 * c.height}x{8 * c.width_latent} window), "
                f"got {tuple(codes.shape)}"
            )
        return rearrange(codes, "b c t (h p) (w q) -> b (t h w) (p q c)", p=c.patch, q=c.patch)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        return rearrange(
            x,
            "b (t h w) (p q c) -> b c t (h p) (w q)",
            t=c.frames,
            h=c.height // c.patch,
            p=c.patch,
            q=c.patch,
        )

    # ------------------------------------------------------------------ tokens
    def encode_values(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes -> (quantized register values [B, K, len(levels)], indices [B, K])."""
        x = self.patch_in(self._patchify(codes).to(self.patch_in.weight.dtype)) + self.position
        x = torch.cat([x, self.registers.expand(x.shape[0], -1, -1)], dim=1)
        x = self.encoder(x, self.encoder_mask)[:, self.config.patches :]
        with torch.autocast(x.device.type, enabled=False):  # a rounding boundary must not move with precision
            return self.fsq(self.to_code(x.float()))

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.encode_values(codes)[1].long()

    def values_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"register token indices must lie in [0, {self.codebook_size})")
        return self.fsq.indices_to_codes(indices.long())

    def _conditioning(self, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Register values [B, K', d] (K' <= K) with `keep` [B] registers kept each -> decoder inputs [B, K, w]:
        kept registers embedded, the rest the mask token."""
        c = self.config
        b = values.shape[0]
        if values.shape[1] < c.registers:
            values = F.pad(values, (0, 0, 0, c.registers - values.shape[1]))
        x = self.from_code(values.to(self.from_code.weight.dtype))
        kept = torch.arange(c.registers, device=x.device)[None, :] < keep[:, None]
        x = torch.where(kept[..., None], x, self.mask_token.to(x.dtype).expand(b, c.registers, -1))
        return x + self.register_position

    # ------------------------------------------------------------------ decoders
    def regress(self, condition: torch.Tensor) -> torch.Tensor:
        """Decoder inputs [B, K, w] -> predicted patches [B, patches, patch_dim] (the conditional mean)."""
        queries = self.queries.expand(condition.shape[0], -1, -1)
        x = self.decoder(torch.cat([condition, queries], dim=1))
        return self.patch_out(x[:, self.config.registers :])

    def velocity(self, noisy: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, condition: torch.Tensor):
        """Rectified-flow velocity at time t for patches `noisy`, given the regression and the prefix."""
        x = self.flow_in(torch.cat([noisy, mean], dim=-1).to(self.flow_in.weight.dtype)) + self.position
        x = x + self.flow_time(time_embedding(t, self.config.width).to(x.dtype))[:, None]
        x = self.flow(torch.cat([condition, x], dim=1))
        return self.flow_out(x[:, self.config.registers :])

    def _prefix(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if indices.dim() != 2 or not 0 < indices.shape[1] <= self.config.registers:
            raise ValueError(
                f"register tokens must be [B, k] with 1 <= k <= {self.config.registers}, got {tuple(indices.shape)}"
            )
        keep = torch.full((indices.shape[0],), indices.shape[1], device=indices.device)
        return self._conditioning(self.values_from_indices(indices), keep), keep

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Any prefix [B, k] -> base codes [B, 6, t, h, w] (deterministic regression)."""
        return self._unpatchify(self.regress(self._prefix(indices)[0]).float())

    def sample(self, indices: torch.Tensor, steps: int = 8, seed: int = 0) -> torch.Tensor:
        """Any prefix [B, k] -> base codes drawn by the flow decoder in `steps` Euler steps from noise
        seeded by `seed` (the same seed, prefix and machine give the same codes)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        condition, _ = self._prefix(indices)
        mean = self.regress(condition)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
        for i in range(steps):
            t = torch.full((x.shape[0],), i / steps, device=x.device)
            x = x + self.velocity(x, t, mean, condition).float() / steps
        return self._unpatchify(x)

    # ------------------------------------------------------------------ training
    def loss(self, codes: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for codes [B, 6, t, h, w] keeping `keep` [B] registers each: the regression's
        MSE on the codes and the flow's MSE on velocities (t drawn logit-normal, as SD3 does)."""
        target = self._patchify(codes).float()
        values, _ = self.encode_values(codes)
        condition = self._conditioning(values, keep)
        mean = self.regress(condition)
        regression = F.mse_loss(mean.float(), target)
        noise = torch.randn_like(target)
        t = torch.sigmoid(torch.randn(target.shape[0], device=target.device))
        noisy = t[:, None, None] * target + (1 - t[:, None, None]) * noise
        flow = F.mse_loss(self.velocity(noisy, t, mean.detach(), condition).float(), target - noise)
        return {"regression": regression, "flow": flow}

    def draw_keep(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nested dropout: one kept prefix length per window, a power of two drawn uniformly over exponents."""
        exponents = torch.randint(0, self.config.registers.bit_length(), (batch,), generator=generator)
        return 1 << exponents
