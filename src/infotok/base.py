"""The fixed-rate causal base tokenizer (4x8x8, FSQ 8,8,8,5,5,5 = 64,000 codes).

`BaseTokenizer` is the small interface InfoTok builds on (features, quantize, decode), so a larger
pretrained base can be plugged in. `CausalConvTokenizer` is ours, designed for CPU speed: every
latent frame is computed by per-frame 2D convolutions over a 4-frame group folded into channels
(frame 0 forms its own group, replicated), followed by causal temporal mixing across latent frames.
Latent frame j therefore depends on frames <= 4j only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from vector_quantize_pytorch import FSQ

FSQ_LEVELS = (8, 8, 8, 5, 5, 5)


class BaseTokenizer(nn.Module):
    """What InfoTok needs from a base tokenizer.

    Shapes: video x [B, 3, T, H, W] in [-1, 1] with T = 1 + temporal_factor * k and H, W multiples
    of spatial_factor; features h [B, feature_dim, t, h, w]; codes [B, len(levels), t, h, w];
    indices [B, t, h, w] in [0, codebook_size).
    """

    temporal_factor: int = 4
    spatial_factor: int = 8
    feature_dim: int
    levels: tuple[int, ...]

    @property
    def codebook_size(self) -> int:
        n = 1
        for level in self.levels:
            n *= level
        return n

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features -> (codes, indices)."""
        raise NotImplementedError

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_features(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encode_features(x))[1]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode_features(self.features_from_codes(self.codes_from_indices(indices)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, _ = self.quantize(self.encode_features(x))
        return self.decode_features(self.features_from_codes(codes))


@dataclass
class BaseConfig:
    """Widths and depths of `CausalConvTokenizer` (hi = 1/4 resolution, lo = 1/8 resolution)."""

    enc_hi: int = 48
    enc_lo: int = 128
    enc_hi_blocks: int = 1
    enc_lo_blocks: int = 2
    dec_hi: int = 64
    dec_lo: int = 128
    dec_hi_blocks: int = 2
    dec_lo_blocks: int = 3
    levels: tuple[int, ...] = field(default_factory=lambda: FSQ_LEVELS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BaseConfig":
        d = dict(d)
        d["levels"] = tuple(d.get("levels", FSQ_LEVELS))
        return cls(**d)


class ResBlock2d(nn.Module):
    """conv3x3 - SiLU - conv3x3 with a skip; no normalisation so behaviour is independent of crop size."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.bias)
        self.conv2.weight.data.mul_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class CausalTemporalMix(nn.Module):
    """Residual causal mixing across latent frames: y_j = x_j + W [x_{j-1}, x_j] (x_{-1} = x_0)."""

    def __init__(self, ch: int):
        super().__init__()
        self.proj = nn.Linear(2 * ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x5 = rearrange(x, "(b t) c h w -> b t h w c", t=frames)
        prev = torch.cat([x5[:, :1], x5[:, :-1]], dim=1)
        y = x5 + self.proj(F.silu(torch.cat([prev, x5], dim=-1)))
        return rearrange(y, "b t h w c -> (b t) c h w")


class _Stage(nn.Module):
    def __init__(self, ch: int, blocks: int, temporal: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock2d(ch) for _ in range(blocks))
        self.mixes = nn.ModuleList(CausalTemporalMix(ch) for _ in range(blocks)) if temporal else None

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.mixes is not None:
                x = self.mixes[i](x, frames)
        return x


class CausalConvTokenizer(BaseTokenizer):
    """Our CPU-friendly causal 4x8x8 tokenizer (see module docstring)."""

    def __init__(self, config: BaseConfig | None = None):
        super().__init__()
        self.config = c = config or BaseConfig()
        self.levels = tuple(c.levels)
        self.feature_dim = c.enc_lo
        tf = self.temporal_factor
        # encoder: 4 frames x 3 channels, 4x4 patches -> 1/4 res; then 2x2 -> 1/8 res
        self.enc_in = nn.Conv2d(3 * tf * 16, c.enc_hi, 1)
        self.enc_hi = _Stage(c.enc_hi, c.enc_hi_blocks, temporal=False)
        self.enc_down = nn.Conv2d(c.enc_hi * 4, c.enc_lo, 1)
        self.enc_lo = _Stage(c.enc_lo, c.enc_lo_blocks, temporal=True)
        self.to_code = nn.Conv2d(c.enc_lo, len(self.levels), 1)
        self.fsq = FSQ(levels=list(self.levels))
        self.from_code = nn.Conv2d(len(self.levels), c.dec_lo, 1)
        self.dec_lo = _Stage(c.dec_lo, c.dec_lo_blocks, temporal=True)
        self.dec_up = nn.Conv2d(c.dec_lo, c.dec_hi * 4, 1)
        self.dec_hi = _Stage(c.dec_hi, c.dec_hi_blocks, temporal=False)
        self.dec_out = nn.Conv2d(c.dec_hi, 3 * tf * 16, 1)
        # decoder input features come from `from_code`, so the compressor sees enc_lo and the
        # decompressor dec_lo channels
        self.decoder_dim = c.dec_lo

    def _groups(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """[B, 3, 1 + 4k, H, W] -> [(B n), 3*4, H, W] with frame 0 replicated into its own group."""
        tf = self.temporal_factor
        if (x.shape[2] - 1) % tf or x.shape[-1] % self.spatial_factor or x.shape[-2] % self.spatial_factor:
            raise ValueError(f"video shape {tuple(x.shape)} is not on the model grid "
                             f"(T = 1 + {tf}k, H and W multiples of {self.spatial_factor}); pad it first")
        x = torch.cat([x[:, :, :1].expand(-1, -1, tf - 1, -1, -1), x], dim=2)
        n = x.shape[2] // tf
        return rearrange(x, "b c (n f) h w -> (b n) (c f) h w", f=tf), n

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        g, n = self._groups(x)
        y = self.enc_in(F.pixel_unshuffle(g, 4))
        y = self.enc_hi(y, n)
        y = self.enc_lo(self.enc_down(F.pixel_unshuffle(y, 2)), n)
        return rearrange(y, "(b n) c h w -> b c n h w", n=n)

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projection to the code space and FSQ in fp32, also under bf16 autocast: a rounding
        boundary must not move with the compute precision."""
        n = h.shape[2]
        with torch.autocast(h.device.type, enabled=False):
            z = self.to_code(rearrange(h.float(), "b c n h w -> (b n) c h w"))
            z = rearrange(z, "(b n) c h w -> b c n h w", n=n)
            return self.fsq(z)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"token indices must lie in [0, {self.codebook_size})")
        return self.fsq.indices_to_codes(indices.long())

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[2]
        y = self.from_code(rearrange(codes, "b c n h w -> (b n) c h w").to(self.from_code.weight.dtype))
        return rearrange(y, "(b n) c h w -> b c n h w", n=n)

    def decode_features(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[2]
        y = self.dec_lo(rearrange(h, "b c n h w -> (b n) c h w"), n)
        y = self.dec_hi(F.pixel_shuffle(self.dec_up(y), 2), n)
        y = F.pixel_shuffle(self.dec_out(F.silu(y)), 4)
        y = rearrange(y, "(b n) (c f) h w -> b c (n f) h w", n=n, f=self.temporal_factor)
        return y[:, :, self.temporal_factor - 1:]
