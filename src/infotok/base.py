"""The fixed-rate causal base tokenizer (4x8x8, FSQ 8,8,8,5,5,5 = 64,000 codes).

`BaseTokenizer` is the small interface InfoTok builds on (features, quantize, decode), so a larger
pretrained base can be plugged in. `CausalConvTokenizer` is ours, designed for CPU speed: every
latent frame is computed by per-frame 2D convolutions over a 4-frame group folded into channels
(frame 0 forms its own group, replicated), followed by causal temporal mixing across latent frames.
Latent frame j therefore depends on frames <= 4j only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from vector_quantize_pytorch import FSQ

from .video import unit_range

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

    def code_space(self, h: torch.Tensor) -> torch.Tensor:
        """features -> what FSQ rounds, z [B, len(levels), t, h, w], in fp32 (also under autocast: a rounding
        boundary must not move with the compute precision)."""
        raise NotImplementedError

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features -> (codes, indices)."""
        return self.round_codes(self.code_space(h))

    def round_codes(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (`code_space`) -> (codes, indices): FSQ, in fp32."""
        with torch.autocast(z.device.type, enabled=False):
            codes, indices = self.fsq(z.float())
        return codes.float(), indices.long()

    def indices_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, C, ...] -> indices [B, ...]."""
        return self.fsq.codes_to_indices(codes.movedim(1, -1)).long()

    def level_values(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, C, ...] (`code_space`) -> the codes before FSQ rounds them, in code units: FSQ's bounded
        value over L // 2, so that `codes` is this rounded to the nearest level (levels 1 / (L // 2) apart)."""
        if self.fsq.has_projections:
            raise ValueError("level values are for an FSQ without projections")
        levels = self.fsq._levels.to(z.device)
        half_l = (levels - 1) * (1 + 1e-3) / 2  # vector-quantize-pytorch's bound (eps 1e-3)
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z.float().movedim(1, -1) + torch.atanh(offset / half_l)) * half_l - offset
        return (bounded / (levels // 2)).movedim(-1, 1)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_features(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encoder_modules(self) -> list[nn.Module]:
        """What turns pixels into codes: frozen when only the decoding side trains (`--train-selection
        drift`), so that the tokens, and every ranking and calibration read from them, stay as they were."""
        raise NotImplementedError

    # Whether `encode_features` takes uint8 pixels and converts them a chunk at a time (else the
    # window is converted to floats in [-1, 1] first)
    takes_uint8: bool = False

    def decoded_windows(self, h: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Inference: the decoded video in pieces laid out as windows, (start frame, frames), for the
        router to score as they come. A base that decodes in one go gives the whole video."""
        yield 0, self.decode_features(h)

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
        if torch.is_grad_enabled():
            return x + self.conv2(F.silu(self.conv1(F.silu(x))))
        # inference: the same sums, two full-size temporaries fewer (in place where nothing is kept)
        return self.conv2(F.silu(self.conv1(F.silu(x)), inplace=True)).add_(x)


class CausalTemporalMix(nn.Module):
    """Residual causal mixing across latent frames: y_j = x_j + W [x_{j-1}, x_j] (x_{-1} = x_0)."""

    def __init__(self, ch: int):
        super().__init__()
        self.proj = nn.Linear(2 * ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, frames: int, before: torch.Tensor | None = None) -> torch.Tensor:
        """`before` [B, 1, h, w, c]: the latent frame preceding x's first, when x is a later chunk of
        a window (None: x starts the window, x_{-1} = x_0)."""
        x5 = rearrange(x, "(b t) c h w -> b t h w c", t=frames)
        prev = torch.cat([x5[:, :1] if before is None else before, x5[:, :-1]], dim=1)
        # x5 first: the sum takes x5's (channels-first) layout, which the next convolution expects
        y = x5 + self.proj(F.silu(torch.cat([prev, x5], dim=-1), inplace=not torch.is_grad_enabled()))
        return rearrange(y, "b t h w c -> (b t) c h w")


class _Stage(nn.Module):
    def __init__(self, ch: int, blocks: int, temporal: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock2d(ch) for _ in range(blocks))
        self.mixes = nn.ModuleList(CausalTemporalMix(ch) for _ in range(blocks)) if temporal else None

    def forward(self, x: torch.Tensor, frames: int, carry: dict | None = None) -> torch.Tensor:
        """`carry` streams a window in chunks of latent frames: pass the same dict with each chunk in
        order; it keeps each mix's last input frame for the next chunk (the same outputs as whole)."""
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.mixes is not None:
                before = None if carry is None else carry.get(i)
                if carry is not None:
                    carry[i] = rearrange(x, "(b t) c h w -> b t h w c", t=frames)[:, -1:].clone()
                x = self.mixes[i](x, frames, before)
        return x


class CausalConvTokenizer(BaseTokenizer):
    takes_uint8 = True

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

    def encoder_modules(self) -> list[nn.Module]:
        return [self.enc_in, self.enc_hi, self.enc_down, self.enc_lo, self.to_code]

    # Full-resolution pixels (frame area x latent frames) per chunk: the whole tokenizer runs a few
    # latent frames at a time (the temporal mixes carry one frame between chunks), so its working
    # memory is a chunk's activations (~100-200 MB), not several copies of a 720p window (~400 MB each).
    chunk_pixels: int = 1 << 20

    def _chunks(self, n: int, height: int, width: int) -> list[tuple[int, int]]:
        """Ranges of latent frames processed together, of balanced sizes. With grad enabled one
        range: the activations are kept for backward anyway, so chunks would save nothing."""
        step = n if torch.is_grad_enabled() else max(1, self.chunk_pixels // (height * width))
        step = -(-n // -(-n // step))  # as many chunks, more even
        return [(j, min(n, j + step)) for j in range(0, n, step)]

    def _check_grid(self, x: torch.Tensor) -> None:
        tf = self.temporal_factor
        if (x.shape[2] - 1) % tf or x.shape[-1] % self.spatial_factor or x.shape[-2] % self.spatial_factor:
            raise ValueError(
                f"video shape {tuple(x.shape)} is not on the model grid "
                f"(T = 1 + {tf}k, H and W multiples of {self.spatial_factor}); pad it first"
            )

    def _patches(self, x: torch.Tensor, j0: int, j1: int) -> torch.Tensor:
        """Latent frames j0..j1-1's input patches [(B m), 3*4*16, H/4, W/4] gathered straight from x:
        slot f of group j is frame 4j - 3 + f, clamped at 0 (frame 0 replicated into its own group), so
        neither the replicated nor the rearranged whole window is ever built. uint8 pixels are converted
        here, a chunk at a time and after the rearrangement (one float copy, not two)."""
        tf = self.temporal_factor
        frames = (torch.arange(j0, j1)[:, None] * tf - (tf - 1) + torch.arange(tf)).clamp_(min=0)
        g = x[:, :, frames.to(x.device)]  # [B, 3, m, 4, H, W]
        return unit_range(F.pixel_unshuffle(g.transpose(1, 2).reshape(-1, x.shape[1] * tf, *x.shape[-2:]), 4))

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Also takes uint8 pixels [B, 3, T, H, W] (0..255, e.g. `to_model`'s permuted input before its
        conversion): each chunk is converted as it is read, the same values as `to_model`'s."""
        self._check_grid(x)
        b, n = x.shape[0], (x.shape[2] - 1) // self.temporal_factor + 1
        chunks, carry, out = self._chunks(n, *x.shape[-2:]), {}, None
        for j0, j1 in chunks:
            y = self.enc_hi(self.enc_in(self._patches(x, j0, j1)), j1 - j0)
            y = self.enc_lo(self.enc_down(F.pixel_unshuffle(y, 2)), j1 - j0, carry)
            y = rearrange(y, "(b n) c h w -> b c n h w", b=b)
            if len(chunks) == 1:
                return y
            out = y.new_empty(*y.shape[:2], n, *y.shape[3:]) if out is None else out
            out[:, :, j0:j1] = y
        return out

    def code_space(self, h: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial_factor
        with torch.autocast(h.device.type, enabled=False):  # in inference a few latent frames at a time
            z = [
                rearrange(
                    self.to_code(rearrange(h[:, :, j0:j1].float(), "b c n h w -> (b n) c h w")),
                    "(b n) c h w -> b c n h w",
                    n=j1 - j0,
                )
                for j0, j1 in self._chunks(h.shape[2], spatial * h.shape[-2], spatial * h.shape[-1])
            ]
            return z[0] if len(z) == 1 else torch.cat(z, dim=2)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"token indices must lie in [0, {self.codebook_size})")
        return self.fsq.indices_to_codes(indices.long())

    def features_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[2]
        y = self.from_code(rearrange(codes, "b c n h w -> (b n) c h w").to(self.from_code.weight.dtype))
        return rearrange(y, "(b n) c h w -> b c n h w", n=n)

    def _decode_chunk(self, h: torch.Tensor, j0: int, j1: int, carry: dict) -> torch.Tensor:
        """Latent frames j0..j1-1 of features h -> their 4-frame groups [(B m), 3*4, H, W]."""
        y = self.dec_lo(rearrange(h[:, :, j0:j1], "b c n h w -> (b n) c h w"), j1 - j0, carry)
        y = self.dec_hi(F.pixel_shuffle(self.dec_up(y), 2), j1 - j0)
        return F.pixel_shuffle(self.dec_out(F.silu(y, inplace=not torch.is_grad_enabled())), 4)

    def decode_features(self, h: torch.Tensor) -> torch.Tensor:
        """In chunks of latent frames (see `chunk_pixels`); in inference each chunk is written into one
        preallocated output, so no whole-window activation or shuffled copy is ever built."""
        b, n, tf = h.shape[0], h.shape[2], self.temporal_factor
        if torch.is_grad_enabled():  # one chunk: the activations are kept for backward anyway
            y = self._decode_chunk(h, 0, n, {})
            return rearrange(y, "(b n) (c f) h w -> b c (n f) h w", n=n, f=tf)[:, :, tf - 1 :]
        out = None
        for start, frames in self.decoded_windows(h):
            out = frames.new_empty(b, 3, tf * (n - 1) + 1, *frames.shape[-2:]) if out is None else out
            out[:, :, start : start + frames.shape[2]] = frames
        return out

    def decoded_windows(self, h: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Inference: the decoded video a few latent frames at a time (see `chunk_pixels`), in order, as
        (start, frames [B, 3, 1 + 4m, H, W]): frames start.. of the whole video, the m latent frames of
        the chunk after the frame before them (the previous chunk's last; in the first chunk frame 0,
        latent frame 0 itself). Each chunk is thus laid out as a window is, one frame then groups of 4,
        and can be scored as one (`router.token_errors`) without the whole decoded window being built."""
        b, n, tf = h.shape[0], h.shape[2], self.temporal_factor
        height, width = self.spatial_factor * h.shape[-2], self.spatial_factor * h.shape[-1]
        carry, last = {}, None
        for j0, j1 in self._chunks(n, height, width):
            y = self._decode_chunk(h, j0, j1, carry)
            y = y.view(b, j1 - j0, 3, tf, height, width).transpose(1, 2)  # [B, 3, m, 4, H, W]
            start = max(0, tf * (j0 - 1))
            if j0 == 0:  # latent frame 0 keeps only its last slot: frame 0
                frames = y.new_empty(b, 3, tf * (j1 - 1) + 1, height, width)
                frames[:, :, 0] = y[:, :, 0, tf - 1]
                y, j0 = y[:, :, 1:], 1
            else:
                frames = y.new_empty(b, 3, tf * (j1 - j0) + 1, height, width)
                frames[:, :, 0] = last
            frames[:, :, 1:].unflatten(2, (j1 - j0, tf)).copy_(y)
            del y
            last = frames[:, :, -1].clone()
            yield start, frames
