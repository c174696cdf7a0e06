"""A learned prior over grid tokens: the probability of each window's keep-mask and kept codes given what a
decoder already has, so that `-log2 p` is a token's real cost and files can be entropy-coded (`entropy`).

What is coded, and in which order (the decoder's order): a window latent frame by latent frame; in a frame passes
over the phases of its positions (`CodingOrder`): the mask on a checkerboard's even squares, the mask on its odd
squares, then the codes kept on each phase in turn, coarse to fine, so most codes see decoded neighbours. A small
convolutional network over the whole frame (dilated, to follow motion several latents away) sees, in its trunk (run
once a frame; the shipped prior's is its embeddings alone):
- the state: at every position the code last kept there and its age in latent frames (from this window's
  earlier frames, or, for a window that continues a video, from the window before it; the hold fill's view);
- the latent frame's index in the window and the window's kept fraction (its record states the kept count
  before the coded bytes; `kept_bucket`); with `asked_rate`, the file's asked rate (`asked_row`);
and in residual blocks run each pass on the trunk's output:
- what the frame's earlier passes revealed (its mask, then its codes phase by phase);
- the pass, and each position's phase.
A code's six FSQ digits are coded one after another, each given the ones before.

Exact on any machine: `TokenPrior` runs the trained network in fixed point. Weights are integers with a
power-of-two scale per layer, activations integers in units of 2**-ACT_BITS, and every sum is an integer held
exactly in float64 (well under 2**53), so matrix kernels of any CPU or GPU, summing in any order, give the same
numbers; the softmax reads a stored table of integers. Encoder and decoder therefore agree bit for bit on the
probabilities (tests/test_prior.py runs them in two processes under different ATEN_CPU_CAPABILITY).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .files import save_tensors

ACT_BITS = 8  # activations in units of 2**-8
WEIGHT_BITS = 11  # weights rounded to at most 11 bits of magnitude (scaled per layer by a power of two)
MAX_SHIFT = 16  # a layer of tiny weights keeps fewer bits rather than a bias scaled past 31 bits
ACT_LIMIT = 1 << 20  # activations clamped to +-2**20 units: products < 2**31, sums of <= 2**12 products < 2**43
LOGIT_RANGE = 24  # nats: a symbol this far below the likeliest gets the table's smallest weight
EXP_BITS = 30  # the softmax table: round(2**30 * exp(-z / 2**ACT_BITS))
MAX_PHASE_LEVELS = 4  # `CodingOrder`: level 4 codes one position in 256 blind
KEPT_BUCKETS = 40  # the window's kept fraction in quarter octaves below 1 (bucket 40: 2**-10 or less; 41: none)
PRIOR_FILE, PRIOR_CONFIG = "prior.safetensors", "config.json"
PRIOR_FORMAT = "infotok-prior-2"  # 2: the frame trunk and pass blocks
PRIOR_FORMAT_1 = "infotok-prior"  # 1 (the first shipped priors): one set of blocks, run each pass; still loads
FORMAT_1_FIELDS = ("levels", "channels", "pass_dilations", "max_age", "max_frames")  # all a format-1 prior could set


@dataclass
class PriorConfig:
    levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    channels: int = 48
    dilations: list[int] = field(default_factory=list)  # the frame trunk (run once a latent frame): a residual
    # block of (3x3 conv, ReLU, 1x1 conv) each, its 3x3 conv dilated so; none: the trunk is its embeddings alone
    pass_dilations: list[int] = field(default_factory=lambda: [1, 2, 4])  # the blocks each pass runs on the
    # trunk's output plus what the frame's earlier passes revealed; receptive field 1 + 2 * sum(all dilations)
    max_age: int = 8  # ages of held codes beyond this share one embedding
    max_frames: int = 16  # latent frame indices beyond this share one embedding
    continuing: bool = False  # the first latent frame of a window that continues the one before (`fill.Carry`) has
    # an embedding of its own: it keeps only what changed, where a fresh window's keeps nearly everything
    held_digits: bool = False  # a code's digits read the held code's digits at its position directly: each digit's
    # logits get a learned row per held digit (`held_logit{j}`), and each digit before it enters as a (held, new)
    # pair (`pair{i}`), so "one level up from the held code" costs no features (`digit_logits`)
    phase_levels: int = 1  # `CodingOrder`: how finely a latent frame's codes are ordered; 1 codes a quarter of them
    # before any neighbour is decoded, 2 a sixteenth (the others see decoded codes two positions away)
    interleaved_masks: bool = False  # `CodingOrder.interleaved`: each mask pass right before its phases' codes
    asked_rate: bool = False  # the trunk reads the file's asked rate (`asked_row`): under `rd` it sets the drift
    # threshold a token was kept at, which a window's kept fraction does not tell (1% kept may be a quiet window at
    # threshold 0, each kept code a digit away from the held one, or a busy one at a high threshold, every digit moved)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        cfg = checked_config(cls, d, ("dilations", "pass_dilations"))
        if not cfg.pass_dilations:
            raise ValueError("pass_dilations must name at least one block (a pass must see its neighbours)")
        if min(cfg.channels, cfg.max_age, cfg.max_frames) < 1:
            raise ValueError("channels, max_age and max_frames must be positive")
        levels = cfg.phase_levels
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_PHASE_LEVELS:
            raise ValueError(f"phase_levels must be an integer from 1 to {MAX_PHASE_LEVELS}, got {cfg.phase_levels!r}")
        for name in ("continuing", "held_digits", "interleaved_masks", "asked_rate"):
            if not isinstance(getattr(cfg, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def order(self) -> CodingOrder:
        return CodingOrder(self.phase_levels, self.interleaved_masks)


def checked_config(cls, d: dict, dilation_fields: tuple[str, ...]):
    """`cls(**d)` for a prior's config dataclass, refusing unknown fields, levels below 2 and dilations below 1."""
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    cfg = cls(**d)
    if not (cfg.levels and all(isinstance(v, int) and v >= 2 for v in cfg.levels)):
        raise ValueError(f"levels must be integers >= 2, got {cfg.levels}")
    for name in dilation_fields:
        values = getattr(cfg, name)
        if not all(isinstance(v, int) and v >= 1 for v in values):
            raise ValueError(f"{name} must be positive integers, got {values}")
    return cfg


