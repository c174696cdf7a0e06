"""Tokens and decoded frames stay bit-identical on the CPU to the reference files (see make_reference.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from infotok import InfoTok
from infotok.tokens import Tokens
from infotok.video import synthetic_video
from tests.data.reference.make_reference import tokenize_settings

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
SPEC = json.loads((REFERENCE / "reference.json").read_text())


@pytest.fixture(scope="module")
def shipped():
    return InfoTok.from_pretrained()


@pytest.fixture
def one_thread():
    """The reference was written with one thread: float reductions then run in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(SPEC["cases"]))
def test_tokens_and_frames_match_the_pre_change_reference(name, shipped, one_thread, tmp_path):
    case = SPEC["cases"][name]
    video = synthetic_video(**SPEC["video"])
    tokens = shipped.tokenize(video, **tokenize_settings(case["strategy"], case["selection"], case["rate"], case["fill"]),
                              window=SPEC["window"], overlap=SPEC["overlap"], seed=SPEC["seed"])
    written = tokens.save(tmp_path / "now.itok")
    assert written.read_bytes() == (REFERENCE / f"{name}.itok").read_bytes()
    frames = shipped.detokenize(Tokens.load(REFERENCE / f"{name}.itok"))
    assert hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest() == case["frames_sha256"]
