"""The InfoTok release's networks: the Cosmos DV4x8x8 base and the release's transformer stacks.

Written from the architecture the release describes (a fork of NVIDIA Cosmos-Predict1), so that its
published weights run here after `infotok.convert`; our own module names, computed in our own way.

Base (`CosmosTokenizer`), for video x [B, 3, T = 1 + 4k, H, W] in [-1, 1]:
```
3D Haar wavelet, patch 2 (frame 0 doubled first)     [B, 24, 1 + 2k, H/2, W/2]
encoder: stem, 3 levels x 2 residual blocks (channels x [2, 4, 4]), hybrid down-sampling after
         levels 0 (space + time) and 1 (space), mid (block, spatial attention, causal temporal
         attention, block), GroupNorm, swish, head                   h [B, 256, 1 + k, H/8, W/8]
quant_conv 256 -> 6 (fp32), FSQ [8, 8, 8, 5, 5, 5]   codes [B, 6, t, h, w], indices [B, t, h, w]
post_quant_conv 6 -> 256                             f [B, 256, t, h, w]
decoder: stem, mid, 3 levels x 3 residual blocks, hybrid up-sampling (space; then space + time),
         GroupNorm, swish, head, inverse Haar        x [B, 3, T, H, W]
```
Every convolution is factorized into a (1, 3, 3) spatial and a (3, 1, 1) temporal kernel (1x1x1 for
projections); time padding repeats the first frame, so the network is causal: latent frame j depends
on frames <= 4j only. GroupNorm has one group and normalizes each frame on its own. Activations are
kept in `torch.channels_last_3d` (frame-wise channels-last), which is the fastest layout for these
convolutions on a CPU and makes the per-frame norms and the 1x1x1 projections free views. The
full-resolution levels (the encoder's before its mid block, the decoder's after it) run streamed over
time, a few latent frames at a time, each causal convolution carrying its last input frames over to
the next chunk: the same outputs with a fraction of the memory.

Transformer stacks (`ReleaseTransformer`): 8 pre-RMSNorm layers of width 256, 32 heads, SwiGLU MLP
256 -> 512, 2D rotary positions within each latent frame (theta 10000), a learned embedding per latent
frame (at most 49), block-causal attention (a latent frame sees itself and earlier ones). In the
release the compressor runs on the encoder output h (before quant_conv) and the decompressor on
post_quant_conv's output f (before the decoder); both share one temporal embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ

from .base import FSQ_LEVELS, BaseTokenizer

CL3 = torch.channels_last_3d
NORM_EPS = 1e-6


# ------------------------------------------------------------------------------------ layouts
def _cl(x: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, H, W] stored frame-wise channels-last (no copy if it already is)."""
    return x if x.is_contiguous(memory_format=CL3) else x.contiguous(memory_format=CL3)


def _store(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] (channels-last) -> its storage view [B, T, H, W, C] (contiguous, no copy)."""
    return _cl(x).permute(0, 2, 3, 4, 1)


def _unstore(s: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, C] contiguous -> [B, C, T, H, W] channels-last view."""
    return s.permute(0, 4, 1, 2, 3)


