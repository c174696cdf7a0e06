"""`InfoTok`, the network: base tokenizer + compressor/decompressor + router + selection.

`encode` is the one batched tokenization core: a batch of windows in, a `TokenBatch` (indices,
keep-mask, rate and score per window) out, on the model's device. Everything that tokenizes (the
long-video pipeline, evaluation, the oracle, training's masks) goes through it or through the
stages it is made of (`encode_codes`, `router_scores`, `select`). Whole videos are handled by
`frontend` (the keyword API) and `pipeline`, checkpoint folders by `checkpoint`. Without a compressor
the model is the fixed-rate base tokenizer (only rate 1 is possible).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import checkpoint
from .base import BaseConfig
from .batch import TokenBatch
from .calibration import Calibration
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError
from .compressor import CompressorConfig
from .cosmos import CosmosConfig, ReleaseCompressorConfig
from .fill import apply_fills, check_fill
from .frontend import VideoFrontEnd, deprecated_objective
from .geometry import Geometry
from .networks import BASE_KINDS, COMPRESSOR_KINDS, build_base, build_stacks, config_from_dict
from .predictor import PredictorConfig, ValuePredictor, curve_index, curve_targets, predictor_loss, value_targets
from .rate_policies import rate_policy_for
from .router import check_rate, check_strategy, check_target, global_elbo_rate, score_map
from .selection import Inputs, check_selection, keep_masks, latent_change, ranking_for
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


def resolve_device(device: str | torch.device) -> torch.device:
    """A device this machine has, or one line saying which ones it does have."""
    have = ["cpu"] + (
        ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; this machine has: {', '.join(have)}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(
            f"device {device!r} is not available (torch {torch.__version__} sees "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA devices); "
            f"this machine has: {', '.join(have)}"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; this machine has: {', '.join(have)}")
    return dev


# Dropped positions are decoded from a learned embedding (ours) or, in the InfoTok release's weights,
# from the all-zero FSQ code
DROPPED_MODES = ("embedding", "zero_code")


try:  # Hugging Face conventions (push_to_hub, model-card metadata) where huggingface_hub is installed
    from huggingface_hub import ModelHubMixin as HubMixin
except ImportError:

    class HubMixin:
        """Without huggingface_hub: takes ModelHubMixin's class keywords and adds nothing."""

        def __init_subclass__(cls, **hub_metadata):
            super().__init_subclass__()


