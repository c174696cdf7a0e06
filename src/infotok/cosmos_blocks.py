"""The Cosmos base's building blocks: activation layouts, causal convolutions streamed over time, the 3D
Haar wavelet, residual, attention and resampling blocks (`cosmos` assembles them).
"""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn as nn
import torch.nn.functional as F

CL3 = torch.channels_last_3d
NORM_EPS = 1e-6


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
