"""End-to-end checks of the shipped checkpoints (trained weights, not random ones)."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.full_rate import base_alone
from safetensors.torch import load_file

from infotok.checkpoint import SHIPPED_CHECKPOINT
from infotok.metrics import psnr
from infotok.model import InfoTok
from infotok.video import from_model, read_video, resize_and_crop, synthetic_video, to_model
from tests.conftest import SHARED_VIDEOS, shared_videos

CHECKPOINTS = (
    Path(__file__).resolve().parents[1] / "checkpoints"
)  # the repository's others (the default is package data)
FOLDERS = {
    "infotok-flex": SHIPPED_CHECKPOINT,
    "base": CHECKPOINTS / "base",
    "elastic-style": CHECKPOINTS / "elastic-style",
}


@pytest.mark.parametrize("name", list(FOLDERS))
def test_each_shipped_checkpoint_has_weights_config_log_and_recipe(name):
    folder = FOLDERS[name]
    for file in ("model.safetensors", "config.json", "log.csv", "TRAINING.md"):
        assert (folder / file).is_file(), f"{folder / file} is missing"
    config = json.loads((folder / "config.json").read_text())
    with open(folder / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert config["trained_steps"] == int(rows[-1]["step"]) > 0
    assert "infotok train" in (folder / "TRAINING.md").read_text()
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl")) and not list(folder.glob("*.bin"))


def test_the_repository_fits_the_64_mib_a_gpu_machine_takes_and_peer_weights_are_half_precision():
    root = CHECKPOINTS.parent
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    size = sum((root / name).stat().st_size for name in files.decode().split("\0") if name)
    assert size < 64 * 2**20, f"tracked files hold {size / 2**20:.1f} MiB"
    for name in ("base", "elastic-style"):
        tensors = load_file(FOLDERS[name] / "model.safetensors")
        parameters = {k for k, _ in InfoTok.from_pretrained(FOLDERS[name]).named_parameters(remove_duplicate=False)}
        assert {tensors[k].dtype for k in parameters} == {torch.float16}  # buffers (the score mean) stay exact


def test_default_model_is_the_calibrated_infotok_flex():
    model = InfoTok.from_pretrained()
    config = json.loads((SHIPPED_CHECKPOINT / "config.json").read_text())
    assert model.adaptive and model.name == "infotok-flex"
    assert float(model.score_mean) > 0 and "calibration" in config


def test_the_fixed_rate_base_is_calibrated_to_tokenize_below_rate_1_under_hold():
    base = InfoTok.from_pretrained(CHECKPOINTS / "base")
    assert not base.adaptive and base.choices() == ("rd", "drift", "hold") and float(base.score_mean) > 0
    video = synthetic_video(33, 64, 96, seed=0)
    full = psnr(video, base.reconstruct(video, rate=1.0, window=33, overlap=0))
    tokens = base.tokenize(video, rate=0.5, strategy="static", window=33, overlap=0)
    assert tokens.ledger().realized_rate == pytest.approx(0.5, abs=0.01)
    assert psnr(video, base.detokenize(tokens)) > full - 1.0


@pytest.fixture(scope="module")
def flex():
    return InfoTok.from_pretrained()


def test_built_in_sample_quality_rises_with_rate_and_rate_one_costs_nothing_against_its_own_base(flex):
    """Flex's stacks at rate 1 lose nothing against the base they wrap (its encoder, FSQ and decoder alone); the
    fixed-rate `checkpoints/base`, trained longer, stays ahead by the gap issue #32 tracks (1.45 dB on this sample,
    1.49 on the evaluation clips since its third stage)."""
    video = synthetic_video(17, 64, 96, seed=0)
    own_base = psnr(video, from_model(base_alone(flex, to_model(video))[0]))
    base = InfoTok.from_pretrained(CHECKPOINTS / "base")
    fixed = psnr(video, base.reconstruct(video, rate=1.0, strategy="static", window=17, overlap=0))
    scores = {
        rate: psnr(video, flex.reconstruct(video, rate=rate, strategy="static", window=17, overlap=0))
        for rate in (1.0, 0.5, 0.25)
    }
    assert scores[1.0] > 15.0 and scores[1.0] > own_base - 0.1 and scores[1.0] > fixed - 2.0
    assert scores[1.0] > scores[0.5] > scores[0.25]


def test_real_clip_round_trip_through_a_token_file(flex, tmp_path):
    videos = shared_videos()
    assert videos, "../shared/data/videos is missing"
    clip = resize_and_crop(read_video(videos[-1], max_frames=9)[0], 128)
    tokens = flex.tokenize(clip, rate=0.5, strategy="global_elbo")
    tokens.save(tmp_path / "clip.itok")
    from infotok.tokens import Tokens

    out = flex.detokenize(Tokens.load(tmp_path / "clip.itok"))
    assert out.shape == clip.shape
    assert psnr(clip, out) > 18.0
    window = tokens.windows[0]
    assert window.kept == max(1, round(window.rate * window.num_tokens))


def test_router_spends_fewer_tokens_on_the_same_shot_held_still(flex):
    """The flower clip blooms within 33 frames; its first frame held still must cost clearly fewer tokens."""
    path = SHARED_VIDEOS / "elastictok_flower.mp4"
    assert path.is_file(), f"{path} is missing"
    moving = resize_and_crop(read_video(path, max_frames=33)[0], 128)
    held = np.repeat(moving[:1], len(moving), axis=0)
    kept = {
        name: flex.tokenize(clip, rate=0.5, strategy="global_elbo", window=33, overlap=0).ledger().kept
        for name, clip in (("moving", moving), ("held", held))
    }
    assert kept["held"] < 0.8 * kept["moving"], kept
