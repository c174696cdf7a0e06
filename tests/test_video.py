"""Video I/O, windows and blending, the built-in sample."""

import numpy as np
import pytest

from infotok.geometry import window_spans
from infotok.video import (
    VideoError,
    WindowBlender,
    blend_weights,
    from_model,
    iter_windows,
    list_videos,
    probe,
    read_video,
    resize_and_crop,
    synthetic_video,
    to_model,
    write_video,
)


@pytest.mark.parametrize("frames,height,width", [(18, 139, 250), (1, 64, 64), (5, 23, 37)])
def test_write_read_round_trip_keeps_size_count_and_fps(tmp_path, frames, height, width):
    video = synthetic_video(frames, height, width, seed=3)
    path = write_video(tmp_path / "v.mp4", video, fps=15)
    back, info = read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert (info.width, info.height, info.fps) == (width, height, 15.0)
    # crf 12 is near-lossless; 4:2:0 chroma costs more on a tiny frame of sharp coloured stripes
    assert np.abs(back.astype(int) - video).mean() < (3 if min(height, width) >= 64 else 5)


def test_streaming_read_from_an_offset(tmp_path):
    video = synthetic_video(30, 32, 32, seed=0)
    path = write_video(tmp_path / "v.mp4", video, fps=10)
    full, _ = read_video(path)
    part, _ = read_video(path, start=11, max_frames=5)
    assert np.array_equal(part, full[11:16])


def test_model_tensor_conversion_is_exact_for_uint8():
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    assert np.array_equal(from_model(to_model(frames)), frames)


def test_resize_and_crop_gives_square_protocol_size():
    frames = synthetic_video(2, 90, 160)
    out = resize_and_crop(frames, 64)
    assert out.shape == (2, 64, 64, 3)


@pytest.mark.parametrize("total", [1, 33, 34, 61, 100])
def test_streamed_windows_match_spans_and_blend_back_exactly(total):
    frames = [np.full((2, 2, 3), i % 251, np.uint8) for i in range(total)]
    windows = list(iter_windows(iter(frames), 33, 5))
    assert [(s, e) for s, e, _ in windows] == window_spans(total, 33, 5)
    marked = list(iter_windows(iter(frames), 33, 5, mark_last=True))  # only the last window says so
    assert [(s, e, last) for s, e, _, last in marked] == [
        (s, e, i == len(windows) - 1) for i, (s, e, _) in enumerate(windows)
    ]
    blender, out = WindowBlender(), []
    for i, (s, e, chunk) in enumerate(windows):
        out += blender.add(s, chunk, windows[i + 1][0] if i + 1 < len(windows) else None)
    assert len(out) == total and all(np.array_equal(o, f) for o, f in zip(out, frames))


def test_blend_weights_of_neighbours_sum_to_one_over_the_overlap():
    a, b = blend_weights(33, 0, 5), blend_weights(33, 5, 0)
    assert np.allclose(a[-5:] + b[:5], 1.0)
    assert a[0] == 1 and b[-1] == 1


def test_blending_is_linear_between_two_windows():
    blender = WindowBlender()
    first = blender.add(0, np.zeros((10, 1, 1, 3), np.uint8), next_start=6)
    second = blender.add(6, np.full((10, 1, 1, 3), 200, np.uint8), next_start=None)
    values = [f[0, 0, 0] for f in first + second]
    assert len(values) == 16
    assert values[:6] == [0] * 6 and values[10:] == [200] * 6
    assert values[6:10] == sorted(values[6:10]) and 0 < values[6] < values[9] < 200


def test_synthetic_sample_is_deterministic_and_mixes_static_and_moving_content():
    a, b = synthetic_video(9, 64, 96, seed=5), synthetic_video(9, 64, 96, seed=5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synthetic_video(9, 64, 96, seed=6))
    change = np.abs(np.diff(a.astype(int), axis=0)).sum(axis=(0, 3))
    assert (change == 0).mean() > 0.3  # large static areas
    assert (change > 0).mean() > 0.02  # and moving objects


def test_probe_and_list_videos(tmp_path):
    write_video(tmp_path / "a.mp4", synthetic_video(5, 16, 16), fps=8)
    write_video(tmp_path / "b.mp4", synthetic_video(5, 16, 16), fps=8)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_videos([tmp_path])] == ["a.mp4", "b.mp4"]
    assert [p.name for p in list_videos([str(tmp_path / "*.mp4")])] == ["a.mp4", "b.mp4"]
    assert probe(tmp_path / "a.mp4").num_frames == 5
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
