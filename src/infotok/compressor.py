"""Block-causal transformer stacks around the quantizer (InfoTok's compressor and decompressor).

A token attends to tokens of its own latent frame and of earlier latent frames, never later ones,
so a clip can be extended without changing its past. Attention is computed one latent frame of
queries at a time against the prefix of keys. Spatially, a token sees either the whole latent frame
(`window=0`, the first checkpoints) or its `window x window` tile, with tiles shifted by half a tile
on every other layer so that information crosses tile borders (Swin's scheme, along with full causal
attention over time): the cost then grows linearly with the number of pixels instead of with its
square. The decompressor may use a wider tile than the compressor (`decoder_window`): InfoTok-Flex,
trained with 8x8 tiles, decodes masked windows better with 16x16 ones. Spatial positions use 2D rotary
embeddings of the absolute position; latent time uses a learned embedding. In inference on the CPU
the stacks run in place, each layer one band of tile rows at a time over all latent frames (tiles
share no token) and whole-frame attention a few latent frames at a time, with the whole window's sums
bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
    # the decompressor's tile where it differs (None: `window`). A wider one lets a dropped token's position
    # read kept tokens further away; it changes how tokens decode (and so the router's error scores), not
    # what a file's tokens mean (`token_dict`)
    decoder_window: int | None = None

    def to_dict(self) -> dict:
        """Without `window` when it is 0 and `decoder_window` when None, so the configs (and hashes) of
        earlier models stay as they were."""
        d = asdict(self)
        if not d["window"]:
            d.pop("window")
        if d["decoder_window"] is None:
            d.pop("decoder_window")
        return d

    def token_dict(self) -> dict:
        """What decides what the tokens mean, which token files name (`InfoTok.config_hash`): the
        decompressor's tile is left out, so a wider one decodes files written before it."""
        return {k: v for k, v in self.to_dict().items() if k != "decoder_window"}

    def decompressor_config(self) -> "CompressorConfig":
        return self if self.decoder_window is None else replace(self, window=self.decoder_window)

    @classmethod
    def from_dict(cls, d: dict) -> "CompressorConfig":
        return cls(**d)


