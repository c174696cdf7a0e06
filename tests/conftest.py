"""Shared fixtures: tiny random-weight models (fast, for shapes, causality and formats) and sample videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infotok.base import BaseConfig
from infotok.checkpoint import default_checkpoint
from infotok.compressor import CompressorConfig
from infotok.model import InfoTok
from infotok.predictor import PredictorConfig
from infotok.router import calibrate_slopes, calibrate_thresholds
from infotok.video import synthetic_video, write_video

# a tiny checkpoint in the InfoTok release's own format (tests/data/release/README.md says how it was made)
RELEASE_FILE = Path(__file__).parent / "data" / "release" / "release_tiny.pt"

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
TINY_BASE = BaseConfig(
    enc_hi=8, enc_lo=16, enc_hi_blocks=1, enc_lo_blocks=1, dec_hi=8, dec_lo=16, dec_hi_blocks=1, dec_lo_blocks=1
)
TINY_COMPRESSOR = CompressorConfig(width=16, depth=1, heads=2)


def tiny_model(adaptive: bool = True, seed: int = 0, score_mean: float = 0.2, predictor: bool = False) -> InfoTok:
    """With `predictor`, a value predictor and rd slopes calibrated on made-up curves come along, and
    hold thresholds calibrated on its own codes of a few synthetic clips."""
    torch.manual_seed(seed)
    model = InfoTok(
        TINY_BASE,
        TINY_COMPRESSOR if adaptive else None,
        score_mean=score_mean,
        name="tiny-infotok" if adaptive else "tiny-base",
        predictor=PredictorConfig(hidden=8) if predictor else None,
    )
    if predictor:
        curves = 15 + np.cumsum(np.linspace(2, 0.1, 16)[None] * np.linspace(0.5, 2, 12)[:, None], axis=1)
        model.calibration.rd_slopes = calibrate_slopes(curves)
    if adaptive:  # random, non-identity transformers so causality tests are meaningful
        for stack in (model.compressor, model.decompressor):
            torch.nn.init.normal_(stack.proj_out.weight, std=0.1)
    if predictor:
        clips = torch.from_numpy(np.stack([synthetic_video(9, 32, 32, seed=s) for s in range(4)]))
        model.calibration.rd_thresholds = calibrate_thresholds(list(model.eval().latent_codes(clips)))
    return model.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A saved tiny adaptive checkpoint folder (random weights)."""
    return tiny_model().save_pretrained(tmp_path / "tiny-ckpt")


@pytest.fixture
def sample_video(tmp_path) -> Path:
    """The built-in sample (21 frames, 64x48) as an MP4 file."""
    return write_video(tmp_path / "sample.mp4", synthetic_video(21, 48, 64, seed=1), fps=12)


@pytest.fixture
def shipped_checkpoint() -> Path:
    if not (default_checkpoint() / "model.safetensors").exists():
        pytest.fail(f"the shipped checkpoint is missing from {default_checkpoint()}")
    return default_checkpoint()


def shared_videos() -> list[Path]:
    return sorted(SHARED_VIDEOS.glob("*.mp4"))
