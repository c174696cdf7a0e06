"""The 1D layout: a window's base codes summarized by register tokens, ordered coarse to fine.

FlexTok / VideoFlexTok's design at this project's scale, on InfoTok's frozen base (its codes are the
input and the regression target; its decoder turns them back into pixels):

- **Regions.** The window's latent grid [6, t, H, W] is cut into regions of t x r x r latents (r = 8: 64x64
  pixels over the whole window); each region gets R registers, read and written by one shared network.
  A network that sees the whole window at once memorized our 40 training clips (measured: its held-out
  error did not fall with more tokens); regions give it 16x more, local, samples per window and let any
  frame size that is a multiple of 64 pixels be tokenized.
- **Encoder.** A region's codes are cut into 1 x p x p patches (one token each) and read by a transformer
  together with its registers. Patches attend to patches; register i attends to every patch and to
  registers 0..i, so the first registers never depend on later ones.
- **Tokens.** Each register is projected to len(levels) values and quantized by FSQ (the base's levels,
  8,8,8,5,5,5: 64,000 codes, 15.97 bits, so a 1D token costs what a grid token does).
- **One sequence, coarse to fine.** A window's sequence is rank-major: the first register of every region
  (in raster order), then the second of every region, and so on. Any prefix of k tokens is thus a valid
  token set (each region keeps its first ceil or floor of k / regions registers); cutting a sequence equals
  encoding with fewer registers.
- **Nested dropout.** In training each region keeps a prefix of its registers, drawn log-uniformly in 0..R;
  the rest become a learned mask token, so the first registers must carry what matters most at every budget.
- **Decoders from any prefix.** `decode` regresses the codes (one pass, the conditional mean: sharp with
  many tokens, soft with few). `sample` is a rectified flow over the codes conditioned on the prefix (and
  on the regression, so the flow learns what the mean leaves out), integrated in a few Euler steps from
  seeded noise: plausible detail with few tokens instead of a blur.

Registers are per window, not per latent time step: a window is the causal unit of the whole pipeline (the
base encodes windows independently; long videos are sequences of windows), one token count per window is
what a per-window budget allocates, and a still window needs few tokens in total, not a few per step.
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
    """Sizes of `RegisterTokenizer`: `registers` per region of `frames` x `region` x `region` latents
    (a 33-frame window has 9 latent frames; a region of 8 latents is 64 pixels wide)."""

    registers: int = 64
    region: int = 8
    patch: int = 2
    frames: int = 9
    width: int = 256
    heads: int = 4
    encoder_depth: int = 4
    decoder_depth: int = 4
    flow_depth: int = 4
    code_dim: int = 6
    levels: tuple[int, ...] = field(default_factory=lambda: FSQ_LEVELS)

    def __post_init__(self):
        if self.registers < 1:
            raise ValueError(f"registers must be >= 1, got {self.registers}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if self.region % self.patch:
            raise ValueError(f"region ({self.region}) must be a multiple of patch ({self.patch})")

    @property
    def patches(self) -> int:
        """Patch tokens per region."""
        return self.frames * (self.region // self.patch) ** 2

    @property
    def patch_dim(self) -> int:
        return self.code_dim * self.patch * self.patch

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


def check_guidance(guidance: float) -> float:
    """The flow decoder's guidance scale: finite and >= 0 (0: the unconditional decoder; 1: no guidance)."""
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"guidance must be a finite number >= 0 (1: none), got {guidance}")
    return guidance


def guided(guidance: float) -> str:
    """How a decode's description names its guidance ("" for none)."""
    return "" if guidance == 1 else f", guidance {guidance:g}"