def code_digits(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """FSQ code indices [...] -> their digits [..., len(levels)] (digit j counts in units of prod(levels[:j]))."""
    digits, rest = [], indices.long()
    for n in levels:
        digits.append(rest % n)
        rest = rest // n
    return torch.stack(digits, -1)


def digits_code(digits: torch.Tensor, levels: list[int]) -> torch.Tensor:
    index, unit = torch.zeros_like(digits[..., 0]), 1
    for j, n in enumerate(levels):
        index = index + digits[..., j] * unit
        unit *= n
    return index


@dataclass(frozen=True)
class CodingOrder:
    """The order of a latent frame's passes (`PriorConfig.phase_levels`, `interleaved_masks`): the positions'
    phases, numbered in coding order, and what each pass codes. Level 1: phase 0 every even row and column, 1 both
    odd, 2 even row odd column, 3 the rest. Each further level splits phase 0 on its own lattice, twice as coarse:
    at level 2, phase 0 is every fourth row and column, 1 the positions (2, 2) from them, 2 the rest of the even rows
    and columns, then the odd phases as at level 1. Phase 0 is coded without a decoded neighbour.

    The passes: one codes the mask on a checkerboard's even squares, one on its odd squares, then one the codes
    kept on each phase in turn. `interleaved`: each mask pass comes right before its phases' codes, after the codes
    of the key lattice (every even row and column, where a fresh window keeps every code): its mask, its codes, the
    mask of the odd rows' odd columns, their codes, then the rest's mask and codes; a mask bit then sees the codes
    decoded around it, not only their masks."""

    levels: int = 1
    interleaved: bool = False

    @property
    def phases(self) -> int:
        return 2 * self.levels + 2

    @property
    def schedule(self) -> tuple[tuple[bool, tuple[int, ...]], ...]:
        """Each pass in turn: (whether it codes mask bits, else codes; the phases it codes at)."""
        return _schedule(self.levels, self.interleaved)

    @property
    def passes(self) -> int:
        return len(self.schedule)

    @property
    def even_squares(self) -> int:
        """Phases 0 to this - 1 are a checkerboard's even squares (the first mask pass when not `interleaved`)."""
        return self.phases - 2

    def is_mask(self, step: int) -> bool:
        """Whether pass `step` codes mask bits (else the codes kept on its phases)."""
        return self.schedule[step][0]

    def pass_phases(self, step: int) -> tuple[int, ...]:
        """The phases whose positions pass `step` codes symbols at."""
        return self.schedule[step][1]

    def tables(self, device=None) -> tuple[torch.Tensor, ...]:
        """[passes] and [passes, phases] bool: whether each pass codes mask bits; the phases it codes at; the phases
        whose mask bits, and whose codes, earlier passes coded (what the pass may see)."""
        return tuple(t.to(device) for t in _order_tables(self.levels, self.interleaved))

    def phase_map(self, h: int, w: int) -> torch.Tensor:
        """[h, w] long: each position's phase (cached: never modify it)."""
        return _phase_map(h, w, self.levels)

    def lattice(self, phase: int) -> tuple[int, int]:
        """The first (row, column) of the stride-2 lattice that holds `phase` (`features_on_lattices`)."""
        return LATTICES[max(0, phase - (self.phases - len(LATTICES)))]


@functools.lru_cache(maxsize=16)
def _schedule(levels: int, interleaved: bool) -> tuple[tuple[bool, tuple[int, ...]], ...]:
    phases = 2 * levels + 2
    key, odd, rest = tuple(range(phases - 3)), (phases - 3,), (phases - 2, phases - 1)
    if not interleaved:
        return ((True, key + odd), (True, rest)) + tuple((False, (p,)) for p in range(phases))
    return (
        ((True, key),) + tuple((False, (p,)) for p in key) + ((True, odd), (False, odd), (True, rest))
        + tuple((False, (p,)) for p in rest)
    )  # fmt: skip


@functools.lru_cache(maxsize=16)
def _order_tables(levels: int, interleaved: bool) -> tuple[torch.Tensor, ...]:
    schedule = _schedule(levels, interleaved)
    n, phases = len(schedule), 2 * levels + 2
    is_mask, coded = torch.zeros(n, dtype=torch.bool), torch.zeros((n, phases), dtype=torch.bool)
    mask_known, code_known = torch.zeros_like(coded), torch.zeros_like(coded)
    for step, (mask_pass, where) in enumerate(schedule):
        is_mask[step], coded[step, list(where)] = mask_pass, True
        if step + 1 < n:
            mask_known[step + 1], code_known[step + 1] = mask_known[step], code_known[step]
            (mask_known if mask_pass else code_known)[step + 1, list(where)] = True
    return is_mask, coded, mask_known, code_known


LATTICES = ((0, 0), (1, 1), (0, 1), (1, 0))  # the level-1 phases' first (row, column): their positions step by 2


@functools.lru_cache(maxsize=8)
def _phase_map(h: int, w: int, levels: int) -> torch.Tensor:
    """Phase 0: every 2**levels-th row and column. Then, coarse to fine, each level's lattice (every half-th row
    and column) less the coarser one: first its positions half a step down and right of the coarser lattice's,
    then the rest (at level 1 in two phases, even row odd column and odd row even column, as before levels)."""
    y, x = torch.arange(h)[:, None], torch.arange(w)[None, :]
    phase, first = torch.zeros((h, w), dtype=torch.long), 1
    for level in range(levels, 0, -1):
        half = 2 ** (level - 1)
        on = (y % half == 0) & (x % half == 0)
        down, right = (y // half) % 2 == 1, (x // half) % 2 == 1
        phase[on & down & right] = first
        if level > 1:
            phase[on & (down != right)] = first + 1
            first += 2
        else:
            phase[on & ~down & right], phase[on & down & ~right] = first + 1, first + 2
    return phase


def kept_bucket(kept: int, positions: int) -> int:
    """The largest b <= KEPT_BUCKETS with kept * 2**(b / 4) <= positions (KEPT_BUCKETS + 1 when nothing is kept):
    integer arithmetic, so every machine puts a window in the same bucket."""
    if kept <= 0:
        return KEPT_BUCKETS + 1
    b = 0
    while b < KEPT_BUCKETS and kept**4 * 2 ** (b + 1) <= positions**4:
        b += 1
    return b


def asked_row(header) -> int:
    """The row a file's header (`TokenHeader`) gives `PriorConfig.asked_rate`: 0 for a file whose rates are not
    `rd`'s (another strategy), else 1 + the asked rate's (`avg_rate`) quarter-octave bucket (`kept_bucket`), plus
    KEPT_BUCKETS + 2 where the windows continue each other (`refresh` > 1), whose chains `rd` rates at thresholds of
    their own. Integer arithmetic on the header's numbers, so encoder and decoder agree."""
    rate = header.avg_rate
    if header.strategy != "rd" or not 0 < rate <= 1:
        return 0
    return 1 + kept_bucket(round(rate * 2**16), 2**16) + (KEPT_BUCKETS + 2) * (header.refresh > 1)


ASKED_ROWS = 1 + 2 * (KEPT_BUCKETS + 2)  # `asked_row`'s rows


@dataclass
class Context:
    """What one pass over one latent frame may see, as integer maps [B, h, w] (one frame per batch row).

    held: code last kept at each position (-1: none yet); age: latent frames since then; known_mask: 0 unknown,
    1 dropped, 2 kept; known_code: the frame's codes revealed by earlier passes (-1: not yet or not kept);
    frame: the latent frame's index in its window; step: the pass (`CodingOrder`); kept: the window's
    `kept_bucket`; continues: 1 where the window continues the one before (a file's `header.continues`); asked: the
    file's `asked_row`."""

    held: torch.Tensor
    age: torch.Tensor
    known_mask: torch.Tensor
    known_code: torch.Tensor
    frame: torch.Tensor  # [B]
    step: torch.Tensor  # [B]
    kept: torch.Tensor  # [B]
    continues: torch.Tensor  # [B]
    asked: torch.Tensor  # [B]

    def select(self, rows) -> "Context":
        """The contexts of batch rows `rows` (an index or a slice)."""
        return Context(*(getattr(self, f.name)[rows] for f in fields(self)))


def pass_context(
    order: CodingOrder,
    held: torch.Tensor,
    age: torch.Tensor,
    mask: torch.Tensor,
    codes: torch.Tensor,
    frame: torch.Tensor,
    step: torch.Tensor,
    kept: torch.Tensor,
    continues: torch.Tensor | None = None,
    asked: torch.Tensor | None = None,
) -> Context:
    """The context of pass `step` [B] given the frame's full mask [B, h, w] (bool) and codes [B, h, w]: only
    what the earlier passes coded is shown. `continues` [B]: none given, no window continues; `asked` [B]: none
    given, row 0."""
    phase = order.phase_map(*mask.shape[-2:]).to(mask.device)
    _, _, mask_known, code_known = order.tables(mask.device)
    known_mask = torch.where(mask_known[step][:, phase], 1 + mask.long(), 0)
    known_code = torch.where(code_known[step][:, phase] & mask, codes.long(), -1)
    continues = torch.zeros_like(frame) if continues is None else continues
    asked = torch.zeros_like(frame) if asked is None else asked
    return Context(
        held.long(), age.long(), known_mask, known_code, frame.long(), step.long(), kept.long(), continues.long(),
        asked.long(),
    )  # fmt: skip


def coded_here(order: CodingOrder, step: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions pass `step` [B] codes a mask bit at, and which it codes a code at ([B, h, w] bool each)."""
    phase = order.phase_map(*mask.shape[-2:]).to(mask.device)
    is_mask, coded, _, _ = order.tables(mask.device)
    square, mask_pass = coded[step][:, phase], is_mask[step][:, None, None]
    return square & mask_pass, square & ~mask_pass & mask


def advance(held: torch.Tensor, age: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor):
    """The state after a latent frame that kept `codes` where `mask` ([h, w] each)."""
    return torch.where(mask, codes, held), torch.where(mask, 0, age + 1)


def window_states(mask: torch.Tensor, codes: torch.Tensor, held: torch.Tensor, age: torch.Tensor):
    """The states before each latent frame of a window ([t, h, w] held codes and ages), given the state before
    the window, and the state after it."""
    helds, ages = [], []
    for m, c in zip(mask, codes):
        helds.append(held)
        ages.append(age)
        held, age = advance(held, age, m, c)
    return torch.stack(helds), torch.stack(ages), held, age


def no_held_codes(shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The state before a video's first window: no code held anywhere (-1), every age 0."""
    return torch.full(shape, -1, dtype=torch.long), torch.zeros(shape, dtype=torch.long)


def video_window_states(windows):
    """A video's windows in order, each with its mask and codes ([t, h, w]; codes 0 where dropped) and the states
    before each of its latent frames ([t, h, w] held codes and ages), as `entropy.PriorCoder` tracks them: a window
    starts from the state the one before left (one of another grid size: from none)."""
    held = age = None
    for w in windows:
        mask = torch.from_numpy(np.asarray(w.mask, dtype=bool))
        codes = torch.zeros(mask.shape, dtype=torch.long)
        codes[mask] = torch.from_numpy(np.asarray(w.indices, dtype=np.int64))
        if held is None or held.shape != mask.shape[1:]:
            held, age = no_held_codes(mask.shape[1:])
        helds, ages, held, age = window_states(mask, codes, held, age)
        yield w, mask, codes, helds, ages


def window_passes(
    order: CodingOrder,
    mask: torch.Tensor,
    codes: torch.Tensor,
    helds: torch.Tensor,
    ages: torch.Tensor,
    continues: bool = False,
    asked: int = 0,
):
    """Every pass of a window at once, when all its symbols are known (the trainer's and the tests' view):
    (contexts [t * passes], the mask and the codes each pass belongs to, its step), from the window's mask and
    codes [t, h, w] and the states before each latent frame (`window_states`); `asked`: the file's `asked_row`."""
    t, n = len(mask), order.passes
    frame, step = torch.arange(t).repeat_interleave(n), torch.arange(n).repeat(t)
    kept = torch.full_like(frame, kept_bucket(int(mask.sum()), mask.numel()))
    mask_b, codes_b = mask[frame], codes[frame]  # `pass_context` shows each pass only its part
    continues_b, asked_b = torch.full_like(frame, continues), torch.full_like(frame, asked)
    ctx = pass_context(order, helds[frame], ages[frame], mask_b, codes_b, frame, step, kept, continues_b, asked_b)
    return ctx, mask_b, codes_b, step


def conv_dilations(cfg: PriorConfig) -> dict[str, int]:
    """The dilation of each 3x3 convolution, by layer name (the other layers are 1x1): the frame trunk's `a{i}` and
    the pass blocks' `pass_a{i}`."""
    trunk = {f"a{i}": d for i, d in enumerate(cfg.dilations)}
    return trunk | {f"pass_a{i}": d for i, d in enumerate(cfg.pass_dilations)}


class PriorNet(nn.Module):
    """The float network trained by `infotok train prior`; `TokenPrior` runs the same functions (`frame_features`,
    `features`, `mask_logits`, `digit_logits`) on its integer weights. Two stages: a trunk over what the state
    before the frame says (blocks run once a frame, so a decoder's passes share them), then blocks a pass, over
    the trunk plus what the frame's earlier passes revealed. A code's digits are coded one after another, each
    given the position's features and the digits before it (FSQ's digits are far from independent)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.config = cfg
        c, levels = cfg.channels, cfg.levels
        tables = {f"held{j}": nn.Embedding(n + 1, c) for j, n in enumerate(levels)}  # + none
        tables |= {f"known{j}": nn.Embedding(n + 1, c) for j, n in enumerate(levels)}  # + not yet
        tables |= {f"digit{j}": nn.Embedding(n, c) for j, n in enumerate(levels[:-1])}  # the digits before
        if cfg.held_digits:  # rows: the held digit (levels[j]: none), times the new one for a pair
            tables |= {f"held_logit{j}": nn.Embedding(n + 1, n) for j, n in enumerate(levels)}
            tables |= {f"pair{j}": nn.Embedding((n + 1) * n, c) for j, n in enumerate(levels[:-1])}
        frames = cfg.max_frames + (1 if cfg.continuing else 0)  # + a continuing window's first frame
        tables |= {
            "age": nn.Embedding(cfg.max_age + 2, c),  # + none
            "known_mask": nn.Embedding(3, c),
            "frame": nn.Embedding(frames, c),
            "step_phase": nn.Embedding(cfg.order.phases * cfg.order.passes, c),  # the pass, the position's phase
            "kept": nn.Embedding(KEPT_BUCKETS + 2, c),
        }
        if cfg.asked_rate:
            tables["asked"] = nn.Embedding(ASKED_ROWS, c)
        self.tables = nn.ModuleDict(tables)
        layers = {name: nn.Conv2d(c, c, 3, padding=d, dilation=d) for name, d in conv_dilations(cfg).items()}
        second = [f"b{i}" for i in range(len(cfg.dilations))] + [f"pass_b{i}" for i in range(len(cfg.pass_dilations))]
        layers |= {name: nn.Conv2d(c, c, 1) for name in second}
        layers["mask"] = nn.Conv2d(c, 2, 1)
        layers |= {f"hidden{j}": nn.Linear(c, c) for j in range(len(levels))}
        layers |= {f"out{j}": nn.Linear(c, n) for j, n in enumerate(levels)}
        self.layers = nn.ModuleDict(layers)
        for name in second:  # residual blocks start as the identity
            nn.init.zeros_(self.layers[name].weight)
            nn.init.zeros_(self.layers[name].bias)
        for name, table in self.tables.items():  # optional terms start at 0: the network without them
            if name.startswith(OPTIONAL_TABLES):
                nn.init.zeros_(table.weight)
            else:
                nn.init.normal_(table.weight, std=0.5)

    def embed(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        return self.tables[name](rows)

    def embed_codes(self, prefix: str, codes: torch.Tensor) -> torch.Tensor:
        return sum(self.embed(k, r) for k, r in digit_rows(prefix, codes, self.config.levels).items())

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.layers[name](x)

    def conv(self, name: str, x: torch.Tensor, stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
        """Convolution layer `name` with the geometry given (`features_on_lattices` strides it)."""
        return F.conv2d(x, self.layers[name].weight, self.layers[name].bias, stride, padding, dilation)


def digit_rows(prefix: str, codes: torch.Tensor, levels: list[int]) -> dict[str, torch.Tensor]:
    """Rows `{prefix}{j}` of the codes' digits, row levels[j] where there is no code (-1)."""
    none = torch.tensor(levels, device=codes.device)
    digits = torch.where(codes[..., None] >= 0, code_digits(codes.clamp(min=0), levels), none)
    return {f"{prefix}{j}": digits[..., j] for j in range(len(levels))}


CODE_TABLES = ("held", "known")  # whole codes (-1: none), embedded as the sum of their digits' rows (`embed_codes`)
OPTIONAL_TABLES = ("held_logit", "pair", "asked")  # `held_digits`' and `asked_rate`'s: they start at 0


def frame_rows(cfg: PriorConfig, ctx: Context) -> dict[str, torch.Tensor]:
    """Row of each trunk table at each position ([B, h, w] long each; codes for CODE_TABLES): the state before the
    frame."""
    age = torch.where(ctx.held >= 0, ctx.age.clamp(0, cfg.max_age), cfg.max_age + 1)
    frame = ctx.frame.clamp(max=cfg.max_frames - 1)
    if cfg.continuing:  # a prior without the row codes a continuing window's first frame as a fresh one's
        frame = torch.where((ctx.frame == 0) & (ctx.continues > 0), cfg.max_frames, frame)
    rows = {
        "held": ctx.held,
        "age": age,
        "frame": frame[:, None, None].expand_as(age),
        "kept": ctx.kept[:, None, None].expand_as(age),
    }
    if cfg.asked_rate:
        rows["asked"] = ctx.asked[:, None, None].expand_as(age)
    return rows


def pass_rows(cfg: PriorConfig, ctx: Context) -> dict[str, torch.Tensor]:
    """Row of each pass table at each position: what the frame's earlier passes revealed, the pass and phase."""
    phase = cfg.order.phase_map(*ctx.held.shape[-2:]).to(ctx.held.device)
    return {
        "known": ctx.known_code,
        "known_mask": ctx.known_mask,
        "step_phase": (cfg.order.phases * ctx.step[:, None, None] + phase).expand_as(ctx.known_mask),
    }


def _embedded(net, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, channels, h, w]: the sum of the tables' rows; in float64 (the integer prior's) channels last in memory,
    where CPU convolutions run twice as fast; in float32 (training) in PyTorch's default layout, where a training
    step's forward and backward took 2.0 s against 3.3 s channels last in one measurement on a loaded CPU."""
    x = sum(net.embed_codes(k, r) if k in CODE_TABLES else net.embed(k, r) for k, r in rows.items()).permute(0, 3, 1, 2)
    channels_last = torch.channels_last if x.dtype == torch.float64 else torch.contiguous_format
    return x.contiguous(memory_format=channels_last)


def _blocks(net, x: torch.Tensor, prefix: str, count: int) -> torch.Tensor:
    for i in range(count):
        x = x + net.layer(f"{prefix}b{i}", F.relu(net.layer(f"{prefix}a{i}", F.relu(x))))
    return x


def frame_features(net, ctx: Context) -> torch.Tensor:
    """[B, channels, h, w]: the trunk, what the state before a latent frame says at each position (the same for all
    the frame's passes: a decoder runs it once a frame)."""
    return _blocks(net, _embedded(net, frame_rows(net.config, ctx)), "", len(net.config.dilations))


def features(net, ctx: Context, trunk: torch.Tensor) -> torch.Tensor:
    """[B, channels, h, w]: what the network knows at each position of a pass: the frame's `trunk`
    (`frame_features`) plus what the frame's earlier passes revealed."""
    return _blocks(net, trunk + _embedded(net, pass_rows(net.config, ctx)), "pass_", len(net.config.pass_dilations))


def features_by_frame(net, ctx: Context) -> torch.Tensor:
    """`features` of passes that come as whole latent frames, each frame's passes in order (as `window_passes` and
    the trainer's batches give them): the trunk runs once a frame, each pass's blocks as `pass_features` runs them."""
    n = net.config.order.passes
    if len(ctx.step) % n or not torch.equal(ctx.step.cpu(), torch.arange(n).repeat(len(ctx.step) // n)):
        raise ValueError(f"passes must come as whole frames, each frame's {n} passes in order")
    trunk = frame_features(net, ctx.select(slice(None, None, n)))
    by_pass = [pass_features(net, ctx.select(slice(s, None, n)), trunk, s) for s in range(n)]
    return torch.stack(by_pass, 1).flatten(0, 1)


def pass_features(net, ctx: Context, trunk: torch.Tensor, step: int) -> torch.Tensor:
    """[B, channels, h, w]: `features` of pass `step` (every row of `ctx` is that pass) at the positions it codes;
    where the prior allows, run on the stride-2 lattices of its phases alone (`features_on_lattices`: a third of the
    whole frames' work), 0 off them, where the pass codes nothing."""
    if not lattice_ok(net.config):
        return features(net, ctx, trunk)
    order = net.config.order
    lattices = tuple(dict.fromkeys(order.lattice(phase) for phase in order.pass_phases(step)))
    out = trunk.new_zeros(trunk.shape)
    for (dy, dx), on_lattice in zip(lattices, features_on_lattices(net, ctx, trunk, lattices)):
        out[..., dy::2, dx::2] = on_lattice
    return out


def lattice_ok(cfg: PriorConfig) -> bool:
    """Whether the pass blocks can run on one stride-2 lattice's positions alone (`features_on_lattices`): every
    dilation but the first is even, so from the second block on a lattice's positions read only its own."""
    return bool(cfg.pass_dilations) and all(d % 2 == 0 for d in cfg.pass_dilations[1:])


def features_on_lattices(
    prior, ctx: Context, trunk: torch.Tensor, lattices: tuple[tuple[int, int], ...]
) -> list[torch.Tensor]:
    """`features` at the positions of each stride-2 lattice only ([B, channels, ceil((h - row) / 2),
    ceil((w - column) / 2)] for the lattice's first row and column, `CodingOrder.lattice`), for a quarter of the
    pass blocks' work a lattice. The first block's 3x3 convolution reads the whole frame (strided to the lattice);
    the later ones (even dilations, halved) read the lattice's own positions. With `TokenPrior`'s weights the same
    integers (every sum is an integer however it is taken); with the float network's, the same values up to
    rounding."""
    x = trunk + _embedded(prior, pass_rows(prior.config, ctx))
    first = prior.config.pass_dilations[0]
    padded = F.pad(F.relu(x), (first,) * 4)
    out = []
    for dy, dx in lattices:
        y = x[..., dy::2, dx::2]
        if not y.numel():  # a frame one position high or wide has no odd rows or columns
            out.append(y)
            continue
        for i, d in enumerate(prior.config.pass_dilations):
            if i == 0:  # output m, n: position dy + 2m, dx + 2n
                inner = prior.conv("pass_a0", padded[..., dy:, dx:], stride=2, dilation=d)
            else:
                inner = prior.conv(f"pass_a{i}", F.relu(y), padding=d // 2, dilation=d // 2)
            y = y + prior.layer(f"pass_b{i}", F.relu(inner))
        out.append(y)
    return out


def mask_logits(net, feats: torch.Tensor) -> torch.Tensor:
    """[B, h, w, 2]."""
    return net.layer("mask", F.relu(feats)).permute(0, 2, 3, 1)


def held_code_digits(cfg: PriorConfig, held: torch.Tensor) -> torch.Tensor | None:
    """The digits [N, len(levels)] of the codes held at N coded positions (-1: none, digit levels[j]) for
    `digit_logits`, or None for a prior without `held_digits`."""
    if not cfg.held_digits:
        return None
    return torch.stack(list(digit_rows("", held, cfg.levels).values()), -1)


def digit_inputs(net, vectors: torch.Tensor, digits: torch.Tensor, held: torch.Tensor | None = None):
    """Yield (j, what digit j's head reads) for each digit of N codes in turn: their positions' features
    [N, channels] plus their digits before j (`digits[:, :j]`, with the held code's digits for a prior with
    `held_digits`: `held_code_digits`), each added once. Digit j - 1 is read only when j's input is asked for, so
    a decoder fills each digit in before it asks for the next."""
    x = vectors
    for j in range(len(net.config.levels)):
        if j:
            x = x + net.embed(f"digit{j - 1}", digits[:, j - 1])
            if held is not None:
                x = x + net.embed(f"pair{j - 1}", held[:, j - 1] * net.config.levels[j - 1] + digits[:, j - 1])
        yield j, x


def digit_logits(net, x: torch.Tensor, j: int, held: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [N, levels[j]] of digit `j` of N codes from its input (`digit_inputs`) and, with `held_digits`, the
    held code's digits."""
    logits = net.layer(f"out{j}", F.relu(net.layer(f"hidden{j}", F.relu(x))))
    return logits if held is None else logits + net.embed(f"held_logit{j}", held[:, j])


def context_bits(net: PriorNet, ctx: Context, mask: torch.Tensor, codes: torch.Tensor) -> tuple:
    """Bits of the symbols each pass codes, under the float network: (mask bits, code bits), summed. The passes
    come as whole frames (`features_by_frame`)."""
    mask_here, code_here = coded_here(net.config.order, ctx.step, mask)
    feats = features_by_frame(net, ctx)
    mask_nll = F.cross_entropy(mask_logits(net, feats)[mask_here].float(), mask[mask_here].long(), reduction="sum")
    vectors = feats.permute(0, 2, 3, 1)[code_here]
    digits = code_digits(codes[code_here], net.config.levels)
    held = held_code_digits(net.config, ctx.held[code_here])
    code_nll = sum(
        F.cross_entropy(digit_logits(net, x, j, held).float(), digits[:, j], reduction="sum")
        for j, x in digit_inputs(net, vectors, digits, held)
    )
    return mask_nll / math.log(2), code_nll / math.log(2)


# ----------------------------------------------------------------------------- exact integer inference
def _weight_shift(weight: torch.Tensor) -> int:
    """The power of two that scales `weight`'s largest magnitude to at most 2**WEIGHT_BITS - 1."""
    top = float(weight.abs().max())
    if top == 0:
        return 0
    mantissa, exponent = math.frexp(top)  # top = mantissa * 2**exponent, 0.5 <= mantissa < 1: exact
    return min(WEIGHT_BITS - exponent, MAX_SHIFT)


def quantize(net: PriorNet) -> dict[str, torch.Tensor]:
    """The integer weights of `net` (what a prior checkpoint stores): tables at the activation scale, each layer's
    weight and bias at its own power-of-two scale (`shift.*`), and the softmax table."""
    out = {}
    for name, table in net.tables.items():
        out[f"table.{name}"] = torch.round(table.weight.detach().double() * 2**ACT_BITS).long()
    for name, layer in net.layers.items():
        shift = _weight_shift(layer.weight.detach())
        out[f"weight.{name}"] = torch.round(layer.weight.detach().double() * 2.0**shift).long()
        out[f"bias.{name}"] = torch.round(layer.bias.detach().double() * 2.0 ** (shift + ACT_BITS)).long()
        out[f"shift.{name}"] = torch.tensor(shift)
    z = np.arange(LOGIT_RANGE * 2**ACT_BITS + 1, dtype=np.float64)
    out["exp_table"] = torch.from_numpy(
        np.maximum(np.round(2.0**EXP_BITS * np.exp(-z / 2**ACT_BITS)), 1).astype(np.int64)
    )
    too_big = [k for k, v in out.items() if int(v.abs().max()) >= 2**31]
    if too_big:
        raise ValueError(f"prior weights {too_big[:3]} do not fit the checkpoint's 32-bit integers")
    return out


def warm_start(net: PriorNet, prior: "TokenPrior") -> None:
    """Start `net` where a trained `prior` is (`infotok train prior --init`): its integer weights back in floats.
    `net`'s config may add `held_digits` or `asked_rate` (their tables stay 0, so it starts coding as `prior` does,
    to the rounding of float32), more `phase_levels` or other `interleaved_masks` (a finer phase starts from the
    row of the coarser phase it splits, a pass from the pass that coded its first phase) and more pass blocks after
    `prior`'s (residual blocks that start as the identity); any other difference is refused. (`prior`'s weights
    fit its config: `TokenPrior.shapes_ok`.)"""
    new, old = net.config, prior.config
    differ = {f.name for f in fields(PriorConfig) if getattr(new, f.name) != getattr(old, f.name)}
    allowed = {name for name in ("held_digits", "asked_rate") if getattr(new, name)}
    allowed |= {"phase_levels"} if new.phase_levels > old.phase_levels else set()
    allowed |= {"interleaved_masks"}
    allowed |= {"pass_dilations"} if new.pass_dilations[: len(old.pass_dilations)] == old.pass_dilations else set()
    if differ - allowed:
        raise ValueError(f"--init prior does not fit this network: its {', '.join(sorted(differ - allowed))} differ")
    with torch.no_grad():
        for name, table in net.tables.items():
            if f"table.{name}" in prior.weights:
                rows = prior.weights[f"table.{name}"] / 2**ACT_BITS
                if name == "step_phase":
                    rows = rows[_coarser_rows(new.order, old.order)]
                table.weight.copy_(rows)
        for name, layer in net.layers.items():
            if f"shift.{name}" not in prior.weights:  # a pass block `prior` has not: it starts as the identity
                continue
            shift = int(prior.weights[f"shift.{name}"])
            layer.weight.copy_(prior.weights[f"weight.{name}"] * 2.0**-shift)
            layer.bias.copy_(prior.weights[f"bias.{name}"] * 2.0 ** -(shift + ACT_BITS))


def _coarser_rows(new: CodingOrder, old: CodingOrder) -> torch.Tensor:
    """For each (pass, phase) row of `new`'s step_phase table, the row of `old` (no more levels) it refines: the
    old pass of the same kind that coded the (coarser) phase the new pass codes first."""
    shift = new.phases - old.phases  # new phase p >= shift is old phase p - shift; below, it splits old phase 0

    def coarse(phase: int) -> int:
        return max(phase - shift, 0)

    def old_step(step: int) -> int:
        kind, first = new.is_mask(step), coarse(new.pass_phases(step)[0])
        return next(s for s in range(old.passes) if old.is_mask(s) == kind and first in old.pass_phases(s))

    rows = [old.phases * old_step(step) + coarse(phase) for step in range(new.passes) for phase in range(new.phases)]
    return torch.tensor(rows)


def weights_hash(weights: dict[str, torch.Tensor]) -> str:
    """The hash naming a prior's integer weights (a coded file's `prior_hash`)."""
    from .checkpoint import tensor_hash

    return tensor_hash({k: v.long() for k, v in sorted(weights.items())})


def from_format_1(info: dict, weights: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A format-1 prior folder's config and weights as format 2's, coding the same bytes: its blocks, run each pass,
    are pass blocks under a trunk of none (`a{i}` -> `pass_a{i}`, `b{i}` -> `pass_b{i}`), and the very first shipped
    priors, which did not read a window's kept fraction, get a `kept` table of zeros (no input, as they had)."""
    config = dict(info["prior"])
    config["pass_dilations"], config["dilations"] = config.pop("dilations", [1, 2, 4]), []
    renamed = {re.sub(r"\.([ab]\d+)$", r".pass_\1", k): v for k, v in weights.items()}
    kept_rows = (KEPT_BUCKETS + 2, config.get("channels", PriorConfig.channels))
    renamed.setdefault("table.kept", torch.zeros(kept_rows, dtype=torch.int16))
    return {**info, "prior": config}, renamed


def format_1_hashes(config: PriorConfig, weights: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The hashes these weights had in a format-1 folder (what that prior's files name), where format 1 could hold
    the prior: no trunk and none of format 2's options; with a `kept` table of zeros, also the very first priors'
    hash, which had none."""
    if config != PriorConfig(**{name: getattr(config, name) for name in FORMAT_1_FIELDS}):
        return ()
    old = {re.sub(r"\.pass_([ab]\d+)$", r".\1", k): v for k, v in weights.items()}
    unkept = {k: v for k, v in old.items() if k != "table.kept"}
    return (weights_hash(old), *([weights_hash(unkept)] if not old["table.kept"].any() else []))


def _smallest_int(values: torch.Tensor) -> torch.Tensor:
    """int16 where every value fits (most weights: 12 bits), else int32 (`quantize` checked they fit)."""
    fits = int(values.abs().max()) < 2**15 if values.numel() else True
    return values.to(torch.int16 if fits else torch.int32).contiguous()


class TokenPrior:
    """A trained prior in exact integer arithmetic: `probabilities` are the same numbers on every machine.

    `hash` names the weights; an entropy-coded file records it and refuses another prior."""

    def __init__(self, config: PriorConfig, weights: dict[str, torch.Tensor], info: dict | None = None):
        self.config, self.info = config, dict(info or {})
        self.weights = {k: v.to(torch.float64) if k != "exp_table" else v.long() for k, v in weights.items()}
        self.shapes_ok()
        self.dilations = conv_dilations(config)
        self.scales = {k[len("shift.") :]: 2.0 ** -int(v) for k, v in self.weights.items() if k.startswith("shift.")}
        self.hash = weights_hash(weights)
        self.hashes = (self.hash, *format_1_hashes(config, weights))  # what files coded with these weights may name
        self._code_tables: dict[str, torch.Tensor] = {}  # `embed_codes`

    def shapes_ok(self) -> None:
        expected = {k: tuple(v.shape) for k, v in quantize(PriorNet(self.config)).items()}
        got = {k: tuple(v.shape) for k, v in self.weights.items()}
        if expected != got:
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
            raise ValueError(
                f"prior weights do not match its config (missing {missing[:3]}, unexpected {extra[:3]}, "
                f"wrong shape {wrong[:3]})"
            )

    @classmethod
    def from_net(cls, net: PriorNet, info: dict | None = None) -> "TokenPrior":
        return cls(net.config, quantize(net), info)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TokenPrior":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config_file, weights_file = directory / PRIOR_CONFIG, directory / PRIOR_FILE
        if not config_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(f"{directory}: not a prior folder (needs {PRIOR_CONFIG} and {PRIOR_FILE})")
        info = json.loads(config_file.read_text())
        if not isinstance(info, dict) or info.get("format") not in (PRIOR_FORMAT, PRIOR_FORMAT_1):
            raise ValueError(f"{config_file}: not an infotok prior config (format {PRIOR_FORMAT!r} expected)")
        try:
            weights = load_file(str(weights_file))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{weights_file}: unreadable prior weights ({exc})") from None
        if info["format"] == PRIOR_FORMAT_1:
            info, weights = from_format_1(info, weights)
        return cls(PriorConfig.from_dict(info["prior"]), weights, info)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: _smallest_int(v) for k, v in sorted(self.weights.items())}
        save_tensors(directory / PRIOR_FILE, weights, {"format": PRIOR_FORMAT})
        info = self.info | {"format": PRIOR_FORMAT, "prior": self.config.to_dict(), "hash": self.hash}
        (directory / PRIOR_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
        return directory

    def embed(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        return F.embedding(rows.cpu(), self.weights[f"table.{name}"])

    def embed_codes(self, prefix: str, codes: torch.Tensor) -> torch.Tensor:
        """The sum of the codes' digit rows from one table of whole codes, built once (for the shipped prior 64,001
        rows of 48 float64s, 25 MB, a table for held and one for known codes): one lookup a code instead of six,
        the same integers."""
        if prefix not in self._code_tables:
            every = torch.arange(-1, math.prod(self.config.levels))
            self._code_tables[prefix] = sum(
                self.embed(k, r) for k, r in digit_rows(prefix, every, self.config.levels).items()
            )
        return F.embedding(codes.cpu() + 1, self._code_tables[prefix])

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A conv or linear layer in fixed point: exact integer sums (< 2**53 in float64), then the power-of-two
        rescale rounded half up, so any kernel, summing in any order, gives the same integers."""
        weight, bias = self.weights[f"weight.{name}"], self.weights[f"bias.{name}"]
        if weight.dim() == 4:
            dilation = self.dilations.get(name, 1)
            return self.conv(name, x, padding=dilation * (weight.shape[-1] // 2), dilation=dilation)
        return self._rescaled(name, F.linear(x, weight, bias))

    def conv(self, name: str, x: torch.Tensor, stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
        """Convolution layer `name` in fixed point with the geometry given (`features_on_lattices` strides it)."""
        acc = F.conv2d(x, self.weights[f"weight.{name}"], self.weights[f"bias.{name}"], stride, padding, dilation)
        return self._rescaled(name, acc)

    def _rescaled(self, name: str, acc: torch.Tensor) -> torch.Tensor:
        return acc.mul_(self.scales[name]).add_(0.5).floor_().clamp_(-ACT_LIMIT, ACT_LIMIT)

    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        """Integer logits [..., n] -> probabilities [..., n] (float64, rows summing to 1), from the stored table."""
        z = (logits.max(-1, keepdim=True).values - logits).clamp(max=len(self.weights["exp_table"]) - 1).long()
        weight = self.weights["exp_table"][z].numpy()
        return weight / weight.sum(-1, keepdims=True)
