"""Geometry: the token grid of any clip, padding and crop-back, frame <-> latent frame, window spans."""

import pytest
import torch

from infotok.geometry import Geometry, check_windowing, window_count, window_span, window_spans

GEOMETRY = Geometry(4, 8)


@pytest.mark.parametrize("t,h,w", [(1, 5, 3), (18, 139, 250), (33, 256, 256)])
def test_pad_to_geometry_then_crop_round_trips(t, h, w):
    x = torch.rand(1, 3, t, h, w)
    padded = GEOMETRY.pad(x)
    tt, hh, ww = padded.shape[2:]
    assert (tt - 1) % 4 == 0 and hh % 8 == 0 and ww % 8 == 0
    assert (tt, hh, ww) == GEOMETRY.padded_shape(t, h, w) and GEOMETRY.on_grid(tt, hh, ww)
    assert GEOMETRY.latent_shape(t, h, w) == (1 + (tt - 1) // 4, hh // 8, ww // 8)
    assert torch.equal(GEOMETRY.crop(padded, t, h, w), x)


def test_frame_0_is_its_own_latent_frame_then_groups_of_four():
    assert [GEOMETRY.latent_frame_of(i) for i in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert [GEOMETRY.latent_frames(n) for n in (1, 2, 5, 6, 33)] == [1, 2, 2, 3, 9]


def test_window_spans_cover_video_and_overlap():
    spans = window_spans(100, 33, 5)
    assert spans[0] == (0, 33) and spans[-1][1] == 100
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 - s1 == 5
    assert window_spans(20, 33, 5) == [(0, 20)]
    with pytest.raises(ValueError):
        window_spans(10, 8, 8)


def test_window_count_and_span_agree_with_the_spans():
    for n in range(1, 40):
        for window in range(1, 12):
            for overlap in range(window):
                spans = window_spans(n, window, overlap)
                assert window_count(n, window, overlap) == len(spans) and spans[-1][1] == n
                assert [window_span(k, n, window, overlap) for k in range(len(spans))] == spans


def test_windowing_refuses_windows_shorter_than_one_latent_step():
    with pytest.raises(ValueError, match="window must be at least 5 frames"):
        check_windowing(4, 0, GEOMETRY)
    with pytest.raises(ValueError, match="overlap must be at least 0 and smaller than window"):
        check_windowing(9, 9, GEOMETRY)
