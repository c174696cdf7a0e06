"""The InfoTok release's transformer stacks (its compressor and decompressor), run here after `infotok.convert`.

Transformer stacks (`ReleaseTransformer`): 8 pre-RMSNorm layers of width 256, 32 heads, SwiGLU MLP
256 -> 512, 2D rotary positions within each latent frame (theta 10000), a learned embedding per latent
frame (at most 49), block-causal attention (a latent frame sees itself and earlier ones). In the
release the compressor runs on the encoder output h (before quant_conv) and the decompressor on
post_quant_conv's output f (before the decoder); both share one temporal embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cosmos_blocks import _from_dict, _store, _unstore


@dataclass
class ReleaseCompressorConfig:
    """The release's compressor / decompressor stacks (defaults: InfoTok-Flex)."""

    width: int = 256
    encoder_layers: int = 8
    decoder_layers: int = 8
    heads: int = 32
    mlp_hidden: int = 512
    max_latent_frames: int = 49
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return {"kind": "release"} | asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReleaseCompressorConfig":
        return _from_dict(cls, d, "release")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_angles_2d(h: int, w: int, head_dim: int, theta: float, device) -> torch.Tensor:
    """Angles [h*w, head_dim/2] of the pairs (2i, 2i+1): the first half rotates with the row, the
    second with the column; frequencies theta^(-2i/head_dim), alternately assigned to rows and columns."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    rows = torch.arange(h, device=device, dtype=torch.float32)[:, None, None] * freqs[0::2]
    cols = torch.arange(w, device=device, dtype=torch.float32)[None, :, None] * freqs[1::2]
    return torch.cat([rows.expand(h, w, -1), cols.expand(h, w, -1)], dim=-1).reshape(h * w, -1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., N, heads, D] with pairs (x[2i], x[2i+1]) rotated by angle [N, D/2]; math in fp32."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


class ReleaseAttention(nn.Module):
    """Multi-head block-causal attention as the release computes it.

    The release projects x to q, k, v, rotates q and k, and then hands them to
    `nn.MultiheadAttention`, which applies the same input projection a second time. Trained
    weights expect that, so it is reproduced: q = W_q rot(W_q x + b_q) + b_q, likewise k;
    v = W_v (W_v x + b_v) + b_v.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, frames: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, t*n, width] in (t, h, w) order; cos/sin [t*n, head_dim/2]."""
        b, seq, width = x.shape
        d = width // self.heads
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        q = _rotate(q.reshape(b, seq, self.heads, d), cos[:, None], sin[:, None]).reshape(b, seq, width)
        k = _rotate(k.reshape(b, seq, self.heads, d), cos[:, None], sin[:, None]).reshape(b, seq, width)
        wq, wk, wv = self.in_proj.weight.chunk(3)
        bq, bk, bv = self.in_proj.bias.chunk(3)
        # [B, heads, seq, d] contiguous: the attention kernel reads each head's rows at unit stride
        q, k, v = (
            F.linear(z, w_, b_).reshape(b, seq, self.heads, d).transpose(1, 2).contiguous()
            for z, w_, b_ in ((q, wq, bq), (k, wk, bk), (v, wv, bv))
        )
        per_frame = seq // frames
        out = q.new_empty(b, seq, self.heads, d).transpose(1, 2)
        for j in range(frames):  # queries of latent frame j see keys of latent frames 0..j
            lo, hi = j * per_frame, (j + 1) * per_frame
            out[:, :, lo:hi] = F.scaled_dot_product_attention(q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi])
        return self.out_proj(out.transpose(1, 2).reshape(b, seq, width))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class ReleaseLayer(nn.Module):
    def __init__(self, c: ReleaseCompressorConfig):
        super().__init__()
        self.norm_attn = RMSNorm(c.width, c.norm_eps)
        self.attn = ReleaseAttention(c.width, c.heads)
        self.norm_mlp = RMSNorm(c.width, c.norm_eps)
        self.mlp = SwiGLU(c.width, c.mlp_hidden)

    def forward(self, x: torch.Tensor, frames: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), frames, cos, sin)
        return x + self.mlp(self.norm_mlp(x))


class ReleaseTransformer(nn.Module):
    """features [B, width, t, h, w] -> [B, width, t, h, w]: + temporal embedding, `depth` layers.

    No input/output projection and no final norm (the release's stacks have none when the width
    equals the feature channels, as in InfoTok-Flex). `time_embed` may be another stack's parameter:
    the release's compressor and decompressor share one (see `release_stacks`).
    """

    def __init__(self, config: ReleaseCompressorConfig, depth: int, time_embed: nn.Parameter | None = None):
        super().__init__()
        self.config = config
        if time_embed is None:
            time_embed = nn.Parameter(torch.randn(config.max_latent_frames, config.width) * 0.02)
        elif tuple(time_embed.shape) != (config.max_latent_frames, config.width):
            raise ValueError(
                f"shared time embedding has shape {tuple(time_embed.shape)}, expected "
                f"{(config.max_latent_frames, config.width)}"
            )
        self.time_embed = time_embed
        self.layers = nn.ModuleList(ReleaseLayer(config) for _ in range(depth))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = feats.shape
        if c != self.config.width:
            raise ValueError(f"features have {c} channels, the transformer {self.config.width}")
        if t > self.config.max_latent_frames:
            raise ValueError(
                f"{t} latent frames exceed the model's {self.config.max_latent_frames}; use shorter windows"
            )
        x = _store(feats) + self.time_embed[:t, None, None, :].to(feats.dtype)  # [B, t, h, w, C]
        x = x.reshape(b, t * h * w, c)
        angles = rope_angles_2d(h, w, c // self.config.heads, self.config.rope_theta, feats.device).repeat(t, 1)
        cos, sin = angles.cos(), angles.sin()
        for layer in self.layers:
            x = layer(x, t, cos, sin)
        return _unstore(x.reshape(b, t, h, w, c))


def release_stacks(config: ReleaseCompressorConfig) -> tuple[ReleaseTransformer, ReleaseTransformer]:
    """(compressor, decompressor) as in the release: on h before quant_conv / on f after post_quant_conv.

    The two share one temporal-embedding parameter, as in the release (123,142,646 parameters with
    the default base). Their state dicts both list it (`time_embed`), as the same tensor: a caller
    that writes safetensors must clone it (`save_file` refuses tensors that share memory).
    """
    compressor = ReleaseTransformer(config, config.encoder_layers)
    return compressor, ReleaseTransformer(config, config.decoder_layers, time_embed=compressor.time_embed)
