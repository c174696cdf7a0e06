"""Block-causal transformer stacks around the quantizer (InfoTok's compressor and decompressor).

A token attends to tokens of its own latent frame and of earlier latent frames, never later ones,
so a clip can be extended without changing its past. Attention is computed one latent frame of
queries at a time against the prefix of keys. Spatially, a token sees either the whole latent frame
(`window=0`, the first checkpoints) or its `window x window` tile, with tiles shifted by half a tile
on every other layer so that information crosses tile borders (Swin's scheme, along with full causal
attention over time): the cost then grows linearly with the number of pixels instead of with its
square. Spatial positions use 2D rotary embeddings of the absolute position; latent time uses a
learned embedding.
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
    window: int = 0  # spatial attention tile in latent positions; 0: the whole latent frame

    def to_dict(self) -> dict:
        """Without `window` when it is 0, so the configs (and hashes) of whole-frame models stay as they were."""
        d = asdict(self)
        if not d["window"]:
            d.pop("window")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompressorConfig":
        return cls(**d)


def rope_2d(h: int, w: int, head_dim: int, device, dtype, top: int = 0, left: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [h*w, head_dim/2] rotating half the pairs by row and half by column; position
    (0, 0) is at row `top`, column `left` of the grid."""
    quarter = head_dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) - top,
                            torch.arange(w, device=device, dtype=torch.float32) - left, indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class Tiling:
    """How one layer cuts latent frames [h, w] into attention tiles: `tile` x `tile` (the whole frame
    when 0), offset by `shift`, zero-padded to whole tiles. Padded positions are never attended to."""

    def __init__(self, h: int, w: int, tile: int, shift: int):
        self.h, self.w = h, w
        self.tile_h, self.tile_w = (tile, tile) if tile else (h, w)
        self.top = self.left = shift if tile else 0
        self.rows = -(-(h + self.top) // self.tile_h)
        self.cols = -(-(w + self.left) // self.tile_w)
        self.pad = (0, 0, self.left, self.cols * self.tile_w - w - self.left, self.top, self.rows * self.tile_h - h - self.top)
        self.padded = any(self.pad)

    @property
    def per_tile(self) -> int:
        return self.tile_h * self.tile_w

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, t, h, w, C] -> [(B tiles), t * per_tile, C] in (t, row, column) order within a tile."""
        x = F.pad(x, self.pad) if self.padded else x
        return rearrange(x, "b t (i p) (j q) c -> (b i j) (t p q) c", p=self.tile_h, q=self.tile_w)

    def merge(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """split's inverse, padding dropped: [(B tiles), t * per_tile, C] -> [B, t, h, w, C]."""
        x = rearrange(x, "(b i j) (t p q) c -> b t (i p) (j q) c", b=batch, i=self.rows, j=self.cols, t=frames,
                      p=self.tile_h, q=self.tile_w)
        return x[:, :, self.top:self.top + self.h, self.left:self.left + self.w] if self.padded else x

    def rope(self, head_dim: int, frames: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [tiles, t * per_tile, head_dim/2] of every token in split's order."""
        cos, sin = rope_2d(self.rows * self.tile_h, self.cols * self.tile_w, head_dim, device, dtype, self.top, self.left)
        def per_tile(table):
            table = rearrange(table, "(i p j q) d -> (i j) (p q) d", i=self.rows, p=self.tile_h, j=self.cols, q=self.tile_w)
            return table.repeat(1, frames, 1)
        return per_tile(cos), per_tile(sin)

    def key_mask(self, frames: int, device) -> torch.Tensor | None:
        """bool [tiles, 1, 1, t * per_tile], False at padded positions; None without padding."""
        if not self.padded:
            return None
        valid = F.pad(torch.ones(1, 1, self.h, self.w, 1, device=device), self.pad)
        valid = rearrange(valid, "b t (i p) (j q) c -> (b i j) c (t p q)", p=self.tile_h, q=self.tile_w)
        return valid.bool()[:, :, None].repeat(1, 1, 1, frames)


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

    def forward(self, x: torch.Tensor, tiling: Tiling) -> torch.Tensor:
        """x [B, t, h, w, width]."""
        b, frames = x.shape[:2]
        per_frame = tiling.per_tile
        q, k, v = rearrange(self.qkv(tiling.split(self.norm1(x))), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        cos, sin = tiling.rope(q.shape[-1], frames, x.device, q.dtype)
        tiles = cos.shape[0]
        if b > 1:
            cos, sin = cos.repeat(b, 1, 1), sin.repeat(b, 1, 1)
        q, k = apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None])
        valid = tiling.key_mask(frames, x.device)
        if valid is not None and b > 1:
            valid = valid.repeat(b, 1, 1, 1)
        out = torch.empty_like(q)
        for j in range(frames):  # queries of latent frame j see keys of frames 0..j
            lo, hi = j * per_frame, (j + 1) * per_frame
            out[:, :, lo:hi] = F.scaled_dot_product_attention(q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi],
                                                              attn_mask=None if valid is None else valid[..., :hi])
        x = x + tiling.merge(self.proj(rearrange(out, "n h l d -> n l (h d)")), b, frames)
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
        x = self.proj_in(rearrange(feats, "b c t h w -> b t h w c"))
        x = x + self.time_embed[:t, None, None, :].to(x.dtype)
        tile = self.config.window
        for i, layer in enumerate(self.layers):
            x = layer(x, Tiling(h, w, tile, tile // 2 if i % 2 else 0))
        y = self.proj_out(self.norm_out(x))
        return feats + rearrange(y, "b t h w c -> b c t h w")