def _causal_pad(x: torch.Tensor, n: int, cache: dict | None, key: object, keep: int | None = None) -> torch.Tensor:
    """x [B, C, T, H, W] preceded by n frames of causal history (padding in time).

    The history is n copies of frame 0 at the start of a sequence, or, in a pass streamed over time
    in chunks, the frames that `key` left in `cache` from the previous chunk; the last `keep`
    (default n) frames are left there for the next one. Chunked and whole passes compute the same.
    """
    s = _store(x)
    prev = None if cache is None else cache.get(key)
    head = s[:, :1].expand(-1, n, -1, -1, -1) if prev is None else prev
    padded = torch.cat([head, s], dim=1)
    if cache is not None:
        tail = padded[:, padded.shape[1] - (n if keep is None else keep) :]
        if prev is not None and prev.shape == tail.shape and not tail.requires_grad:
            prev.copy_(tail)  # reuse the buffer: no new long-lived allocation (heap fragmentation) per chunk
        else:
            cache[key] = tail.clone()  # a copy: the view would keep `padded` alive
    return _unstore(padded)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W], channels-last (a view where x is channels-last)."""
    b, c, t, hh, ww = x.shape
    return _store(x).reshape(b * t, hh, ww, c).permute(0, 3, 1, 2)


def _unframes(y: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of `_frames`: [B*T, C, H, W] channels-last -> [B, C, T, H, W] channels-last."""
    bt, c, hh, ww = y.shape
    return _unstore(_cl2(y).permute(0, 2, 3, 1).reshape(b, bt // b, hh, ww, c))


def _cl2(y: torch.Tensor) -> torch.Tensor:
    cl = torch.channels_last
    return y if y.is_contiguous(memory_format=cl) else y.contiguous(memory_format=cl)


def _spatial_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A (1, kh, kw) convolution as a 2D one over the frames (oneDNN's 2D kernels are as fast or
    faster, also for one frame or a few input channels, where the 3D path falls back to a slow one)."""
    y = F.conv2d(_frames(x), conv.weight[:, :, 0], conv.bias, conv.stride[1:], conv.padding[1:])
    return _unframes(y, x.shape[0])


def _temporal_conv(conv: nn.Conv3d, x: torch.Tensor, cache: dict | None, key: object) -> torch.Tensor:
    """The causal (3, 1, 1) convolution, out[t] = b + W2 x[t] + W1 x[t-1] + W0 x[t-2], as matrix
    products that read the frames in place (no time-padded copy, and faster than the 3D kernel).

    x[-2], x[-1] are the causal history (see `_causal_pad`): frame 0 twice at the start of a
    sequence, else the frames that `key` left in `cache` from the previous chunk.
    """
    s = _store(x)  # [B, T, H, W, C]
    b, t, hh, ww, c = s.shape
    prev = None if cache is None else cache.get(key)
    hist = s[:, :1].expand(-1, 2, -1, -1, -1) if prev is None else prev
    taps = conv.weight[:, :, :, 0, 0].permute(2, 1, 0).contiguous()  # [3, C_in, C_out]
    out = F.linear(s, taps[2].t(), conv.bias)  # [B, T, H, W, C_out]
    dt, n = out.dtype, hh * ww  # in-place products are not autocast: match the output's dtype
    taps = taps.to(dt)
    for i in range(b):
        xi, hi, oi = s[i].reshape(t * n, c).to(dt), hist[i].reshape(2 * n, c).to(dt), out[i].view(t * n, -1)
        oi[n:].addmm_(xi[:-n], taps[1])
        oi[2 * n :].addmm_(xi[: -2 * n], taps[0])
        oi[:n].addmm_(hi[n:], taps[1]).addmm_(hi[:n], taps[0])
        if t > 1:
            oi[n : 2 * n].addmm_(hi[n:], taps[0])
    if cache is not None:
        if prev is not None and not s.requires_grad:  # reuse the buffer: no new long-lived allocation per chunk
            if t == 1:
                prev[:, 0] = prev[:, 1]
                prev[:, 1] = s[:, 0]
            else:
                prev.copy_(s[:, -2:])
        else:
            cache[key] = torch.cat([hist, s[:, -2:]], dim=1)[:, -2:].clone()
    return _unstore(out)


def _frame_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """One-group GroupNorm of every frame on its own (keeps causality)."""
    b, c, t, hh, ww = x.shape
    frames = _cl(x).permute(0, 2, 1, 3, 4).reshape(b * t, c, hh, ww)
    y = F.group_norm(frames, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return y.reshape(b, t, c, hh, ww).permute(0, 2, 1, 3, 4)


def _norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """swish(frame norm): the swish overwrites the norm's fresh output where no gradient needs it."""
    y = _frame_norm(norm, x)
    return F.silu(y, inplace=not y.requires_grad)


def _pointwise(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 convolution as a matmul over the channels-last storage."""
    return _unstore(F.linear(_store(x), conv.weight.flatten(1), conv.bias))


# ------------------------------------------------------------------------------ Haar wavelet
def _haar_matrix(device, dtype) -> torch.Tensor:
    """S [8, 8]: S[f, d] = +-1, f = (time, row, column) band bits, d = (dt, dh, dw) offsets.

    Band bit 0 is the sum of a pair, bit 1 the difference (first minus second). The forward
    transform is coef = S x / 8, the inverse x = S^T coef (S S^T = 8 I).
    """
    bits = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])
    sign = torch.where((bits[:, None, :] & bits[None, :, :]).sum(-1) % 2 == 1, -1.0, 1.0)
    return sign.to(device=device, dtype=dtype)


def haar_patch(x: torch.Tensor, first: bool = True) -> torch.Tensor:
    """video [B, C, 1 + 2n', H, W] -> [B, 8C, ..] : frame 0 doubled, one level of 2x2x2 Haar.

    Output channel f * C + c holds band f of input channel c (the release's order). `first=False`:
    x is a later chunk of a video ([B, C, 2n', H, W], frame pairs), nothing is doubled.
    """
    b, c = x.shape[:2]
    if first:
        x = torch.cat([x[:, :, :1], x], dim=2)
    t2, h2, w2 = x.shape[2] // 2, x.shape[3] // 2, x.shape[4] // 2
    blocks = x.reshape(b, c, t2, 2, h2, 2, w2, 2).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, t2, h2, w2, 8, c)
    with torch.autocast(x.device.type, enabled=False):  # exact +-1/8 sums in the input's precision
        coef = torch.matmul(_haar_matrix(x.device, x.dtype) / 8, blocks)
    return _unstore(coef.reshape(b, t2, h2, w2, 8 * c))


def haar_unpatch(y: torch.Tensor, first: bool = True) -> torch.Tensor:
    """Inverse of `haar_patch`: [B, 8C, t, h, w] -> [B, C, 2t - 1, 2h, 2w] (drops the doubled frame 0;
    `first=False`, a later chunk: [B, C, 2t, 2h, 2w]).

    Computed in fp32 (also under autocast), so the decoded video is fp32.
    """
    b, c8, t, h, w = y.shape
    c = c8 // 8
    coef = _store(y).reshape(b, t, h, w, 8, c).float()
    with torch.autocast(y.device.type, enabled=False):
        x = torch.matmul(_haar_matrix(y.device, torch.float32).t(), coef)
    x = x.reshape(b, t, h, w, 2, 2, 2, c).permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, 2 * t, 2 * h, 2 * w)
    return x[:, :, 1:] if first else x


# --------------------------------------------------------------------------- building blocks
class FactorizedConv(nn.Module):
    """(1, 3, 3) spatial convolution (zero padding) then (3, 1, 1) causal temporal convolution.

    Every module with a temporal kernel takes `cache`, the state of a pass streamed over time in
    chunks (see `_causal_pad`); None for a whole sequence at once.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.spatial = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(cout, cout, (3, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return _temporal_conv(self.temporal, _spatial_conv(self.spatial, x), cache, self)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, cin, eps=NORM_EPS)
        self.conv1 = FactorizedConv(cin, cout)
        self.norm2 = nn.GroupNorm(1, cout, eps=NORM_EPS)
        self.conv2 = FactorizedConv(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.conv1(_norm_silu(self.norm1, x), cache)
        h = self.conv2(_norm_silu(self.norm2, h), cache)
        return h.add_(x if self.skip is None else _pointwise(self.skip, x))  # h: the conv's fresh output


class SpaceAttention(nn.Module):
    """Single-head attention among the positions of each frame, residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, ch, eps=NORM_EPS)
        self.q, self.k, self.v, self.out = (nn.Conv3d(ch, ch, 1) for _ in range(4))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight]).flatten(1)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        return F.linear(_store(_frame_norm(self.norm, x)), w, bias).chunk(3, dim=-1)  # each [B, T, H, W, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = x.shape
        q, k, v = (z.reshape(b * t, 1, hh * ww, c) for z in self._qkv(x))
        o = F.scaled_dot_product_attention(q, k, v).reshape(b, t, hh, ww, c)
        return x + _unstore(F.linear(o, self.out.weight.flatten(1), self.out.bias))


class TimeAttention(SpaceAttention):
    """Single-head causal attention along time at each position, residual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = x.shape
        q, k, v = (z.permute(0, 2, 3, 1, 4).reshape(b * hh * ww, 1, t, c) for z in self._qkv(x))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o = o.reshape(b, hh, ww, t, c).permute(0, 3, 1, 2, 4)
        return x + _unstore(F.linear(o, self.out.weight.flatten(1), self.out.bias))


class MidBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block1 = ResBlock(ch, ch)
        self.space_attn = SpaceAttention(ch)
        self.time_attn = TimeAttention(ch)
        self.block2 = ResBlock(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequences only: the temporal attention is not streamed."""
        return self.block2(self.time_attn(self.space_attn(self.block1(x))))


class HybridDown(nn.Module):
    """Halve space (strided conv + 2x2 average) and/or time (causal strided conv + pair average), then 1x1x1."""

    def __init__(self, ch: int, space: bool, time: bool):
        super().__init__()
        self.spatial = nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2)) if space else None
        self.temporal = nn.Conv3d(ch, ch, (3, 1, 1), stride=(2, 1, 1)) if time else None
        self.mix = nn.Conv3d(ch, ch, 1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        if self.spatial is not None:
            s = _store(x)
            b, t, hh, ww, c = s.shape
            padded = s.new_zeros(b, t, hh + 1, ww + 1, c)  # one zero row and column at the far end
            padded[:, :, :hh, :ww] = s
            pooled = _unframes(F.avg_pool2d(_frames(x), 2), b)  # (a reduction over a strided view is 30x slower)
            x = _spatial_conv(self.spatial, _unstore(padded)).add_(pooled)
        if self.temporal is not None:
            s = _store(x)
            first = cache is None or self not in cache
            if s.shape[1] % 2 != first:
                raise ValueError(
                    "temporal down-sampling expects an odd number of frames (1 + 2k), "
                    "and chunks after the first an even number"
                )
            # the pair average sees [x0, x0, x1, x2, ...]; the strided conv one more copy of x0.
            # Streamed, the conv keeps the last frame: the next output's window starts there.
            pooled = torch.cat([s[:, :1], s], dim=1) if first else s
            pooled = pooled.reshape(s.shape[0], -1, 2, *s.shape[2:])
            pooled = (pooled[:, :, 0] + pooled[:, :, 1]).mul_(0.5)
            x = self.temporal(_causal_pad(x, 2 if first else 1, cache, self, keep=1)).add_(_unstore(pooled))
        return _pointwise(self.mix, x)


class HybridUp(nn.Module):
    """Double time (frames x0, x1, x1, x2, x2, ... + causal conv) and/or space (nearest + conv), then 1x1x1."""

    def __init__(self, ch: int, space: bool, time: bool):
        super().__init__()
        self.temporal = nn.Conv3d(ch, ch, (3, 1, 1)) if time else None
        self.spatial = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1)) if space else None
        self.mix = nn.Conv3d(ch, ch, 1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        if self.temporal is not None:
            s = _store(x)
            first = cache is None or self not in cache  # frame 0 of a sequence is not doubled
            rest = s[:, 1:] if first else s
            rest = rest.unsqueeze(2).expand(-1, -1, 2, -1, -1, -1).reshape(s.shape[0], 2 * rest.shape[1], *s.shape[2:])
            x = _unstore(torch.cat([s[:, :1], rest], dim=1) if first else rest)
            x = _temporal_conv(self.temporal, x, cache, self).add_(x)
        if self.spatial is not None:
            return self._space_up_mix(x)
        return _pointwise(self.mix, x)

    def _space_up_mix(self, x: torch.Tensor) -> torch.Tensor:
        """mix(u + spatial(u)), u = x up-sampled 2x (nearest), computed on x's own grid.

        Output pixel (2i + py, 2j + px) sees, through the 3x3 kernel on u, a 2x2 neighbourhood of x
        (rows i - 1, i for py = 0; i, i + 1 for py = 1; likewise columns), with the taps that land on
        the same pixel of x summed: four 2x2 convolutions, one per phase (py, px), instead of a 3x3
        one at 4x the pixels (16 taps per pixel of x instead of 36), and u is never built. The 1x1x1
        mix is applied per phase, before the phases are interleaved.
        """
        s = _store(x)
        b, t, hh, ww, c = s.shape
        frames = _frames(x)
        w = self.spatial.weight[:, :, 0]  # [O, I, 3, 3]
        mix_w, mix_b = self.mix.weight.flatten(1), self.mix.bias
        out = s.new_empty(b, t, hh, 2, ww, 2, mix_w.shape[0])
        for py in (0, 1):
            r = w[:, :, 0:2].clone() if py == 0 else w[:, :, 1:3].clone()  # rows (i - 1, i) / (i, i + 1)
            r[:, :, 1 - py] += w[:, :, 2 - 2 * py]  # the tap on the same row of x
            for px in (0, 1):
                k = r[..., 0:2].clone() if px == 0 else r[..., 1:3].clone()
                k[..., 1 - px] += r[..., 2 - 2 * px]
                y = F.conv2d(frames, k, self.spatial.bias, padding=1)[:, :, py : py + hh, px : px + ww]
                y = (y + frames).permute(0, 2, 3, 1)
                out[:, :, :, py, :, px] = F.linear(y, mix_w, mix_b).reshape(b, t, hh, ww, -1)
                del y
        return _unstore(out.reshape(b, t, 2 * hh, 2 * ww, -1))


class Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(name, resample)


def _from_dict(cls, d: dict, kind: str):
    """A config dataclass from config.json's section, refusing another kind or unknown fields."""
    d = dict(d)
    found = d.pop("kind", kind)
    if found != kind:
        raise ValueError(f"not a {kind} config (kind {found!r})")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {kind} config fields: {', '.join(sorted(unknown))}")
    return cls(**d)


# --------------------------------------------------------------------------------- the base
@dataclass
class CosmosConfig:
    """Sizes of the Cosmos DV4x8x8 base (defaults: the released model, 112.6M parameters)."""

    channels: int = 128
    channels_mult: tuple[int, ...] = (2, 4, 4)
    encoder_res_blocks: int = 2
    decoder_res_blocks: int = 3
    z_channels: int = 256
    in_channels: int = 3
    levels: tuple[int, ...] = field(default_factory=lambda: FSQ_LEVELS)

    def __post_init__(self):
        self.channels_mult = tuple(int(m) for m in self.channels_mult)
        self.levels = tuple(int(v) for v in self.levels)
        if len(self.channels_mult) < 3:
            raise ValueError("channels_mult needs at least 3 levels (two spatial and one temporal down-sampling)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels_mult"], d["levels"] = list(self.channels_mult), list(self.levels)
        return {"kind": "cosmos"} | d

    @classmethod
    def from_dict(cls, d: dict) -> "CosmosConfig":
        return _from_dict(cls, d, "cosmos")


# down-sampling steps after the wavelet (patch 2): 4x8x8 = 2x2x2 (wavelet) * 2x4x4 (network)
_SPACE_STEPS, _TIME_STEPS = 2, 1
_FRAMES_PER_LATENT = 2 * 2**_TIME_STEPS
# Latent frames per chunk where the encoder (before its mid block) and the decoder (after its mid
# block) run streamed over time: their activations at full resolution are the peak memory, and a
# few frames at a time keep it small at no cost in speed. Outputs equal a whole pass up to rounding.
CHUNK_LATENT_FRAMES = 2


def _video_frames(a: int, b: int) -> tuple[int, int]:
    """Video frames [lo, hi) behind latent frames [a, b): frame 0 for latent 0, 4 frames for each other."""
    return max(0, _FRAMES_PER_LATENT * a - _FRAMES_PER_LATENT + 1), max(
        0, _FRAMES_PER_LATENT * b - _FRAMES_PER_LATENT + 1
    )


class CosmosEncoder(nn.Module):
    def __init__(self, c: CosmosConfig):
        super().__init__()
        widths = [c.channels * m for m in c.channels_mult]
        self.stem = FactorizedConv(c.in_channels * 8, c.channels)
        self.levels = nn.ModuleList()
        cin = c.channels
        for i, cout in enumerate(widths):
            blocks = [ResBlock(cin if j == 0 else cout, cout) for j in range(c.encoder_res_blocks)]
            down = None
            if i < len(widths) - 1 and (i < _SPACE_STEPS or i < _TIME_STEPS):
                down = HybridDown(cout, space=i < _SPACE_STEPS, time=i < _TIME_STEPS)
            self.levels.append(Level(blocks, down, "down"))
            cin = cout
        self.mid = MidBlock(cin)
        self.norm_out = nn.GroupNorm(1, cin, eps=NORM_EPS)
        self.head = FactorizedConv(cin, c.z_channels)
        self.chunk = CHUNK_LATENT_FRAMES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, 1 + 4k, H, W]; everything before the mid block streamed over `chunk` latent frames."""
        cache: dict = {}
        frames = 1 + (x.shape[2] - 1) // _FRAMES_PER_LATENT
        out = None  # allocated once, outside the chunks' working memory (less heap fragmentation)
        for a in range(0, frames, self.chunk):
            lo, hi = _video_frames(a, a + self.chunk)
            h = self.stem(haar_patch(x[:, :, lo:hi], first=a == 0), cache)
            for level in self.levels:
                for block in level.blocks:
                    h = block(h, cache)
                if hasattr(level, "down"):
                    h = level.down(h, cache)
            s = _store(h)
            if out is None:
                out = s.new_empty(s.shape[0], frames, *s.shape[2:])
            out[:, a : a + s.shape[1]] = s
            del h, s
        return self.head(_norm_silu(self.norm_out, self.mid(_unstore(out))))


class CosmosDecoder(nn.Module):
    def __init__(self, c: CosmosConfig):
        super().__init__()
        widths = [c.channels * m for m in c.channels_mult]
        n = len(widths)
        cin = widths[-1]
        self.stem = FactorizedConv(c.z_channels, cin)
        self.mid = MidBlock(cin)
        levels: list[Level] = [None] * n  # type: ignore[list-item]
        for i in reversed(range(n)):  # deepest level first; levels[i] mirrors encoder level i
            cout = widths[i]
            blocks = [ResBlock(cin if j == 0 else cout, cout) for j in range(c.decoder_res_blocks)]
            up = None
            if i > 0:
                r = n - 1 - i  # how many levels were decoded before this one
                time = 0 < r <= _TIME_STEPS
                space = time or r < _SPACE_STEPS
                up = HybridUp(cout, space=space, time=time) if space or time else None
            levels[i] = Level(blocks, up, "up")
            cin = cout
        self.levels = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(1, cin, eps=NORM_EPS)
        self.head = FactorizedConv(cin, c.in_channels * 8)
        self.chunk = CHUNK_LATENT_FRAMES

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """f [B, z, t, h, w]; everything after the mid block streamed over `chunk` latent frames."""
        mid = self.mid(self.stem(f))
        b, _, t, hh, ww = mid.shape
        scale = 2**_SPACE_STEPS * 2  # the network's spatial up-sampling, then the wavelet's
        # allocated once, outside the chunks' working memory (less heap fragmentation)
        out = mid.new_empty(
            b, self.head.temporal.out_channels // 8, _video_frames(0, t)[1], hh * scale, ww * scale, dtype=torch.float32
        )
        cache: dict = {}
        for a in range(0, t, self.chunk):
            h = mid[:, :, a : a + self.chunk]
            for level in reversed(self.levels):
                for block in level.blocks:
                    h = block(h, cache)
                if hasattr(level, "up"):
                    h = level.up(h, cache)
            lo, hi = _video_frames(a, a + self.chunk)
            out[:, :, lo:hi] = haar_unpatch(self.head(_norm_silu(self.norm_out, h), cache), first=a == 0)
            del h
        return out


class CosmosTokenizer(BaseTokenizer):
    """The release's base tokenizer behind our `BaseTokenizer` seam.

    encode_features: x [B, 3, T, H, W] -> h [B, z_channels, t, h, w]; quantize: quant_conv + FSQ in
    fp32 (also under autocast); features_from_codes: post_quant_conv -> [B, z_channels, t, h, w];
    decode_features -> x [B, 3, T, H, W]. T = 1 + 4k; H and W multiples of 8 (the wavelet halves
    them once, the encoder twice more, each time exactly).
    """

    def __init__(self, config: CosmosConfig | None = None):
        super().__init__()
        self.config = c = config or CosmosConfig()
        self.levels = tuple(c.levels)
        self.feature_dim = self.decoder_dim = c.z_channels
        self.encoder = CosmosEncoder(c)
        self.decoder = CosmosDecoder(c)
        self.quant_conv = nn.Conv3d(c.z_channels, len(self.levels), 1)
        self.post_quant_conv = nn.Conv3d(len(self.levels), c.z_channels, 1)
        # vector-quantize-pytorch's FSQ is the release's quantizer exactly: same tanh bound
        # (eps 1e-3, half-step shift for even levels), round-half-to-even, codes k / (L // 2),
        # index = sum of digits with the first level least significant. Its buffers are not saved
        # (built on the CPU even under a meta-device context, which FSQ's constructor cannot use).
        with torch.device("cpu"):
            self.fsq = FSQ(levels=list(self.levels))

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder, self.quant_conv]

    def _check(self, x: torch.Tensor) -> None:
        tf, sf = self.temporal_factor, self.spatial_factor
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video [B, {self.config.in_channels}, T, H, W], got {tuple(x.shape)}")
        if (x.shape[2] - 1) % tf or x.shape[3] % sf or x.shape[4] % sf:
            raise ValueError(
                f"video shape {tuple(x.shape)} is not on the model grid "
                f"(T = 1 + {tf}k, H and W multiples of {sf}); pad it first"
            )

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.encoder(x)

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(h.device.type, enabled=False):
            w, b = self.quant_conv.weight.float().flatten(1), self.quant_conv.bias.float()
            z = F.linear(_store(h).float(), w, b).permute(0, 4, 1, 2, 3)
            codes, indices = self.fsq(z)
        return codes.float(), indices.long()

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in [0, {self.codebook_size})")
        return self.fsq.indices_to_codes(indices.long()).float()

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        w = self.post_quant_conv.weight
        s = codes.permute(0, 2, 3, 4, 1)
        if not torch.is_autocast_enabled(codes.device.type):
            s = s.to(w.dtype)
        return _unstore(F.linear(s, w.flatten(1), self.post_quant_conv.bias))

    def decode_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.decoder(f)


def zero_code_index(levels: tuple[int, ...] = FSQ_LEVELS) -> int:
    """The index whose FSQ code is all zeros: what the release decodes at a dropped position."""
    index, basis = 0, 1
    for level in levels:
        index += (level // 2) * basis
        basis *= level
    return index


# --------------------------------------------------------------------- the transformer stacks
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


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CosmosConfig",
    "CosmosTokenizer",
    "ReleaseCompressorConfig",
    "ReleaseTransformer",
    "release_stacks",
    "haar_patch",
    "haar_unpatch",
    "zero_code_index",
    "parameter_count",
]
