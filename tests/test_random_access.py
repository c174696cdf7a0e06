"""A segment from the middle of a long video decodes from the windows that hold it alone, and gives the
frames a whole decode gives there."""

import numpy as np
import pytest

from infotok.cli import main
from infotok.video import read_video, synthetic_video, write_video
from tests.conftest import tiny_model

VIDEO = synthetic_video(45, 32, 32, seed=4)  # five windows of 9 frames overlapping by 1


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_a_segment_decodes_as_the_whole_video_does_there_from_one_or_two_windows(model, monkeypatch):
    tokens = model.tokenize(VIDEO, rate=0.5, strategy="static", window=9, overlap=1)
    whole = model.detokenize(tokens)
    decode, calls = model.decode, []
    monkeypatch.setattr(model, "decode", lambda batch: calls.append(1) or decode(batch))
    for start, stop in [(20, 24), (16, 17), (0, 3), (40, 45), (12, 30)]:
        calls.clear()
        assert np.array_equal(model.detokenize(tokens, start, stop), whole[start:stop]), (start, stop)
        spans = [(w.start, w.end) for w in tokens.windows]
        assert len(calls) == sum(1 for a, b in spans if b > start and a < stop)
    calls.clear()
    model.detokenize(tokens, 20, 24)  # inside one window: one decode, not five
    assert len(calls) == 1


def test_infotok_decode_start_and_max_frames_write_that_segment(tmp_path, capsys, model):
    checkpoint = model.save_pretrained(tmp_path / "tiny")
    write_video(tmp_path / "v.mp4", VIDEO, fps=9, lossless=True)
    argv = ["--checkpoint", str(checkpoint), "--overwrite"]
    assert main(["encode", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "v.itok"), "--window", "9", *argv]) == 0
    assert main(["decode", str(tmp_path / "v.itok"), "-o", str(tmp_path / "all.mp4"), "--lossless", *argv]) == 0
    assert main(
        ["decode", str(tmp_path / "v.itok"), "-o", str(tmp_path / "seg.mp4"), "--lossless", "--start", "17",
         "--max-frames", "10", *argv]
    ) == 0  # fmt: skip
    assert "10 frames (frames 17-26 of 45)" in capsys.readouterr().out
    assert np.array_equal(read_video(tmp_path / "seg.mp4")[0], read_video(tmp_path / "all.mp4")[0][17:27])
    assert main(["decode", str(tmp_path / "v.itok"), "-o", str(tmp_path / "x.mp4"), "--start", "45", *argv]) != 0
    assert "outside the video's 45 frames" in capsys.readouterr().err
