"""The shipped models on a CUDA GPU give the tokens they give on a CPU (scripts/train_gpu.py runs these there).

Floats differ between devices (other kernels, TF32 convolutions), so a code can land on the other side of an
FSQ rounding boundary now and then: the contract is agreement in at least 99% of token positions, and a file
written on the GPU decodes on the CPU.
"""

import os

import numpy as np
import pytest
import torch

from infotok import InfoTok
from infotok.tokens import Tokens
from infotok.video import read_video, resize_and_crop
from tests.conftest import shared_videos

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")


def position_grid(window) -> np.ndarray:
    """Every position's code index, -1 where the window dropped it."""
    grid = np.full(window.mask.shape, -1, dtype=np.int64)
    grid[window.mask] = window.indices
    return grid


def agreement(a: Tokens, b: Tokens) -> float:
    same = [(position_grid(x) == position_grid(y)) for x, y in zip(a.windows, b.windows, strict=True)]
    return float(np.concatenate([s.reshape(-1) for s in same]).mean())


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """The first evaluation clip's first 33 frames at 256x256; where no video can be read (the lent GPU machine has
    neither the clips nor PyAV), the same frames decoded beforehand (`INFOTOK_CUDA_CLIP`, scripts/gpu_bundle.py)."""
    if os.environ.get("INFOTOK_CUDA_CLIP"):
        return np.load(os.environ["INFOTOK_CUDA_CLIP"])["clip"]
    videos = shared_videos()
    assert videos, "../shared/data/videos is missing"
    return resize_and_crop(read_video(videos[0], max_frames=33)[0], 256)


@pytest.mark.parametrize("options", [{"rate": 1.0, "strategy": "static"}, {"rate": 0.5}], ids=["full", "default-0.5"])
def test_the_default_model_on_cuda_agrees_with_the_cpu_in_99_percent_of_positions(clip, options, tmp_path):
    on_cpu = InfoTok.from_pretrained().tokenize(clip, **options)
    on_gpu = InfoTok.from_pretrained(device="cuda").tokenize(clip, **options)
    assert agreement(on_cpu, on_gpu) >= 0.99
    on_gpu.save(tmp_path / "gpu.itok")
    decoded = InfoTok.from_pretrained().detokenize(Tokens.load(tmp_path / "gpu.itok"))
    assert decoded.shape == clip.shape


def test_the_1d_model_on_cuda_agrees_with_the_cpu_in_99_percent_of_positions(clip):
    on_cpu = InfoTok.from_pretrained(layout="1d").tokenize(clip, tokens=256)
    on_gpu = InfoTok.from_pretrained(layout="1d", device="cuda").tokenize(clip, tokens=256)
    assert agreement(on_cpu, on_gpu) >= 0.99
