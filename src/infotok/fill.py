"""How dropped tokens are decoded: the fill rule a token file records.

- `mask` (the paper's): a dropped position enters the decompressor as the learned "dropped"
  embedding (or, in the release's weights, the all-zero code) and the decompressor infers it.
- `hold` (conditional replenishment, as video codecs skip a block): a dropped position decodes the
  code last kept at the same position in an earlier latent frame of the window, as if it had been
  kept; where nothing was kept before, it falls back to `mask`. A latent code that repeats the
  previous frame's costs nothing to drop, so a still shot needs about its first latent frame
  (BENCHMARKS.md). What dropping a token costs is how far its code drifted from the code that
  would be held in its place (`drift`), not from the previous frame's: a slow pan moves each code
  a little every frame, and held codes fall further behind each frame. Its natural ranking is the
  `drift` selection, and `rd` under `hold` spends tokens by drift (`router.hold_rates`).

Both rules use only the kept tokens and the keep-mask, so a decoder reproduces them exactly.

Under `hold` the encoder ranks and rates steady codes (`steady_codes`): a code whose value sits on a
rounding boundary counts as the one before it, so a still shot's codes do not flip and cost tokens.
The tokens kept still store FSQ's codes; the decoder never needs to know.

Continuing windows (`Carry`, a file's `refresh` > 1) extend `hold` across windows: a window starts
from the codes the previous one showed at its last latent frame, so its first latent frame keeps only
the positions that drifted from them, and a still shot costs little more than its first window. A
causal base codes a window's last latent frame and the next window's first (one frame, coded alone)
alike (docs/LONG_VIDEOS.md), so a carried code decodes as a kept one. `rd` rates the windows of such a
chain at thresholds calibrated on chains (`Calibration.hold_thresholds`).

A sparse key frame (`key_density` below 1, `key_lattice`): of the positions with nothing to hold at a window's first
latent frame (every position of a fresh window), those on a regular lattice are kept whatever they show, the others
only where their code drifts from what the lattice around it suggests (`lattice_interpolation`) more than the
threshold, like any other token. The rest decode as under `mask` (the decompressor fills them in from the codes
around them) until they drift; a fixed-rate base, which has no decompressor, decodes them as that interpolation
(`fill_key_frame`), so its decoder shows what its encoder measured drift against. At low rates a whole first
latent frame is most of a window's budget (1024 of 1152 tokens of a 33x256x256 window at 0.125), which leaves the
frames after it stale (docs/RATE_CONTROL.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .names import FILLS


def check_fill(fill: str) -> str:
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose from {', '.join(FILLS)}")
    return fill


KEY_DENSITIES = (1.0, 0.5, 0.25)  # every position, a checkerboard, every other row and column
SPARSE_KEY_DENSITY = 0.25  # what `infotok calibrate` gives a checkpoint that fills in dropped positions: on the
# training clips' first 33 frames (20 of them) at 0.25 / 0.125, it beat 1, 1/2 and 1/16 (docs/RATE_CONTROL.md)


def check_key_density(density: float) -> float:
    if density not in KEY_DENSITIES:
        raise ValueError(f"key_density must be one of {', '.join(f'{d:g}' for d in KEY_DENSITIES)}, got {density!r}")
    return float(density)


def key_lattice(density: float, h: int, w: int, device=None) -> torch.Tensor | None:
    """bool [h, w]: where a sparse key frame keeps a position that has nothing to hold (None: everywhere)."""
    if check_key_density(density) == 1:
        return None
    y, x = torch.arange(h, device=device)[:, None], torch.arange(w, device=device)[None, :]
    return (y + x) % 2 == 0 if density == 0.5 else (y % 2 == 0) & (x % 2 == 0)


def hold_last_kept(codes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [B, C, t, h, w], keep-mask [B, t, h, w] -> (codes with each dropped position holding its
    last kept code, the mask of positions that now have a code). Frame by frame: t is at most a few tens."""
    codes, mask = codes.clone(), mask.clone()
    for j in range(1, codes.shape[2]):
        kept = mask[:, j]
        codes[:, :, j] = torch.where(kept[:, None], codes[:, :, j], codes[:, :, j - 1])
        mask[:, j] = kept | mask[:, j - 1]
    return codes, mask