class InfoTok(
    VideoFrontEnd, nn.Module, HubMixin, library_name="infotok", license="apache-2.0", tags=["video-tokenizer"]
):
    """The network (whole videos: `frontend.VideoFrontEnd`). `from_pretrained` / `save_pretrained` keep
    infotok's own folder format (model.safetensors + config.json, checked key by key) and replace
    ModelHubMixin's, whose `push_to_hub` saves through them."""

    def __init__(
        self,
        base: BaseConfig | CosmosConfig | None = None,
        compressor: CompressorConfig | ReleaseCompressorConfig | None = None,
        score_mean: float = 0.0,
        name: str = "infotok",
        dropped: str = "embedding",
        predictor: PredictorConfig | None = None,
        fill: str = "mask",
        held: bool = False,
    ):
        super().__init__()
        if dropped not in DROPPED_MODES:
            raise ValueError(f"dropped must be one of {', '.join(DROPPED_MODES)}, got {dropped!r}")
        self.name = name
        self.base = build_base(base or BaseConfig())
        self.geometry = Geometry(self.base.temporal_factor, self.base.spatial_factor)
        self.compressor_config = compressor
        self.dropped_mode = dropped
        if compressor is not None:
            self.compressor, self.decompressor = build_stacks(compressor, self.base)
            if dropped == "embedding":
                self.dropped = nn.Parameter(torch.randn(self.base.decoder_dim) * 0.02)
        elif held:
            raise ValueError("a held embedding needs an adaptive model (a compressor)")
        # added to the features of positions the hold fill gave an older code, so the decompressor can
        # tell a held code from a kept one (zero: decodes exactly as without it)
        self.register_parameter("held", nn.Parameter(torch.zeros(self.base.decoder_dim)) if held else None)
        self.predictor_config = predictor
        if predictor is not None:
            if compressor is None:
                raise ValueError("a value predictor needs an adaptive model (a compressor)")
            self.predictor = ValuePredictor(self.base.feature_dim, predictor)
        self.register_buffer("score_mean", torch.tensor(float(score_mean)))
        self.calibration = Calibration()  # set by from_pretrained and `infotok calibrate`
        self.default_fill = check_fill(fill)
        # set by from_pretrained: the decoding weights, which token files name (a recalibrated or
        # encoder-side change keeps it), and the weights file as a whole (what encodes)
        self.model_hash = self.weights_hash = ""

    # ---------------------------------------------------------------------------- configuration
    @property
    def adaptive(self) -> bool:
        return self.compressor_config is not None

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
        `value` where there is a predictor (it beats the paper's `error` in BENCHMARKS.md), else
        `error`. The strategy defaults to `rd` under `hold` where the checkpoint has its calibrated
        thresholds (it beats `static` and `global_elbo` there and needs no decoder pass), else the
        paper's `global_elbo`."""
        fill = check_fill(fill or ("mask" if target_psnr is not None else self.default_fill))
        if selection is None:
            selection = "drift" if fill == "hold" else ("value" if self.predictor_config else "error")
        if strategy is None:
            strategy = "rd" if fill == "hold" and self.calibration.rd_thresholds else "global_elbo"
        return check_strategy(strategy), check_selection(selection), fill

    @property
    def device(self) -> torch.device:
        return self.score_mean.device

    def config_dict(self) -> dict:
        config = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "name": self.name,
            "base": self.base.config.to_dict(),
            "compressor": self.compressor_config.to_dict() if self.adaptive else None,
            "score_mean": float(self.score_mean),
        }
        config |= {"dropped": self.dropped_mode} if self.dropped_mode != "embedding" else {}
        config |= {"held_embedding": True} if self.held is not None else {}
        config |= {"predictor": self.predictor_config.to_dict()} if self.predictor_config else {}
        config |= {"fill": self.default_fill} if self.default_fill != "mask" else {}
        return config | self.calibration.to_config()

    def code_range(self) -> float:
        """The spread of the codes' values, which bounds every drift (`router.hold_grid`)."""
        codes = self.base.codes_from_indices(torch.arange(self.base.codebook_size, device=self.device))
        return float(codes.amax() - codes.amin())

    def encoding_modules(self) -> list[nn.Module]:
        """What turns pixels into codes, masks and rates: the base encoder, the compressor, the predictor."""
        return [
            *self.base.encoder_modules(),
            *([self.compressor] if self.adaptive else []),
            *([self.predictor] if self.predictor_config else []),
        ]

    def decoding_hash(self) -> str:
        """Identifies the weights that decode tokens: every tensor a decoding module holds (one that an
        encoding module shares with it too, as the release's stacks share a time embedding), not the
        encoding modules' own nor the calibration."""
        encoding = self.encoding_modules()
        prefixes = tuple(f"{name}." for name, m in self.named_modules() if any(m is e for e in encoding))
        state = self.state_dict(keep_vars=True)
        decoding = {id(v) for k, v in state.items() if not k.startswith(prefixes) and k != "score_mean"}
        return checkpoint.tensor_hash({k: v for k, v in state.items() if id(v) in decoding})

    @property
    def config_hash(self) -> str:
        """Identifies the architecture in token files."""
        arch = {k: v for k, v in self.config_dict().items() if k in ("base", "compressor")}
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    # ----------------------------------------------------------------------------------- stages
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] on the grid -> what is quantized [B, C, t, h, w] (after the compressor)."""
        h = self.base.encode_features(x)
        return self.compressor(h) if self.adaptive else h

    def encode_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, 3, T, H, W] on the grid -> (codes [B, 6, t, h, w], indices [B, t, h, w]); differentiable."""
        return self.base.quantize(self.features(x))

    def decode_codes(
        self, codes: torch.Tensor, mask: torch.Tensor | None = None, fill: str | Sequence[str] = "mask"
    ) -> torch.Tensor:
        """codes [B, 6, t, h, w] (+ keep-mask [B, t, h, w]) -> video [B, 3, T, H, W]; dropped positions
        are decoded from the learned "dropped" embedding (or, with fill `hold`, from the code last kept
        at their position), never from their own code. `fill` is one rule or one per window."""
        return self.base.decode_features(self.decoder_features(codes, mask, fill))

    def decoder_features(
        self, codes: torch.Tensor, mask: torch.Tensor | None = None, fill: str | Sequence[str] = "mask"
    ) -> torch.Tensor:
        """What the base decoder decodes: codes (+ keep-mask, fill per window) -> features after the
        decompressor. Held positions (hold fill, an older code) carry the held-code embedding."""
        held = None
        if mask is not None:
            codes, mask, held = apply_fills(codes, mask, [fill] * codes.shape[0] if isinstance(fill, str) else fill)
        if self.adaptive and mask is not None and self.dropped_mode == "zero_code":
            codes = codes * mask[:, None].to(codes.dtype)
        f = self.base.features_from_codes(codes)
        if self.adaptive:
            if mask is not None and self.dropped_mode == "embedding":
                keep = mask[:, None].to(f.dtype)
                f = f * keep + self.dropped.to(f.dtype)[None, :, None, None, None] * (1 - keep)
            if held is not None and self.held is not None:
                f = f + self.held.to(f.dtype)[None, :, None, None, None] * held[:, None].to(f.dtype)
            f = self.decompressor(f)
        elif mask is not None and not bool(mask.all()):
            raise ValueError("this checkpoint is a fixed-rate base tokenizer: it cannot decode dropped tokens")
        return f

    @torch.no_grad()
    def router_scores(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The router pass: full-rate decode, per-token L1 error [B, t, h, w]. Our base tokenizer decodes
        a few latent frames at a time and each chunk is scored as it comes (`decoded_windows`), so the
        decoded window (365 MB at 720p) is never whole; other bases decode it whole. x: video [B, 3, T,
        H, W] on the grid, float in [-1, 1] or (with a base that `takes_uint8`) uint8 pixels."""
        pooled = []
        for start, frames in self.base.decoded_windows(
            self.decoder_features(codes)
        ):  # one frame, then groups of 4, as a window
            scores = score_map(x[:, :, start : start + frames.shape[2]], frames, self.geometry)
            pooled.append(scores[:, 1:] if pooled else scores)  # a later chunk's first frame is the previous one's
        return torch.cat(pooled, dim=1)

    def check_rates(self, *rates: float) -> None:
        if not self.adaptive and any(r < 1 for r in rates):
            raise ValueError(f"checkpoint {self.name!r} is a fixed-rate base tokenizer: only rate 1 is possible")

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
        self.check_rates(rate, *(rates or []))
        ranking_for(selection).check(self)
        if rates is None:
            rate_policy_for(self, strategy, fill, rate, target_psnr).check()
        return rate, strategy, selection, fill, target_psnr

    def check_predictor(self, why: str) -> None:
        if self.predictor_config is None:
            raise ValueError(
                f"checkpoint {self.name!r} has no value predictor, which {why} needs (train one with "
                f"`infotok train infotok --init CHECKPOINT --train-selection value`)"
            )

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Each window's predicted PSNR at rates k/16 [B, 16], from the encoder alone (no decoder pass)."""
        self.check_predictor("a predicted curve")
        return self.predictor(self.features(self.geometry.pad(as_model_input(x).to(self.device))))[1]

    @torch.no_grad()
    def latent_codes(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Each window's latent codes [B, C, t, h, w] (what `hold` rates and `drift` rank), from the
        encoder alone."""
        return self.encode_codes(self.geometry.pad(as_model_input(x).to(self.device)))[0]

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
    ) -> TokenBatch:
        """Tokenize a batch of windows: float [B, 3, T, H, W] in [-1, 1] or uint8 [B, T, H, W, 3],
        any size (padded to the model grid here), on the model's device.

        The router's decoder pass runs only where a strategy or selection reads its scores; `rd`,
        `target_psnr` and `value` selection read the value predictor, which runs on the encoder's
        features; `rd` under the `hold` fill reads the codes' drift (`hold_rates`). `target_psnr`
        gives each window the fewest tokens predicted to reach it, less the checkpoint's calibrated
        margins (`target_rates`; instead of `rate` and `strategy`). `strategy`, `selection` and `fill`
        default as `choices` says. `keep_scores` keeps the score maps in the batch so `reselect` can
        try other rates cheaply.
        """
        deprecated_objective(objective)
        rate, strategy, selection, fill, target_psnr = self.settings(
            rate, strategy, selection, fill, rates, target_psnr
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
        codes, indices = self.base.quantize(feats)
        inputs = Inputs(codes=codes)
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
        chosen = [check_rate(r) for r in (policy.rates(inputs, draws) if after_router else chosen)]
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
        )

    def reselect(
        self, batch: TokenBatch, rates: Sequence[float], selection: str = "error", seed: int = 0, fill: str = "mask"
    ) -> TokenBatch:
        """The same windows at other rates (decoded with `fill`), from the scores kept by
        `encode(..., keep_scores=True)`: evaluation and the oracle try many rates without encoding
        again. Only kept tokens' indices survive in a batch, so the source batch must be at full
        rate. Window i's random selection is seeded with `seed + i`."""
        if batch.score_map is None or not bool(batch.mask.all()):
            raise ValueError("reselect needs a full-rate batch encoded with keep_scores=True")
        rates = [check_rate(r) for r in rates]
        self.check_rates(*rates)
        if selection == "value" and batch.value is None:
            self.check_predictor("value selection")
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(batch))]
        codes = self.base.codes_from_indices(batch.indices.to(self.device)) if selection == "drift" else None
        inputs = Inputs(codes, batch.score_map, batch.value, None, batch.latent_change)
        masks = ranking_for(selection).masks(inputs, rates, generators).to(batch.mask.device)
        return replace(
            batch,
            indices=batch.indices.masked_fill(~masks, 0),
            mask=masks,
            rate=torch.tensor(rates, dtype=torch.float64, device=masks.device),
            predicted=None,
            fill=check_fill(fill),
        )

    @torch.no_grad()
    def decode(self, batch: TokenBatch) -> torch.Tensor:
        """TokenBatch -> video [B, 3, T, H, W] in [-1, 1] (the decoder's overshoot clipped, as pixels
        clip it), cropped to the windows' size."""
        codes = self.base.codes_from_indices(batch.indices.to(self.device))
        x = self.decode_codes(codes, batch.mask.to(self.device), batch.fill)
        return self.geometry.crop(x, batch.frames, batch.height, batch.width).clamp_(-1, 1)

    def forward(
        self,
        x: torch.Tensor,
        rates: Sequence[float] | Sequence[Sequence[float]] | None = None,
        selection: str | Sequence[str] = "error",
        score_mean: float | None = None,
        predictor_only: bool = False,
        train_predictor: bool = False,
    ) -> tuple[torch.Tensor, list[float], torch.Tensor | None, torch.Tensor | None]:
        """Training pass on windows on the grid: encode once, route (no gradient), decode the kept tokens.

        `rates` (one per window, None = full rate) are averages turned into global_elbo rates when
        `score_mean` is given (Algorithm 1 with the router in the loop), else the windows' rates.
        `selection` is one method or one per window; `drift` windows decode under the hold fill, the
        others under mask. With `train_predictor`, this decode also trains
        the value predictor (on detached features: it never changes the tokens): token values on
        every window, the curve on windows selected by `value` (it describes that selection); it runs
        on every step, so that distributed runs use every parameter. Returns (reconstruction, the rates
        used, the score map or None where no router pass ran, the predictor's loss or None). With `predictor_only`, see
        `_predictor_forward`.
        """
        if predictor_only:
            return self._predictor_forward(x, rates)
        b = x.shape[0]
        feats = self.features(x)
        codes, indices = self.base.quantize(feats)
        if rates is None:
            return self.decode_codes(codes), [1.0] * b, None, None
        selections = [selection] * b if isinstance(selection, str) else list(selection)
        predicting = train_predictor and self.predictor_config is not None
        full = None
        if "error" in selections or predicting or score_mean is not None:
            with torch.no_grad():
                full = self.decode_codes(codes.detach())
            smap = score_map(x, full, self.geometry)
        else:
            smap = torch.zeros(indices.shape, device=x.device)
        if score_mean is not None:
            scores = [float(smap[i].mean()) for i in range(b)]
            rates = [global_elbo_rate(r, s, score_mean) for r, s in zip(rates, scores)]
        value, curve = self.predictor(feats.detach()) if predicting else (None, None)
        if value is None and "value" in selections:
            self.check_predictor("value selection")
            with torch.no_grad():
                value = self.predictor(feats.detach())[0]
        change = self.latent_change(codes.detach()) if "temporal" in selections else None
        inputs = Inputs(codes.detach(), smap, value.detach() if value is not None else None, None, change)
        masks = torch.cat(
            [ranking_for(s).masks(inputs.window(i), [r]) for i, (s, r) in enumerate(zip(selections, rates))]
        )
        y = self.decode_codes(codes, masks, ["hold" if s == "drift" else "mask" for s in selections])
        loss = None
        if predicting:
            on_curve = torch.tensor([s == "value" for s in selections], device=x.device)
            loss = predictor_loss(
                value,
                curve,
                value_targets(x, full, y.detach(), self.geometry),
                masks,
                curve_targets(x, y.detach()),
                curve_index(rates, curve.shape[1], x.device),
                on_curve,
            )
        return y, list(rates), smap if full is not None else None, loss

    def _predictor_forward(
        self, x: torch.Tensor, rates: Sequence[Sequence[float]]
    ) -> tuple[torch.Tensor, list[float], None, torch.Tensor]:
        """`infotok train predictor`: the value predictor learns from this model's own decodes while
        the model stays as it is (no gradient through it). Window i is decoded once per rate in
        `rates[i]` with value selection (the predictor's current ranking); each decode gives the
        window's PSNR at that rate and what dropping each token cost. Returns (the last decode, the
        rates, None, the predictor's loss averaged over the decodes)."""
        self.check_predictor("predictor training")
        with torch.no_grad():
            feats = self.features(x)
            codes, _ = self.base.quantize(feats)
            full = self.decode_codes(codes)
        value, curve = self.predictor(feats)
        losses, y = [], full
        for j in range(len(rates[0])):
            chosen = [float(r[j]) for r in rates]
            with torch.no_grad():
                masks = keep_masks(value.detach(), chosen, "value")
                y = self.decode_codes(codes, masks)
            losses.append(
                predictor_loss(
                    value,
                    curve,
                    value_targets(x, full, y, self.geometry),
                    masks,
                    curve_targets(x, y),
                    curve_index(chosen, curve.shape[1], x.device),
                    torch.ones(len(chosen), dtype=torch.bool, device=x.device),
                )
            )
        return y, [float(np.mean(r)) for r in rates], None, torch.stack(losses).mean()

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

    # ---------------------------------------------------------------------------- checkpoints
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        extra: dict | None = None,
        *,
        config: dict | None = None,
        model_card_kwargs: dict | None = None,
        dtype: torch.dtype | None = None,
    ) -> Path:
        """Write model.safetensors + config.json (+ `extra` config fields) atomically; `dtype`
        (e.g. torch.float16) stores the floating weights in it.

        `config` and `model_card_kwargs` are what huggingface_hub's `push_to_hub` passes: `config`
        adds fields as `extra` does; no model card is written, so a pushed repo is exactly this folder."""
        return checkpoint.save(self, self.config_dict() | (config or {}) | (extra or {}), save_directory, dtype)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        layout: str | None = None,
    ) -> "InfoTok":
        """Load a checkpoint folder, a Hugging Face repo id ("owner/name", from the local Hugging Face
        cache only: nothing is downloaded) or, with None, the default (`checkpoint.locate`), onto
        `device`. Config and weights are checked key by key. A 1D-layout checkpoint (its config says
        `"layout": "1d"`; `layout="1d"` with no path: the installed infotok-1d) gives a `layout1d.InfoTok1D`."""
        if layout not in (None, "grid", "1d"):
            raise ValueError(f"layout must be 'grid' or '1d', got {layout!r}")
        if layout == "1d" and pretrained_model_name_or_path is None:
            from .layout1d import InfoTok1D

            return InfoTok1D.from_pretrained(None, device)
        directory = checkpoint.locate(pretrained_model_name_or_path or None, revision, cache_dir)
        config = checkpoint.read_config(directory)
        if config.get("layout", "grid") != (layout or config.get("layout", "grid")):
            raise checkpoint.CheckpointError(
                f"{directory}: a {config.get('layout', 'grid')!r}-layout checkpoint, not {layout!r}"
            )
        if config.get("layout") == "1d":
            from .layout1d import InfoTok1D

            return InfoTok1D.from_pretrained(directory, device)
        try:
            base = config_from_dict(config["base"], BASE_KINDS)
            compressor = config_from_dict(config["compressor"], COMPRESSOR_KINDS) if config.get("compressor") else None
            checkpoint.check_sizes(base.to_dict(), "base")
            if compressor is not None:
                checkpoint.check_sizes(compressor.to_dict(), "compressor")
                if compressor.width % compressor.heads or (compressor.width // compressor.heads) % 4:
                    raise ValueError("compressor width / heads must be a multiple of 4")
            predictor = PredictorConfig.from_dict(config["predictor"]) if config.get("predictor") else None
            model = cls(
                base,
                compressor,
                score_mean=float(config.get("score_mean", 0.0)),
                name=str(config.get("name", directory.name)),
                dropped=config.get("dropped") or "embedding",
                predictor=predictor,
                fill=config.get("fill") or "mask",
                held=bool(config.get("held_embedding", False)),
            )
            model.calibration = Calibration.from_config(config, predictor.curve_points if predictor else None)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{directory / checkpoint.CONFIG_FILE}: invalid model configuration ({exc})"
            ) from None
        model.weights_hash = checkpoint.load_weights(model, directory)
        model.model_hash = model.decoding_hash()
        return model.to(resolve_device(device)).eval()
