"""`InfoTok`: base tokenizer + compressor/decompressor + router + selection, and its checkpoints.

A checkpoint is a folder with `model.safetensors` (weights, EMA) and `config.json` (architecture,
calibrated score mean, provenance). Without a compressor the model is the fixed-rate base
tokenizer (only rate 1 is possible).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .base import BaseConfig, CausalConvTokenizer
from .compressor import BlockCausalTransformer, CompressorConfig
from .router import check_rate, choose_rate, score_map
from .selection import keep_mask
from .tokens import TokenHeader, Tokens, TokenWindow
from .video import (WindowBlender, crop_to, from_model, iter_frames, iter_windows, pad_to_geometry, probe,
                    resized_stream, to_model)

CHECKPOINT_FORMAT = "infotok-checkpoint"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "infotok-flex"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing files or does not match its config."""


@dataclass
class WindowCode:
    """One window's tokens: the keep-mask [t, h, w], the kept indices (raster order), the rate."""

    mask: torch.Tensor
    indices: torch.Tensor
    rate: float
    score: float
    nfe: int  # network passes spent on this window (encoder + router decode)


class InfoTok(nn.Module):
    def __init__(self, base: BaseConfig | None = None, compressor: CompressorConfig | None = None,
                 score_mean: float = 0.0, name: str = "infotok"):
        super().__init__()
        self.name = name
        self.base = CausalConvTokenizer(base or BaseConfig())
        self.compressor_config = compressor
        if compressor is not None:
            self.compressor = BlockCausalTransformer(self.base.feature_dim, compressor)
            self.decompressor = BlockCausalTransformer(self.base.decoder_dim, compressor)
            self.dropped = nn.Parameter(torch.randn(self.base.decoder_dim) * 0.02)
        self.register_buffer("score_mean", torch.tensor(float(score_mean)))
        self.model_hash = ""  # set by from_pretrained: identifies the weights in token files

    # ---------------------------------------------------------------- configuration / geometry
    @property
    def adaptive(self) -> bool:
        return self.compressor_config is not None

    @property
    def temporal_factor(self) -> int:
        return self.base.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.base.spatial_factor

    def config_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "version": 1, "name": self.name,
            "base": self.base.config.to_dict(),
            "compressor": self.compressor_config.to_dict() if self.adaptive else None,
            "score_mean": float(self.score_mean),
        }

    @property
    def device(self) -> torch.device:
        return self.score_mean.device

    # ------------------------------------------------------------------------------ networks
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, 3, T, H, W] -> (codes [B, 6, t, h, w], indices [B, t, h, w])."""
        h = self.base.encode_features(x)
        if self.adaptive:
            h = self.compressor(h)
        return self.base.quantize(h)

    def decode_codes(self, codes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, 6, t, h, w] (+ keep-mask [B, t, h, w]) -> video [B, 3, T, H, W]."""
        f = self.base.features_from_codes(codes)
        if self.adaptive:
            if mask is not None:
                keep = mask[:, None].to(f.dtype)
                f = f * keep + self.dropped.to(f.dtype)[None, :, None, None, None] * (1 - keep)
            f = self.decompressor(f)
        elif mask is not None and not bool(mask.all()):
            raise ValueError("this checkpoint is a fixed-rate base tokenizer: it cannot decode dropped tokens")
        return self.base.decode_features(f)

    def scores(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The router pass: full-rate decode, per-token L1 error [B, t, h, w] (no gradient)."""
        with torch.no_grad():
            return score_map(x, self.decode_codes(codes), self.temporal_factor, self.spatial_factor)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        codes, _ = self.encode(x)
        return self.decode_codes(codes, masks)

    # --------------------------------------------------------------------- one window of tokens
    @torch.no_grad()
    def code_window(self, x: torch.Tensor, rate: float = 1.0, strategy: str = "static", selection: str = "error",
                    generator: np.random.Generator | None = None, fixed_rate: float | None = None) -> WindowCode:
        """Tokenize one padded window x [1, 3, T, H, W].

        `fixed_rate` overrides the strategy (used when rates were balanced across clips elsewhere).
        """
        rate = check_rate(rate)
        if not self.adaptive and (rate < 1 or (fixed_rate is not None and fixed_rate < 1)):
            raise ValueError(f"checkpoint {self.name!r} is a fixed-rate base tokenizer: only rate 1 is possible")
        codes, indices = self.encode(x)
        t, h, w = indices.shape[1:]
        nfe = 1
        needs_scores = selection == "error" and (strategy == "global_elbo" or (fixed_rate or rate) < 1)
        if needs_scores or (strategy == "global_elbo" and fixed_rate is None):
            smap = self.scores(x, codes)[0]
            nfe += 1
            score = float(smap.mean())
        else:
            smap, score = torch.zeros(t, h, w), float("nan")
        if fixed_rate is not None:
            r = check_rate(fixed_rate)
        else:
            r = choose_rate(strategy, rate, score, float(self.score_mean), generator)
        torch_gen = torch.Generator().manual_seed(int(generator.integers(2**62))) if generator is not None else None
        mask = keep_mask(smap, r, selection, torch_gen)
        return WindowCode(mask=mask.cpu(), indices=indices[0][mask].cpu(), rate=r, score=score, nfe=nfe)

    @torch.no_grad()
    def decode_window(self, mask: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """(keep-mask [t, h, w], kept indices [K]) -> video [1, 3, T, H, W] in [-1, 1]."""
        if int(mask.sum()) != kept.numel():
            raise ValueError(f"keep-mask has {int(mask.sum())} kept positions but {kept.numel()} indices were given")
        full = torch.zeros(mask.shape, dtype=torch.long)
        full[mask] = kept.long()
        codes = self.base.codes_from_indices(full.to(self.device)[None])
        return self.decode_codes(codes, mask.to(self.device)[None])

    # ----------------------------------------------------------------------- whole videos
    @property
    def config_hash(self) -> str:
        arch = {k: v for k, v in self.config_dict().items() if k in ("base", "compressor")}
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    def _frames(self, video, size: int | None) -> tuple[Iterator[np.ndarray], int, int, float]:
        """Any video source -> (frame iterator, source width, source height, fps)."""
        if isinstance(video, (str, os.PathLike)):
            info = probe(video)
            frames, sw, sh, fps = iter_frames(video), info.width, info.height, info.fps
        else:
            arr = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"a video array must be uint8 [T, H, W, 3], got {arr.dtype} {list(arr.shape)}")
            frames, sw, sh, fps = iter(arr), arr.shape[2], arr.shape[1], 24.0
        return resized_stream(frames, size), sw, sh, fps

    def iter_tokenize(self, video, rate: float = 0.5, strategy: str = "global_elbo", selection: str = "error",
                      window: int = 33, overlap: int = 5, size: int | None = None, seed: int = 0,
                      rates: list[float] | None = None) -> Iterator[tuple[TokenHeader, TokenWindow, int]]:
        """Stream (header, window tokens, nfe) one window at a time; the header is final after the last.

        video: a path, or uint8 frames [T, H, W, 3] (numpy or torch). `rates` fixes each window's rate
        (used by evaluation to balance rates across clips).
        """
        rate = check_rate(rate)
        if window < 1 + self.temporal_factor:
            raise ValueError(f"window must be at least {1 + self.temporal_factor} frames (one latent step), got {window}")
        frames, sw, sh, fps = self._frames(video, size)
        rng = np.random.default_rng(seed)
        header = None
        for i, (start, end, chunk) in enumerate(iter_windows(frames, window, overlap)):
            if header is None:
                levels = list(self.base.levels)
                header = TokenHeader(
                    model=self.name, model_hash=self.model_hash, config_hash=self.config_hash, levels=levels,
                    temporal_factor=self.temporal_factor, spatial_factor=self.spatial_factor,
                    width=chunk.shape[2], height=chunk.shape[1], source_width=sw, source_height=sh, fps=fps,
                    num_frames=0, window=window, overlap=overlap, strategy=strategy, selection=selection,
                    avg_rate=rate, score_mean=float(self.score_mean), resize=size)
            x = pad_to_geometry(to_model(chunk).to(self.device), self.temporal_factor, self.spatial_factor)
            code = self.code_window(x, rate, strategy, selection, rng,
                                    fixed_rate=rates[i] if rates is not None else None)
            header.num_frames = end
            yield header, TokenWindow(start, end, code.rate, code.score, code.mask.numpy(),
                                      code.indices.numpy().astype(np.uint16)), code.nfe
        if header is None:
            raise ValueError("the video has no frames")

    def tokenize(self, video, rate: float = 0.5, strategy: str = "global_elbo", selection: str = "error",
                 window: int = 33, overlap: int = 5, size: int | None = None, seed: int = 0) -> Tokens:
        """Tokenize a whole video (path or uint8 [T, H, W, 3]) into `Tokens`."""
        windows, header = [], None
        for header, w, _ in self.iter_tokenize(video, rate, strategy, selection, window, overlap, size, seed):
            windows.append(w)
        return Tokens(header, windows)

    def check_tokens(self, header: TokenHeader) -> None:
        if header.config_hash != self.config_hash or (self.model_hash and header.model_hash != self.model_hash):
            raise ValueError(f"these tokens were made by model {header.model!r} ({header.model_hash or header.config_hash}); "
                             f"this is {self.name!r} ({self.model_hash or self.config_hash}): decode with the same checkpoint")

    def iter_detokenize(self, header: TokenHeader, windows) -> Iterator[np.ndarray]:
        """Decode windows (any iterable, e.g. a TokenReader) into blended uint8 frames, streaming."""
        self.check_tokens(header)
        blender = WindowBlender()
        it = iter(windows)
        current = next(it, None)
        while current is not None:
            following = next(it, None)
            x = self.decode_window(torch.from_numpy(current.mask), torch.from_numpy(current.indices.astype(np.int64)))
            x = crop_to(x, current.end - current.start, header.height, header.width)
            yield from blender.add(current.start, from_model(x), following.start if following else None)
            current = following

    def detokenize(self, tokens: Tokens) -> np.ndarray:
        """Tokens -> uint8 frames [T, H, W, 3]."""
        return np.stack(list(self.iter_detokenize(tokens.header, tokens.windows)))

    def reconstruct(self, video, **kwargs) -> np.ndarray:
        """detokenize(tokenize(video)): what a user of the tokens would see."""
        return self.detokenize(self.tokenize(video, **kwargs))

    # --------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write model.safetensors + config.json atomically (temporary names, then rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = directory / f".{WEIGHTS_FILE}.tmp"
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
        os.replace(tmp, directory / WEIGHTS_FILE)
        config = self.config_dict() | (extra or {})
        tmp = directory / f".{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, directory / CONFIG_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "InfoTok":
        """Load a checkpoint folder (default: the shipped InfoTok-Flex checkpoint)."""
        directory = Path(directory or os.environ.get("INFOTOK_CHECKPOINT") or DEFAULT_CHECKPOINT)
        config = read_config(directory)
        try:
            base = BaseConfig.from_dict(config["base"])
            compressor = CompressorConfig.from_dict(config["compressor"]) if config.get("compressor") else None
            _check_sizes(base.to_dict(), "base")
            if compressor is not None:
                _check_sizes(compressor.to_dict(), "compressor")
                if compressor.width % compressor.heads or (compressor.width // compressor.heads) % 4:
                    raise ValueError("compressor width / heads must be a multiple of 4")
            model = cls(base, compressor, score_mean=float(config.get("score_mean", 0.0)),
                        name=str(config.get("name", directory.name)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: invalid model configuration ({exc})") from None
        weights = directory / WEIGHTS_FILE
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong:
            detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                               for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                  ("wrong shape", wrong)) if keys)
            raise CheckpointError(f"{directory}: weights do not match {CONFIG_FILE} ({detail}); "
                                  "was the config edited or copied from another checkpoint?")
        model.load_state_dict(state)
        model.model_hash = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        return model.to(device).eval()


def _check_sizes(fields: dict, section: str) -> None:
    for key, value in fields.items():
        if key == "levels":
            if not all(isinstance(v, int) and 2 < v <= 256 for v in value):
                raise ValueError(f"{section}.levels must be integers in 3..256")
        elif key == "mlp_ratio":
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{section}.{key} must be positive")
        elif not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{section}.{key} must be a positive integer, got {value!r}")


def read_config(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint folder not found")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name}; a checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT or "base" not in config:
        raise CheckpointError(f"{directory / CONFIG_FILE}: not an infotok checkpoint config")
    return config
