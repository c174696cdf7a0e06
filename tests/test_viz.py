"""The viz panels: the reconstruction shown untouched, labels that exist and read at any frame size,
a usage bar as long as the share of tokens kept, and a strip with one header over its columns."""

import numpy as np
import pytest
from PIL import Image

from infotok.video import read_video, synthetic_video, write_video
from infotok.viz import BACKGROUND, FONT_MIN, KEPT, compose, layout, strip

SPATIAL = 8


def frames(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An original, a different 'reconstruction' and a random keep-mask for one h x w frame."""
    video = synthetic_video(2, h, w, seed=seed)
    mask = np.random.default_rng(seed).random((-(-h // SPATIAL), -(-w // SPATIAL))) < 0.37
    return video[0], video[1], mask


def has_text(region: np.ndarray) -> bool:
    """Text pixels: something brighter than the background, not one flat colour."""
    return region.max() > 150 and len(np.unique(region.reshape(-1, 3), axis=0)) > 2


@pytest.mark.parametrize("h, w", [(48, 72), (49, 63), (128, 192), (720, 1280)])
def test_panel_shows_the_reconstruction_untouched_under_labels_and_keeps_its_size(h, w):
    original, recon, mask = frames(h, w)
    panel = compose(original, recon, mask, SPATIAL, frame=12)
    lay = layout(h)
    assert panel.shape == (lay.header + h + lay.bar + lay.legend, 3 * w, 3) and panel.dtype == np.uint8
    assert panel.shape[0] % 2 == 0  # H.264 codes even heights only
    top = lay.header
    np.testing.assert_array_equal(panel[top : top + h, :w], original)
    np.testing.assert_array_equal(panel[top : top + h, w : 2 * w], recon)  # no dimming, no tint
    for column in range(3):  # "original", "reconstruction", "kept tokens" over each column
        assert has_text(panel[:top, column * w : (column + 1) * w])
    assert has_text(panel[top + h + lay.bar :, :w])  # "frame 12" and the bar's legend


def test_labels_scale_with_the_frame_and_never_drop_below_the_minimum():
    assert layout(48).font == layout(32).font == FONT_MIN
    assert layout(720).font > 2 * FONT_MIN and layout(720).header > layout(48).header


def test_mask_column_colours_the_kept_cells_over_a_faded_grey_frame():
    original, recon, mask = frames(48, 72)
    h, w = original.shape[:2]
    keep = np.kron(mask, np.ones((SPATIAL, SPATIAL), bool))[:h, :w]
    view = compose(original, recon, mask, SPATIAL)[layout(h).header :][:h, 2 * w :].astype(int)
    dropped = view[~keep]
    assert (dropped[:, 0] == dropped[:, 1]).all() and (dropped[:, 1] == dropped[:, 2]).all()  # grey
    assert (view[keep][:, 0] - view[keep][:, 2] > 100).all()  # the bar's orange


@pytest.mark.parametrize("share", [0.0, 0.25, 0.37, 1.0])
def test_bar_is_filled_over_the_kept_fraction(share):
    original, recon, _ = frames(48, 72)
    mask = np.zeros((6, 9), bool)
    mask.flat[: int(round(share * mask.size))] = True
    panel = compose(original, recon, mask, SPATIAL, frame=0)
    lay = layout(48)
    row = panel[lay.header + 48 + lay.bar // 2]
    filled = (row == KEPT).all(axis=1)
    assert filled.sum() == round(mask.mean() * panel.shape[1])
    assert filled[: filled.sum()].all()  # from the left, in one piece
    assert (panel[lay.header + 48] == BACKGROUND).all()  # a margin between the frame and the bar


def test_strip_keeps_the_column_labels_over_the_first_frame_only(tmp_path):
    h, w = 48, 72
    panels = [compose(*frames(h, w, seed=s), SPATIAL, frame=s) for s in range(3)]
    header = layout(h).header
    image = np.asarray(Image.open(strip(panels, tmp_path / "s.png", header=header, title="t")).convert("RGB"))
    assert image.shape == (3 * panels[0].shape[0] - 2 * header, 3 * w, 3)
    np.testing.assert_array_equal(image[: panels[0].shape[0]], panels[0])  # pixel for pixel
    np.testing.assert_array_equal(image[panels[0].shape[0] :][: panels[1].shape[0] - header], panels[1][header:])


def test_panels_of_odd_sized_frames_make_a_video_of_their_size(tmp_path):
    panels = [compose(*frames(49, 63, seed=s), SPATIAL, frame=s) for s in range(3)]
    video, _ = read_video(write_video(tmp_path / "v.mp4", panels))
    assert video.shape == (3, *panels[0].shape)
