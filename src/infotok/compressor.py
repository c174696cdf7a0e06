"""Block-causal transformer stacks around the quantizer (InfoTok's compressor and decompressor).

A token attends to every token of its own latent frame and of earlier latent frames, never later
ones, so a clip can be extended without changing its past. Attention is computed one latent frame
of queries at a time against the prefix of keys: exact block-causal attention with memory linear in
the prefix, which keeps 256x256 clips affordable on a CPU. Spatial positions use 2D rotary
embeddings; latent time uses a learned embedding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


@dataclass
class CompressorConfig:
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    max_latent_frames: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CompressorConfig":
        return cls(**d)


def rope_2d(h: int, w: int, head_dim: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [h*w, head_dim/2] rotating half the pairs by row and half by column."""
    quarter = head_dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., N, D]; pairs (x[2i], x[2i+1]) rotated by the angle of position n."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class BlockCausalLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, frames: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, t*h*w, width] in (t, h, w) order."""
        b, n, d = x.shape
        per_frame = n // frames
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        cos_all, sin_all = cos.repeat(frames, 1), sin.repeat(frames, 1)
        q, k = apply_rope(q, cos_all, sin_all), apply_rope(k, cos_all, sin_all)
        out = torch.empty_like(q)
        for j in range(frames):  # queries of latent frame j see keys of frames 0..j
            lo, hi = j * per_frame, (j + 1) * per_frame
            out[:, :, lo:hi] = F.scaled_dot_product_attention(q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi])
        x = x + self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return x + self.mlp(self.norm2(x))


class BlockCausalTransformer(nn.Module):
    """features [B, C, t, h, w] -> features [B, C, t, h, w], residual; starts as the identity."""

    def __init__(self, channels: int, config: CompressorConfig):
        super().__init__()
        self.config = config
        self.proj_in = nn.Linear(channels, config.width)
        self.time_embed = nn.Parameter(torch.zeros(config.max_latent_frames, config.width))
        nn.init.normal_(self.time_embed, std=0.02)
        self.layers = nn.ModuleList(BlockCausalLayer(config.width, config.heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(config.width)
        self.proj_out = nn.Linear(config.width, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = feats.shape
        if t > self.config.max_latent_frames:
            raise ValueError(f"{t} latent frames exceed the model's {self.config.max_latent_frames}; use shorter windows")
        x = self.proj_in(rearrange(feats, "b c t h w -> b t (h w) c"))
        x = x + self.time_embed[:t, None, :].to(x.dtype)
        x = rearrange(x, "b t n c -> b (t n) c")
        cos, sin = rope_2d(h, w, self.config.width // self.config.heads, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, t, cos, sin)
        y = self.proj_out(self.norm_out(x))
        return feats + rearrange(y, "b (t h w) c -> b c t h w", t=t, h=h, w=w)
