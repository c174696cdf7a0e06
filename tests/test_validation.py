"""Tokenization options are refused by the library's own objects (what the CLI refuses, the Python
API refuses), when the stream is made: before any video is opened."""

import pytest

from infotok.pipeline import TokenStream
from infotok.spec import TokenizeSpec, Windowing
from tests.conftest import tiny_model


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rate": 0.0}, "rate"),
        ({"strategy": "best"}, "strategy"),
        ({"selection": "lucky"}, "selection"),
        ({"window": 4}, "window"),
        ({"start": -1}, "start must be a frame index >= 0"),
        ({"start": 1.5}, "start must be"),
        ({"max_frames": 0}, "max_frames must be a positive integer"),
        ({"size": 0}, "size must be a positive integer"),
        ({"max_size": -8}, "max_size must be a positive integer"),
        ({"size": True}, "size must be"),
    ],
)
def test_token_stream_refuses_bad_options_before_reading_the_video(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_model().iter_tokenize("no/such/video.mp4", **options)


def test_tokenize_refuses_them_too_and_takes_good_ones():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_frames"):
        model.tokenize("no/such/video.mp4", max_frames=0)
    stream = model.iter_tokenize("no/such/video.mp4", start=3, max_frames=9, size=64, max_size=None)
    assert stream.windowing == Windowing(start=3, max_frames=9, size=64)


def test_settings_objects_are_checked_when_made():
    with pytest.raises(ValueError, match="rate must lie"):
        TokenizeSpec(rate=2.0)
    with pytest.raises(ValueError, match="fill must be one of"):
        TokenizeSpec(fill="blur")
    with pytest.raises(ValueError, match="overlap"):
        Windowing(window=9, overlap=9)
    with pytest.raises(ValueError, match="has no value predictor"):
        TokenStream(tiny_model(), "no/such/video.mp4", TokenizeSpec(selection="value"))
