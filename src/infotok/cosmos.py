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

The transformer stacks are `release_transformer`'s, the base's building blocks `cosmos_blocks`';
every name of both is importable from here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ

from .base import FSQ_LEVELS, BaseTokenizer
from .cosmos_blocks import (  # noqa: F401 (re-exported)
    CL3,
    NORM_EPS,
    FactorizedConv,
    HybridDown,
    HybridUp,
    Level,
    MidBlock,
    ResBlock,
    SpaceAttention,
    TimeAttention,
    _from_dict,
    _norm_silu,
    _store,
    _unstore,
    haar_patch,
    haar_unpatch,
)
from .release_transformer import (  # noqa: F401 (re-exported)
    ReleaseAttention,
    ReleaseCompressorConfig,
    ReleaseLayer,
    ReleaseTransformer,
    RMSNorm,
    SwiGLU,
    release_stacks,
    rope_angles_2d,
)


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

    def code_space(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            w, b = self.quant_conv.weight.float().flatten(1), self.quant_conv.bias.float()
            return F.linear(_store(h).float(), w, b).permute(0, 4, 1, 2, 3)

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