@dataclass
class Carry:
    """What continuing windows start from: per window, the code index `hold` showed at each position of
    the previous window's last latent frame, and where there was one (all positions, unless nothing
    was ever kept there)."""

    indices: torch.Tensor  # long [B, h, w]
    present: torch.Tensor  # bool [B, h, w]

    def to(self, device: torch.device | str) -> "Carry":
        return Carry(self.indices.to(device), self.present.to(device))

    def into(self, indices: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows' indices and keep-mask [B, t, h, w] -> the same with each dropped position of the
        first latent frame given the carried code, as if kept: what the decoder decodes."""
        indices, mask = indices.clone(), mask.clone()
        carried = ~mask[:, 0] & self.present.to(mask.device)
        indices[:, 0] = torch.where(carried, self.indices.to(indices.device), indices[:, 0])
        mask[:, 0] |= carried
        return indices, mask


def carry_after(indices: torch.Tensor, mask: torch.Tensor, carry: Carry | None = None) -> Carry:
    """What the next windows continue from, after windows with these indices and keep-mask [B, t, h, w]
    (as stored) that continued `carry` (None: that started afresh): the code each position shows at
    their last latent frame. Indices alone: a decoder gets it without decoding a frame."""
    if carry is not None:
        indices, mask = carry.into(indices, mask)
    held, present = hold_last_kept(indices[:, None], mask)
    return Carry(held[:, 0, -1], present[:, -1])


def apply_fills(
    codes: torch.Tensor, mask: torch.Tensor, fills: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each window's fill on its codes [B, C, t, h, w] and keep-mask [B, t, h, w] -> (the codes and the mask
    of positions with a code, as the decompressor sees them; the positions given an older code, or None
    where no window holds). `mask` changes nothing: its dropped positions stay dropped."""
    if "hold" not in fills:
        return codes, mask, None
    holding = torch.tensor([check_fill(f) == "hold" for f in fills], device=codes.device)[:, None, None, None]
    held_codes, has_code = hold_last_kept(codes, mask)
    codes = torch.where(holding[:, None], held_codes, codes)
    return codes, torch.where(holding, has_code, mask), has_code & ~mask & holding


# levels past the half level rounding allows, within which a code counts as unchanged (chosen on training clips,
# `python scripts/steady_margin.py`: BD-rate -3.0% at 0.1, -3.2% at 0.25 but 0.17 dB lower at full drift)
STEADY_MARGIN = 0.1


def steady_codes(
    codes: torch.Tensor,
    values: torch.Tensor,
    levels: Sequence[int],
    margin: float | None = None,
    carried: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """codes [B, C, t, h, w] and the values FSQ rounded to them (`BaseTokenizer.level_values`; FSQ's
    `levels`) -> the codes `hold` ranks and rates: each position keeps the previous latent frame's code
    (in the first latent frame of a continuing window: the `carried` code [B, C, h, w] where `present`
    [B, h, w]) wherever the value lies within half a level plus `margin` of it in every channel. Why: a
    value on a rounding boundary flips between two codes while the content stands still (on a still shot
    every code that drifts lies within 0.02 levels of the one before), and each flip would cost a token
    whose code the held one stands in for almost as well. Kept tokens still store FSQ's codes. `margin`:
    STEADY_MARGIN unless given."""
    margin = STEADY_MARGIN if margin is None else margin
    steps = torch.tensor([lv // 2 for lv in levels], dtype=values.dtype, device=values.device)[:, None, None]
    out = codes.clone()
    previous = carried
    for j in range(codes.shape[2]):
        if previous is not None:
            near = ((values[:, :, j] - previous).abs() * steps <= 0.5 + margin).all(dim=1)
            if j == 0:
                near &= present
            out[:, :, j] = torch.where(near[:, None], previous, codes[:, :, j])
        previous = out[:, :, j]
    return out


def drift(
    codes: torch.Tensor,
    threshold: float | torch.Tensor,
    carried: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    key_density: float = 1.0,
) -> torch.Tensor:
    """codes [B, C, t, h, w] -> [B, t, h, w]: how far each position's code is (mean |difference| over
    code channels) from the code `hold` would show there if it were dropped, when every position that
    drifts more than `threshold` (one per window, or shared) is kept and the rest are held. The first
    latent frame has nothing to hold and ranks above every drift (inf), except where a continuing
    window carries a code (`carried` codes [B, C, h, w] where `present` [B, h, w]) and, for sparse key
    frames (`key_density` below 1), off their lattice (`key_lattice`): there a position with nothing to hold drifts from
    the lattice's interpolation (`lattice_interpolation`, what the decompressor fills in from the codes around
    it stands in for), which is its held code unless it drifts more than `threshold`. Below 0 every token is
    kept, and the drift is the change since the previous latent frame (the `temporal` ranking)."""
    b, _, t, h, w = codes.shape
    threshold = torch.as_tensor(threshold, dtype=torch.float32, device=codes.device).expand(b)[:, None, None]
    out = torch.full((b, t, h, w), float("inf"), device=codes.device)
    held = codes[:, :, 0]
    if present is not None:
        out[:, 0] = torch.where(present, (codes[:, :, 0] - carried).abs().float().mean(dim=1), out[:, 0])
        held = torch.where((present & (out[:, 0] <= threshold))[:, None], carried, codes[:, :, 0])
    key = key_lattice(key_density, h, w, codes.device)
    if key is not None:
        on_key = key[None]
        off = ~on_key if present is None else ~on_key & ~present
        interpolated = lattice_interpolation(held.float(), on_key)
        out[:, 0] = torch.where(off, (codes[:, :, 0] - interpolated).abs().float().mean(dim=1), out[:, 0])
        held = torch.where((off & (out[:, 0] <= threshold))[:, None], interpolated, held.float())
    for j in range(1, t):
        out[:, j] = (codes[:, :, j] - held).abs().float().mean(dim=1)
        held = torch.where((out[:, j] > threshold)[:, None], codes[:, :, j], held)
    return out


def lattice_interpolation(values: torch.Tensor, on_key: torch.Tensor) -> torch.Tensor:
    """values [B, C, h, w] -> each position's weighted mean of the values on the key lattice (bool [1, h, w])
    within one position of it (weights 4 / 2 / 1 for the position itself / a side / a corner): the codes of a
    sparse key frame's dropped positions as the encoder guesses the decoder sees them."""
    b, c, h, w = values.shape
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=values.device)[None, None]
    weight = on_key.to(values.dtype)[:, None]
    total = F.conv2d((values * weight).reshape(b * c, 1, h, w), kernel, padding=1).reshape(b, c, h, w)
    return total / F.conv2d(weight, kernel, padding=1).clamp(min=1e-6)


def fill_key_frame(codes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-rate base's stand-in for the positions a sparse key frame drops (it has no learned one): codes
    [B, C, t, h, w] and keep-mask [B, t, h, w] (carried codes in, as `Carry.into` gives them) -> the same with each
    position of the first latent frame that has no code given `lattice_interpolation` of the codes on the
    `SPARSE_KEY_DENSITY` lattice, the guess `drift` measured it against, and marked as having one, so `hold` holds
    it. A position with no lattice code within one step of it interpolates nothing: the zero code, as before."""
    missing = ~mask[:, 0]
    if not bool(missing.any()):
        return codes, mask
    on_key = key_lattice(SPARSE_KEY_DENSITY, *mask.shape[2:], mask.device)[None] & mask[:, 0]
    codes, mask = codes.clone(), mask.clone()
    interpolated = lattice_interpolation(codes[:, :, 0].float(), on_key).to(codes.dtype)
    codes[:, :, 0] = torch.where(missing[:, None], interpolated, codes[:, :, 0])
    mask[:, 0] |= missing
    return codes, mask


def drift_ceiling(codes: torch.Tensor, carried: torch.Tensor | None = None) -> torch.Tensor:
    """codes [B, C, t, h, w] (+ carried codes [B, C, h, w]) -> [B]: a drift threshold above every drift of
    each window (it keeps only the positions of the first latent frame that carry no code)."""
    if carried is not None:
        codes = torch.cat([codes, carried[:, :, None]], dim=2)
    return (codes.amax(dim=(1, 2, 3, 4)) - codes.amin(dim=(1, 2, 3, 4))).float() + 1
