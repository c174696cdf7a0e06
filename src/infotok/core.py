"""The batched tokenization core of `InfoTok`: settings checked once, then rate policy -> ranking.

`encode` is the one batched core: a batch of windows in, a `TokenBatch` (indices, keep-mask, rate and
score per window) out, on the model's device. It computes only the inputs its rate policy
(`rate_policies`) and ranking (`selection`) read, from the network's stages (`encode_codes`,
`router_scores`, the value predictor). Everything that tokenizes the grid (the long-video pipeline,
evaluation, the oracle) goes through it; training draws its masks from the same rankings
(`train_forward`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from .batch import TokenBatch
from .fill import SPARSE_KEY_DENSITY, Carry, check_fill, check_key_density
from .frontend import deprecated_objective
from .predictor import curve_index
from .rate_policies import rate_policy_for
from .router import check_rate, check_strategy, check_target
from .selection import MIN_RATE, Inputs, check_selection, latent_change, ranking_for
from .video import to_model


def as_model_input(x: torch.Tensor | np.ndarray, keep_uint8: bool = False) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1] (with `keep_uint8`, the same layout
    left uint8, for a consumer that converts it a chunk at a time); float input is checked and passed on."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8 and x.dim() == 5:
        return x.permute(0, 4, 1, 2, 3) if keep_uint8 and x.shape[-1] == 3 else to_model(x)
    if not x.is_floating_point() or x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(
            f"windows must be float [B, 3, T, H, W] in [-1, 1] or uint8 [B, T, H, W, 3], got {x.dtype} {list(x.shape)}"
        )
    return x


class TokenizerCore:
    """`InfoTok`'s tokenization: which choices a call makes, checked before any video is read, and the
    batched `encode` / `reselect` / `decode`. Reads the network through `features`, `base`,
    `router_scores`, `predictor`, `calibration` and `score_mean`."""

    def choices(
        self,
        strategy: str | None = None,
        selection: str | None = None,
        fill: str | None = None,
        target_psnr: float | None = None,
    ) -> tuple[str, str, str]:
        """The (strategy, selection, fill) a tokenization uses: what was asked, else the defaults.
        The fill defaults to the checkpoint's (`hold` in ours, `mask` in converted release weights),
        except under a PSNR target, whose predicted curves describe masked value selection. The
        selection defaults to the fill's natural ranking: `drift` under `hold`; under `mask`,
        `value` where there is a predictor (as good as the paper's `error` without its decoder pass), else
        `error`. The strategy defaults to `rd` under `hold` where the checkpoint has its calibrated
        thresholds (it beats `static` and `global_elbo` there and needs no decoder pass), else the
        paper's `global_elbo`."""
        fill = check_fill(fill or ("mask" if target_psnr is not None else self.default_fill))
        if selection is None:
            selection = "drift" if fill == "hold" else ("value" if self.predictor_config else "error")
        if strategy is None:
            strategy = "rd" if fill == "hold" and self.calibration.rd_thresholds else "global_elbo"
        return check_strategy(strategy), check_selection(selection), fill

    def drops_tokens(self, fill: str) -> bool:
        """Whether this checkpoint can decode windows that dropped tokens under `fill`: an InfoTok model
        under any fill, a fixed-rate base under `hold` alone (a dropped token decodes the code last kept
        at its position; the base has no learned stand-in for the mask fill)."""
        return self.adaptive or check_fill(fill) == "hold"

    def check_rates(self, *rates: float, fill: str) -> None:
        if not self.drops_tokens(fill) and any(r < 1 for r in rates):
            raise ValueError(
                f"checkpoint {self.name!r} is a fixed-rate base tokenizer: below rate 1 it tokenizes only "
                f"under the hold fill (--fill hold), not {fill}"
            )

    # the temporal peer's ranking (`selection.latent_change`), where callers found it before the rankings moved
    latent_change = staticmethod(latent_change)

    # ----------------------------------------------------------------------- the batched core
    def settings(
        self,
        rate: float,
        strategy: str | None = None,
        selection: str | None = None,
        fill: str | None = None,
        rates: Sequence[float] | None = None,
        target_psnr: float | None = None,
    ) -> tuple[float, str, str, str, float | None]:
        """A tokenization's (rate, strategy, selection, fill, target PSNR), checked and with the
        defaults of `choices` filled in. Refuses bad values, and a checkpoint without the predictor or
        the calibration these settings need, before any video is read (`TokenStream` asks up front)."""
        rate = check_rate(rate)
        target_psnr = None if target_psnr is None else check_target(target_psnr)
        strategy, selection, fill = self.choices(strategy, selection, fill, target_psnr)
        if target_psnr is not None and fill == "hold":
            raise ValueError(
                "--target-psnr plans on the value predictor's curves, which describe the mask fill; "
                "it cannot be combined with --fill hold (use --rate, or drop --fill)"
            )
        self.check_rates(rate, *(rates or []), fill=fill)
        ranking_for(selection).check(self)
        if rates is None:
            rate_policy_for(self, strategy, fill, rate, target_psnr).check()
        return rate, strategy, selection, fill, target_psnr

    @property
    def fills_in_dropped(self) -> bool:
        """Whether a sparse key frame's dropped positions decode from more than the zero code: an adaptive
        checkpoint's learned dropped embedding, or a fixed-rate base's interpolation of the lattice around them
        (`fill.fill_key_frame`); not the release's zero-code convention."""
        return not self.adaptive or self.dropped_mode == "embedding"

    def resolve_key_density(self, key_density: float | None, fill: str, selection: str) -> float:
        """The density of a tokenization's sparse key frames: `key_density`, or (None) the one this checkpoint's
        hold thresholds were calibrated with (`Calibration.key_density`) under the hold fill and drift selection,
        1 otherwise. Below 1 it needs both, and a checkpoint that fills in dropped positions (`fills_in_dropped`;
        a fixed-rate base on the `fill.SPARSE_KEY_DENSITY` lattice alone, the one its decoder interpolates)."""
        if key_density is None:
            return self.calibration.key_density if fill == "hold" and selection == "drift" else 1.0
        if check_key_density(key_density) == 1:
            return 1.0
        if fill != "hold" or selection != "drift":
            raise ValueError(f"a sparse key frame needs the hold fill and drift selection, not {fill} and {selection}")
        if not self.fills_in_dropped:
            raise ValueError(
                f"checkpoint {self.name!r} cannot fill in the positions a sparse key frame drops (no learned dropped "
                "embedding): use key density 1"
            )
        if not self.adaptive and key_density != SPARSE_KEY_DENSITY:
            raise ValueError(
                f"a fixed-rate base fills in a sparse key frame from the lattice of key density {SPARSE_KEY_DENSITY:g} "
                f"alone, not {key_density:g}"
            )
        return key_density

    def check_predictor(self, why: str) -> None:
        if self.predictor_config is None:
            raise ValueError(
                f"checkpoint {self.name!r} has no value predictor, which {why} needs (train one with "
                f"`infotok train infotok --init CHECKPOINT --train-selection value`)"
            )

    @torch.no_grad()
    def encode(
        self,
        x: torch.Tensor | np.ndarray,
        rate: float = 0.5,
        strategy: str | None = None,
        selection: str | None = None,
        generator: np.random.Generator | int | None = None,
        rates: Sequence[float] | None = None,
        keep_scores: bool = False,
        target_psnr: float | None = None,
        objective: str | None = None,  # deprecated: rd maximises mean PSNR
        fill: str | None = None,
        carry: Carry | None = None,
        chained: bool = False,
        key_density: float | None = None,
    ) -> TokenBatch:
        """Tokenize a batch of windows: float [B, 3, T, H, W] in [-1, 1] or uint8 [B, T, H, W, 3],
        any size (padded to the model grid here), on the model's device.

        The router's decoder pass runs only where a strategy or selection reads its scores; `rd`,
        `target_psnr` and `value` selection read the value predictor, which runs on the encoder's
        features; `rd` under the `hold` fill reads the codes' drift (`hold_rates`). `target_psnr`
        gives each window the fewest tokens predicted to reach it, less the checkpoint's calibrated
        margins (`target_rates`; instead of `rate` and `strategy`). `strategy`, `selection` and `fill`
        default as `choices` says. `keep_scores` keeps the score maps in the batch so `reselect` can
        try other rates cheaply. With a `carry` (`fill.Carry`, from the previous windows' `carry_after`)
        the windows continue those: the first latent frame keeps only what drifted from the carried codes,
        and a window may keep fewer than 1/16 of its tokens (at least one); `hold` and `drift` only.
        `chained` (implied by a `carry`): the windows are part of a chain (a later window continues them), so
        `rd` rates them at the chain's threshold (`Calibration.hold_thresholds`). `key_density`: sparse key frames'
        density (`fill.key_lattice`; None: the checkpoint's, `resolve_key_density`).
        """
        deprecated_objective(objective)
        rate, strategy, selection, fill, target_psnr = self.settings(
            rate, strategy, selection, fill, rates, target_psnr
        )
        chained = chained or carry is not None
        if chained and (fill != "hold" or selection != "drift"):
            raise ValueError(
                f"continuing windows need the hold fill and drift selection, not {fill} and {selection} "
                "(use refresh 1: windows that start afresh)"
            )
        policy = None if rates is not None else rate_policy_for(self, strategy, fill, rate, target_psnr)
        ranking = ranking_for(selection)
        reads = ranking.reads | (policy.reads if policy else frozenset())
        if isinstance(generator, int) or generator is None:
            generator = np.random.default_rng(generator or 0)
        # on the CPU our base and the router convert a uint8 window chunk by chunk (a quarter of float's memory)
        x = as_model_input(x, keep_uint8=self.device.type == "cpu" and self.base.takes_uint8)
        x = x.to(self.device)
        frames, height, width = x.shape[2:]
        x = self.geometry.pad(x)
        feats = self.features(x)
        inputs = Inputs(chained=chained)
        floor = MIN_RATE
        if carry is not None:
            carry = carry.to(self.device)
            inputs.carried = self.carried_codes(carry)
            inputs.present = carry.present
            floor = 1 / feats[0, 0].numel()  # one token of the window's t x h x w
        codes, indices, values = self.quantize_values(feats)
        inputs.key_density = self.resolve_key_density(key_density, fill, selection)
        inputs.codes = self.ranked_codes(codes, values, fill, inputs.carried, inputs.present)
        if {"value", "curve"} & reads or (keep_scores and self.predictor_config):
            inputs.value, inputs.curve = self.predictor(feats)
        del feats  # not kept through the router's decode (83 MB at 720p)
        if keep_scores or "change" in reads:
            inputs.change = latent_change(codes)
        draws, seeds = [], []  # per window, in order: the policy's draw, then the seed of random selection
        for _ in range(codes.shape[0]):
            draws.append(policy.draw(generator) if policy else None)
            seeds.append(torch.Generator().manual_seed(int(generator.integers(2**62))))
        after_router = policy is not None and "scores" in policy.reads  # global_elbo's rates read the scores
        chosen = None if after_router else (rates if policy is None else policy.rates(inputs, draws))
        # the router's decoder pass runs only where the policy reads it, or the ranking at some rate below 1
        routed = keep_scores or after_router or "scores" in ranking.reads_for(chosen)
        smap = self.router_scores(x, codes) if routed else torch.zeros(indices.shape, device=indices.device)
        inputs.scores = smap
        chosen = [check_rate(r, floor) for r in (policy.rates(inputs, draws) if after_router else chosen)]
        masks = ranking.masks(inputs, chosen, seeds)
        scores = [float(smap[i].mean()) for i in range(len(chosen))]
        value, curve, change = inputs.value, inputs.curve, inputs.change
        f64 = dict(dtype=torch.float64, device=indices.device)
        predicted = None
        if curve is not None:
            predicted = curve.gather(1, curve_index(chosen, curve.shape[1], curve.device)[:, None])[:, 0].double()
        return TokenBatch(
            indices.long().masked_fill(~masks, 0),
            masks,
            torch.tensor(chosen, **f64),
            torch.tensor(scores if routed else [float("nan")] * len(scores), **f64),
            frames,
            height,
            width,
            smap if keep_scores else None,
            2 if routed else 1,
            change if keep_scores else None,
            value if keep_scores else None,
            curve if keep_scores else None,
            predicted,
            fill,
            carry,
            values if keep_scores else None,
        )

    def reselect(
        self,
        batch: TokenBatch,
        rates: Sequence[float],
        selection: str = "error",
        seed: int = 0,
        fill: str = "mask",
        key_density: float | None = None,
    ) -> TokenBatch:
        """The same windows at other rates (decoded with `fill`; `key_density` as `encode` takes it), from the
        scores kept by `encode(..., keep_scores=True)`: evaluation and the oracle try many rates without
        encoding again. Only kept tokens' indices survive in a batch, so the source batch must be at full
        rate. Window i's random selection is seeded with `seed + i`."""
        if batch.score_map is None or batch.level_values is None or not bool(batch.mask.all()):
            raise ValueError("reselect needs a full-rate batch encoded with keep_scores=True")
        rates = [check_rate(r) for r in rates]
        self.check_rates(*rates, fill=fill)
        if selection == "value" and batch.value is None:
            self.check_predictor("value selection")
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(batch))]
        codes = self.batch_ranked_codes(batch, fill) if selection == "drift" else None
        inputs = Inputs(codes, batch.score_map, batch.value, None, batch.latent_change)
        inputs.key_density = self.resolve_key_density(key_density, fill, selection)
        masks = ranking_for(selection).masks(inputs, rates, generators).to(batch.mask.device)
        return replace(
            batch,
            indices=batch.indices.masked_fill(~masks, 0),
            mask=masks,
            rate=torch.tensor(rates, dtype=torch.float64, device=masks.device),
            predicted=None,
            fill=check_fill(fill),
        )

    def batch_ranked_codes(self, batch: TokenBatch, fill: str) -> torch.Tensor:
        """`ranked_codes` of a full-rate batch encoded with keep_scores=True."""
        codes = self.base.codes_from_indices(batch.indices.to(self.device))
        return self.ranked_codes(codes, batch.level_values.to(self.device), fill)

    @torch.no_grad()
    def decode(self, batch: TokenBatch) -> torch.Tensor:
        """TokenBatch -> video [B, 3, T, H, W] in [-1, 1] (the decoder's overshoot clipped, as pixels
        clip it), cropped to the windows' size."""
        indices, mask = batch.indices.to(self.device), batch.mask.to(self.device)
        if batch.carry is not None:
            indices, mask = batch.carry.into(indices, mask)
        x = self.decode_codes(self.base.codes_from_indices(indices), mask, batch.fill)
        return self.geometry.crop(x, batch.frames, batch.height, batch.width).clamp_(-1, 1)

    def check_tokens(self, header) -> None:
        """Tokens decode with the architecture and decoding weights that made them; files from before
        the decoding hash name the whole weights file, which is accepted too."""
        if header.config_hash != self.config_hash:
            raise ValueError(
                f"these tokens were made by model {header.model!r} of another architecture (config "
                f"{header.config_hash}; {self.name!r} has {self.config_hash}): decode with the checkpoint "
                "that made them"
            )
        if self.model_hash and header.model_hash not in (self.model_hash, self.weights_hash):
            raise ValueError(
                f"these tokens were made by model {header.model!r} with other decoding weights "
                f"({header.model_hash}; {self.name!r} decodes with {self.model_hash}): decode with the "
                "checkpoint that made them (a recalibrated copy of it decodes them too)"
            )
