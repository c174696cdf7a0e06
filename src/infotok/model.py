"""`InfoTok`, the network: base tokenizer + compressor/decompressor + router + value predictor.

Its stages (`encode_codes`, `decode_codes`, `router_scores`, `predict`) are what the batched core
(`core.TokenizerCore`: `encode`, `reselect`, `decode`) and the training passes (`train_forward`) are made
of. Whole videos are handled by `frontend` (the keyword API) and `pipeline`, checkpoint folders by
`checkpoint`. Without a compressor the model is the fixed-rate base tokenizer, which tokenizes below rate 1
only under the hold fill.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import checkpoint
from .base import BaseConfig
from .calibration import Calibration
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError
from .compressor import CompressorConfig
from .core import TokenizerCore, as_model_input
from .cosmos import CosmosConfig, ReleaseCompressorConfig
from .fill import Carry, apply_fills, check_fill, fill_key_frame, steady_codes
from .frontend import VideoFrontEnd
from .geometry import Geometry
from .networks import BASE_KINDS, COMPRESSOR_KINDS, build_base, build_stacks, config_from_dict
from .predictor import PredictorConfig, ValuePredictor
from .router import score_map
from .train_forward import predictor_pass, training_pass


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
    VideoFrontEnd,
    TokenizerCore,
    nn.Module,
    HubMixin,
    library_name="infotok",
    license="apache-2.0",
    tags=["video-tokenizer"],
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
        """Identifies the architecture in token files (our stacks: their `token_dict`)."""
        arch = {k: v for k, v in self.config_dict().items() if k in ("base", "compressor")}
        if isinstance(self.compressor_config, CompressorConfig):
            arch["compressor"] = self.compressor_config.token_dict()
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    # ----------------------------------------------------------------------------------- stages
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] on the grid -> what is quantized [B, C, t, h, w] (after the compressor)."""
        h = self.base.encode_features(x)
        return self.compressor(h) if self.adaptive else h

    def encode_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, 3, T, H, W] on the grid -> (codes [B, 6, t, h, w], indices [B, t, h, w]); differentiable."""
        return self.base.quantize(self.features(x))

    def quantize_values(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features -> (codes [B, C, t, h, w], indices [B, t, h, w], the values FSQ rounded to the codes)."""
        z = self.base.code_space(feats)
        return *self.base.round_codes(z), self.base.level_values(z)

    def carried_codes(self, carry: Carry) -> torch.Tensor:
        """The codes [B, C, h, w] continuing windows start from (`fill.Carry`), as `drift` and `steady_codes`
        read them."""
        return self.base.codes_from_indices(carry.indices[:, None])[:, :, 0].float()

    def ranked_codes(
        self,
        codes: torch.Tensor,
        values: torch.Tensor,
        fill: str,
        carried: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The codes `fill`'s selection ranks and its rates read: under `hold` a code on a rounding boundary
        counts as the one before it (`fill.steady_codes`; continuing windows: the `carried` codes where
        `present`), the codes themselves otherwise."""
        if check_fill(fill) != "hold":
            return codes
        return steady_codes(codes, values, self.base.levels, carried=carried, present=present)

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
            fills = [fill] * codes.shape[0] if isinstance(fill, str) else list(fill)
            for window_mask, window_fill in zip(mask, fills):
                if not self.drops_tokens(window_fill) and not bool(window_mask.all()):
                    raise ValueError(
                        "this checkpoint is a fixed-rate base tokenizer: it decodes dropped tokens only "
                        f"under the hold fill, not {window_fill}"
                    )
            if not self.adaptive:  # only `hold` drops tokens on a base: a sparse key frame's interpolation
                codes, mask = fill_key_frame(codes, mask)
            codes, mask, held = apply_fills(codes, mask, fills)
        if mask is not None and (not self.adaptive or self.dropped_mode == "zero_code"):
            # a position never kept (held from nothing, no lattice code beside it) decodes as the zero code
            codes = codes * mask[:, None].to(codes.dtype)
        f = self.base.features_from_codes(codes)
        if self.adaptive:
            if mask is not None and self.dropped_mode == "embedding":
                keep = mask[:, None].to(f.dtype)
                f = f * keep + self.dropped.to(f.dtype)[None, :, None, None, None] * (1 - keep)
            if held is not None and self.held is not None:
                f = f + self.held.to(f.dtype)[None, :, None, None, None] * held[:, None].to(f.dtype)
            f = self.decompressor(f)
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

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Each window's predicted PSNR at rates k/16 [B, 16], from the encoder alone (no decoder pass)."""
        self.check_predictor("a predicted curve")
        return self.predictor(self.features(self.geometry.pad(as_model_input(x).to(self.device))))[1]

    @torch.no_grad()
    def encoder_codes(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each window's (codes [B, C, t, h, w], indices [B, t, h, w], the values FSQ rounded to the codes),
        from the encoder alone."""
        return self.quantize_values(self.features(self.geometry.pad(as_model_input(x).to(self.device))))

    def latent_codes(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Each window's latent codes [B, C, t, h, w] under `hold` (what its rates and `drift` rank), from the
        encoder alone."""
        codes, _, values = self.encoder_codes(x)
        return self.ranked_codes(codes, values, "hold")

    def forward(
        self,
        x: torch.Tensor,
        rates: Sequence[float] | Sequence[Sequence[float]] | None = None,
        selection: str | Sequence[str] = "error",
        score_mean: float | None = None,
        predictor_only: bool = False,
        train_predictor: bool = False,
    ) -> tuple[torch.Tensor, list[float], torch.Tensor | None, torch.Tensor | None]:
        """The training pass (`train_forward.training_pass`); a module's forward, so that accelerate's
        distributed wrapper synchronises its gradients."""
        if predictor_only:
            return predictor_pass(self, x, rates)
        return training_pass(self, x, rates, selection, score_mean, train_predictor)

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