def region_keeps(k: int, regions: int, registers: int) -> list[int]:
    """Registers each region keeps in a prefix of k tokens of the rank-major sequence."""
    return [min(registers, max(0, (k - r + regions - 1) // regions)) for r in range(regions)]


class RegisterTokenizer(nn.Module):
    """Base codes [B, 6, t, H, W] (values in [-1, 1]) <-> register token indices [B, k], k <= tokens."""

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

    def tokens_for(self, height: int, width: int) -> int:
        """Tokens of a whole window of a `height` x `width` latent grid."""
        return self.config.registers * self.regions(height, width)

    def regions(self, height: int, width: int) -> int:
        r = self.config.region
        if height % r or width % r or height < r or width < r:
            raise ValueError(
                f"the 1D layout takes latent grids in multiples of {r} ({8 * r} pixels), got {height}x{width}"
            )
        return (height // r) * (width // r)

    # ------------------------------------------------------------------ layout
    def _patchify(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, 6, t, H, W] -> patches of each region [B * regions, patches, patch_dim] (regions raster-major)."""
        c = self.config
        if codes.dim() != 5 or codes.shape[1] != c.code_dim or codes.shape[2] != c.frames:
            raise ValueError(
                f"the 1D layout takes base codes [B, {c.code_dim}, {c.frames}, H, W] (windows of "
                f"{1 + 4 * (c.frames - 1)} frames), got {tuple(codes.shape)}"
            )
        self.regions(*codes.shape[-2:])
        p, side = c.patch, c.region // c.patch
        return rearrange(codes, "b c t (i h p) (j w q) -> (b i j) (t h w) (p q c)", h=side, w=side, p=p, q=p)

    def _unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        c = self.config
        side, rows, cols = c.region // c.patch, height // c.region, width // c.region
        return rearrange(
            x, "(b i j) (t h w) (p q c) -> b c t (i h p) (j w q)", i=rows, j=cols, h=side, w=side, p=c.patch, q=c.patch
        )

    def _sequence(self, x: torch.Tensor, regions: int) -> torch.Tensor:
        """Per-region registers [B * regions, R, ...] -> the window's rank-major sequence [B, R * regions, ...]."""
        x = x.unflatten(0, (-1, regions)).transpose(1, 2)
        return x.flatten(1, 2)

    # ------------------------------------------------------------------ tokens
    def encode_values(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes -> per-region (quantized register values [B * regions, R, len(levels)], indices [B * regions, R])."""
        x = self.patch_in(self._patchify(codes).to(self.patch_in.weight.dtype)) + self.position
        x = torch.cat([x, self.registers.expand(x.shape[0], -1, -1)], dim=1)
        x = self.encoder(x, self.encoder_mask)[:, self.config.patches :]
        with torch.autocast(x.device.type, enabled=False):  # a rounding boundary must not move with precision
            return self.fsq(self.to_code(x.float()))

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, 6, t, H, W] -> the window's whole token sequence [B, R * regions], coarse to fine."""
        return self._sequence(self.encode_values(codes)[1].long(), self.regions(*codes.shape[-2:]))

    def values_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"register token indices must lie in [0, {self.codebook_size})")
        return self.fsq.indices_to_codes(indices.long())

    def _conditioning(self, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Register values [N, R, d] with `keep` [N] registers kept in each region -> decoder inputs [N, R, w]:
        kept registers embedded, the rest the mask token."""
        x = self.from_code(values.to(self.from_code.weight.dtype))
        kept = torch.arange(x.shape[1], device=x.device)[None, :] < keep[:, None]
        x = torch.where(kept[..., None], x, self.mask_token.to(x.dtype).expand_as(x))
        return x + self.register_position

    def _prefix(self, indices: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """A prefix [B, k] of windows of `height` x `width` latents -> decoder inputs [B * regions, R, w]."""
        regions, total = self.regions(height, width), self.tokens_for(height, width)
        if indices.dim() != 2 or not 0 < indices.shape[1] <= total:
            raise ValueError(f"1D tokens must be [B, k] with 1 <= k <= {total}, got {tuple(indices.shape)}")
        b, k = indices.shape
        full = F.pad(indices, (0, total - k))  # padding is masked out below
        per_region = full.view(b, self.config.registers, regions).transpose(1, 2).flatten(0, 1)
        keep = torch.tensor(region_keeps(k, regions, self.config.registers), device=indices.device).repeat(b)
        return self._conditioning(self.values_from_indices(per_region), keep)

    # ------------------------------------------------------------------ decoders
    def regress(self, condition: torch.Tensor) -> torch.Tensor:
        """Decoder inputs [N, R, w] -> predicted patches [N, patches, patch_dim] (the conditional mean)."""
        queries = self.queries.expand(condition.shape[0], -1, -1)
        x = self.decoder(torch.cat([condition, queries], dim=1))
        return self.patch_out(x[:, self.config.registers :])

    def velocity(self, noisy: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, condition: torch.Tensor):
        """Rectified-flow velocity at time t for patches `noisy`, given the regression and the prefix."""
        x = self.flow_in(torch.cat([noisy, mean.to(noisy.dtype)], dim=-1).to(self.flow_in.weight.dtype))
        x = x + self.position + self.flow_time(time_embedding(t, self.config.width).to(x.dtype))[:, None]
        x = self.flow(torch.cat([condition, x], dim=1))
        return self.flow_out(x[:, self.config.registers :])

    def decode(self, indices: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Any prefix [B, k] of windows of `height` x `width` latents -> base codes [B, 6, t, height, width]
        (deterministic regression)."""
        return self._unpatchify(self.regress(self._prefix(indices, height, width)).float(), height, width)

    def sample(
        self, indices: torch.Tensor, height: int, width: int, steps: int = 8, seed: int = 0, guidance: float = 1.0
    ) -> torch.Tensor:
        """Any prefix [B, k] -> base codes drawn by the flow decoder in `steps` Euler steps from noise
        seeded by `seed` (the same seed, prefix and machine give the same codes).

        `guidance` w is classifier-free guidance: the velocity is u + w (v - u), u the decoder's with no
        register kept (which nested dropout trains: 1 region in 16 keeps none). 1 is the plain flow; above 1
        sharpens the decode (docs/LAYOUT_1D.md) at twice the flow's work."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        check_guidance(guidance)
        condition = self._prefix(indices, height, width)
        mean = self.regress(condition)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
        n = len(x)
        if guidance != 1:  # the unconditional decoder runs in the same batch
            empty = torch.zeros(n, condition.shape[1], len(self.config.levels), device=x.device)
            empty = self._conditioning(empty, torch.zeros(n, dtype=torch.long, device=x.device))
            condition, mean = torch.cat([condition, empty]), torch.cat([mean, self.regress(empty)])
        for i in range(steps):
            t = torch.full((mean.shape[0],), i / steps, device=x.device)
            v = self.velocity(x if guidance == 1 else torch.cat([x, x]), t, mean, condition).float()
            if guidance != 1:
                v, u = v[:n], v[n:]
                v = u + guidance * (v - u)
            x = x + v / steps
        return self._unpatchify(x, height, width)

    # ------------------------------------------------------------------ training
    def loss(self, codes: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for codes [B, 6, t, H, W] keeping `keep` [B * regions] registers per region: the
        regression's MSE on the codes and the flow's MSE on velocities (t drawn logit-normal, as SD3 does)."""
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

    def draw_keep(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nested dropout: registers kept by each of n regions, log-uniform in 1..R, and none for 1 in 16
        (prefixes shorter than the region count leave regions empty)."""
        r = self.config.registers
        u = torch.rand(n, generator=generator) * math.log2(r + 1)
        keep = torch.floor(2**u).long().clamp(1, r)
        return torch.where(torch.rand(n, generator=generator) < 1 / 16, 0, keep)