def rope_2d(
    h: int, w: int, head_dim: int, device, dtype, top: int = 0, left: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [h*w, head_dim/2] rotating half the pairs by row and half by column; position
    (0, 0) is at row `top`, column `left` of the grid."""
    quarter = head_dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) - top,
        torch.arange(w, device=device, dtype=torch.float32) - left,
        indexing="ij",
    )
    angles = torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class Tiling:
    """How one layer cuts latent frames [h, w] into attention tiles: `tile` x `tile` (the whole frame
    when 0), offset by `shift`, zero-padded to whole tiles. Padded positions are never attended to."""

    def __init__(self, h: int, w: int, tile: int, shift: int, top: int | None = None, origin: int = 0):
        """`top`: the rows of padding above (the shift unless this is a band below a frame's top;
        `row_groups`); `origin`: the frame row of this grid's first row."""
        self.h, self.w, self.tile, self.origin = h, w, tile, origin
        self.tile_h, self.tile_w = (tile, tile) if tile else (h, w)
        self.left = shift if tile else 0
        self.top = self.left if top is None else top
        self.rows = -(-(h + self.top) // self.tile_h)
        self.cols = -(-(w + self.left) // self.tile_w)
        self.pad = (
            0,
            0,
            self.left,
            self.cols * self.tile_w - w - self.left,
            self.top,
            self.rows * self.tile_h - h - self.top,
        )
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
        x = rearrange(
            x,
            "(b i j) (t p q) c -> b t (i p) (j q) c",
            b=batch,
            i=self.rows,
            j=self.cols,
            t=frames,
            p=self.tile_h,
            q=self.tile_w,
        )
        return x[:, :, self.top : self.top + self.h, self.left : self.left + self.w] if self.padded else x

    def rope(self, head_dim: int, frames: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [tiles, t * per_tile, head_dim/2] of every token in split's order."""
        cos, sin = rope_2d(
            self.rows * self.tile_h, self.cols * self.tile_w, head_dim, device, dtype, self.top - self.origin, self.left
        )

        def per_tile(table):
            table = rearrange(
                table, "(i p j q) d -> (i j) (p q) d", i=self.rows, p=self.tile_h, j=self.cols, q=self.tile_w
            )
            return table.repeat(1, frames, 1)

        return per_tile(cos), per_tile(sin)

    def row_groups(self, tokens_per_row: int, chunk_rows: int) -> list[tuple[int, int, "Tiling"]]:
        """Bands of whole tile rows, about `chunk_rows` tokens each when a tile row has
        `tokens_per_row`: (first frame row, end row, the band's own tiling, at its absolute place).
        Tiles share no token, so a layer can be computed one band at a time."""
        count = -(-self.rows // max(1, min(self.rows, chunk_rows // max(1, tokens_per_row))))
        step = -(-self.rows // count)
        bands = []
        for i0 in range(0, self.rows, step):
            i1 = min(self.rows, i0 + step)
            r0, r1 = max(0, i0 * self.tile_h - self.top), min(self.h, i1 * self.tile_h - self.top)
            band = (
                self
                if (i0, i1) == (0, self.rows)
                else Tiling(r1 - r0, self.w, self.tile, self.left, self.top if i0 == 0 else 0, r0)
            )
            bands.append((r0, r1, band))
        return bands

    def key_mask(self, frames: int, device) -> torch.Tensor | None:
        """bool [tiles, 1, 1, t * per_tile], False at padded positions; None without padding."""
        if not self.padded:
            return None
        valid = F.pad(torch.ones(1, 1, self.h, self.w, 1, device=device), self.pad)
        valid = rearrange(valid, "b t (i p) (j q) c -> (b i j) c (t p q)", p=self.tile_h, q=self.tile_w)
        return valid.bool()[:, :, None].repeat(1, 1, 1, frames)


# Tokens (rows) per chunk in inference (a band of tile rows over all latent frames, or a few latent
# frames): a chunk's temporaries are a few kB per token (~50 MB for 16k tokens) instead of several
# copies of the window.
CHUNK_ROWS = 1 << 14


def in_chunks(x: torch.Tensor) -> bool:
    """Whether the stacks run in chunks (bands of tiles, or latent frames): in inference on the CPU, where
    a 720p window's temporaries weigh most and the chunks' sums are the whole window's up to float
    rounding (tested); with grad the activations are kept anyway, and a GPU's matrix products may pick
    other kernels for other sizes."""
    return not torch.is_grad_enabled() and x.device.type == "cpu"


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

    def forward(self, x: torch.Tensor, tiling: Tiling, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
        """x [B, t, h, w, width]. In inference on the CPU, x is updated in place a few latent frames at a
        time (`_forward_chunks`, see `in_chunks`); otherwise the whole window is computed at once."""
        if in_chunks(x):
            return self._forward_chunks(x, tiling, chunk_rows)
        b, frames = x.shape[:2]
        per_frame = tiling.per_tile
        q, k, v = rearrange(
            self.qkv(tiling.split(self.norm1(x))), "n l (three h d) -> three n h l d", three=3, h=self.heads
        )
        cos, sin = tiling.rope(q.shape[-1], frames, x.device, q.dtype)
        if b > 1:
            cos, sin = cos.repeat(b, 1, 1), sin.repeat(b, 1, 1)
        q, k = apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None])
        valid = tiling.key_mask(frames, x.device)
        if valid is not None and b > 1:
            valid = valid.repeat(b, 1, 1, 1)
        out = torch.empty_like(q)
        for j in range(frames):  # queries of latent frame j see keys of frames 0..j
            lo, hi = j * per_frame, (j + 1) * per_frame
            out[:, :, lo:hi] = F.scaled_dot_product_attention(
                q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi], attn_mask=None if valid is None else valid[..., :hi]
            )
        x = x + tiling.merge(self.proj(rearrange(out, "n h l d -> n l (h d)")), b, frames)
        return x + self.mlp(self.norm2(x))

    def _forward_chunks(self, x: torch.Tensor, tiling: Tiling, chunk_rows: int) -> torch.Tensor:
        """The same sums as the whole-window forward, one band of tile rows at a time over all latent
        frames (`Tiling.row_groups`): a band's tokens attend only to each other, so its output can
        replace its rows of x in place, and no buffer of the whole window is built. Whole-frame
        attention is one band, cut into frames instead (`_forward_frames`)."""
        b, frames = x.shape[:2]
        for r0, r1, band in tiling.row_groups(b * frames * tiling.cols * tiling.per_tile, chunk_rows):
            self._forward_frames(x[:, :, r0:r1], band, chunk_rows)
        return x

    def _forward_frames(self, x: torch.Tensor, tiling: Tiling, chunk_rows: int) -> None:
        """x updated in place a few latent frames at a time: each chunk's queries, keys and values come
        from x before this layer changed it, its keys and values are written into buffers of all the
        frames (later frames attend to them), and its output replaces its frames of x."""
        b, frames = x.shape[:2]
        per_frame = tiling.per_tile
        keys = values = cos = sin = None
        valid = tiling.key_mask(frames, x.device)
        if valid is not None and b > 1:
            valid = valid.repeat(b, 1, 1, 1)
        for j0, j1 in frame_chunks(frames, b * tiling.rows * tiling.cols * per_frame, chunk_rows):
            m = j1 - j0
            qkv = self.qkv(tiling.split(self.norm1(x[:, j0:j1])))
            q, k, v = rearrange(qkv, "n l (three h d) -> three n h l d", three=3, h=self.heads)
            if keys is None:
                cos, sin = tiling.rope(q.shape[-1], 1, x.device, q.dtype)  # one frame's table: every frame's
                if b > 1:
                    cos, sin = cos.repeat(b, 1, 1), sin.repeat(b, 1, 1)
                keys = k.new_empty(*k.shape[:2], frames * per_frame, k.shape[-1])
                values = torch.empty_like(keys)
            c, s = cos.repeat(1, m, 1)[:, None], sin.repeat(1, m, 1)[:, None]
            keys[:, :, j0 * per_frame : j1 * per_frame] = apply_rope(k, c, s)
            values[:, :, j0 * per_frame : j1 * per_frame] = v
            q = apply_rope(q, c, s)
            del qkv, k, v, c, s
            out = torch.empty_like(q)
            for j in range(j0, j1):  # queries of latent frame j see keys of frames 0..j
                lo, hi = (j - j0) * per_frame, (j - j0 + 1) * per_frame
                end = (j + 1) * per_frame
                out[:, :, lo:hi] = F.scaled_dot_product_attention(
                    q[:, :, lo:hi],
                    keys[:, :, :end],
                    values[:, :, :end],
                    attn_mask=None if valid is None else valid[..., :end],
                )
            del q
            chunk = x[:, j0:j1]
            chunk += tiling.merge(self.proj(rearrange(out, "n h l d -> n l (h d)")), b, m)
            del out
            chunk += self.mlp(self.norm2(chunk))


def frame_chunks(frames: int, rows_per_frame: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Ranges of latent frames of about `chunk_rows` rows (tokens) each, at least one frame, of
    balanced sizes. Whole frames only, and never a handful of rows: the matrix products then give each
    row exactly what they give it over the whole window."""
    step = max(1, chunk_rows // max(1, rows_per_frame))
    step = -(-frames // -(-frames // step))
    return [(j, min(frames, j + step)) for j in range(0, frames, step)]


class BlockCausalTransformer(nn.Module):
    """features [B, C, t, h, w] -> features [B, C, t, h, w], residual; starts as the identity."""

    def __init__(self, channels: int, config: CompressorConfig):
        super().__init__()
        self.config = config
        self.proj_in = nn.Linear(channels, config.width)
        self.time_embed = nn.Parameter(torch.zeros(config.max_latent_frames, config.width))
        nn.init.normal_(self.time_embed, std=0.02)
        self.layers = nn.ModuleList(
            BlockCausalLayer(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm_out = nn.LayerNorm(config.width)
        self.proj_out = nn.Linear(config.width, channels)
        self.restart_as_identity()

    @torch.no_grad()
    def restart_as_identity(self) -> None:
        """Zero the residual's output projection: the stack passes its input through unchanged."""
        self.proj_out.weight.zero_()
        self.proj_out.bias.zero_()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = feats.shape
        if t > self.config.max_latent_frames:
            raise ValueError(
                f"{t} latent frames exceed the model's {self.config.max_latent_frames}; use shorter windows"
            )
        tile = self.config.window
        tilings = [Tiling(h, w, tile, tile // 2 if i % 2 else 0) for i in range(len(self.layers))]
        if in_chunks(feats):
            return self._forward_chunks(feats, tilings)
        x = self.proj_in(rearrange(feats, "b c t h w -> b t h w c"))
        x = x + self.time_embed[:t, None, None, :].to(x.dtype)
        for layer, tiling in zip(self.layers, tilings):
            x = layer(x, tiling)
        y = self.proj_out(self.norm_out(x))
        return feats + rearrange(y, "b t h w c -> b c t h w")

    chunk_rows: int = CHUNK_ROWS

    def _forward_chunks(self, feats: torch.Tensor, tilings: list[Tiling]) -> torch.Tensor:
        """Inference on the CPU: the input and output projections a few latent frames at a time, the layers
        in place (`BlockCausalLayer._forward_chunks`); the same sums as the whole-window forward."""
        b, c, t, h, w = feats.shape
        chunks = frame_chunks(t, b * h * w, self.chunk_rows)
        inputs = rearrange(feats, "b c t h w -> b t h w c")
        # a linear layer sums a contiguous input and a strided one differently (bias fused or added
        # after): chunks must be what the whole window is
        same = all(inputs[:, j0:j1].is_contiguous() == inputs.is_contiguous() for j0, j1 in chunks)
        x = None
        for j0, j1 in chunks if same else [(0, t)]:
            y = self.proj_in(inputs[:, j0:j1])
            y = y + self.time_embed[j0:j1, None, None, :].to(y.dtype)
            x = y.new_empty(b, t, h, w, y.shape[-1]) if x is None else x
            x[:, j0:j1] = y
            del y
        for layer, tiling in zip(self.layers, tilings):
            x = layer(x, tiling, self.chunk_rows)
        out = None
        for j0, j1 in chunks:
            y = rearrange(self.proj_out(self.norm_out(x[:, j0:j1])), "b t h w c -> b c t h w")
            if out is None:  # laid out as the whole-window sum would be (the next convolution's sums depend on it)
                like = torch.empty_strided(feats.shape, feats.stride(), dtype=feats.dtype, device="meta") + torch.empty(
                    b, t, h, w, y.shape[1], dtype=y.dtype, device="meta"
                ).permute(0, 4, 1, 2, 3)
                out = torch.empty_strided(like.shape, like.stride(), dtype=like.dtype, device=feats.device)
            torch.add(feats[:, :, j0:j1], y, out=out[:, :, j0:j1])
            del y
        return out
