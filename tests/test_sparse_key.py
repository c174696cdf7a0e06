"""Sparse key frames: a position with nothing to hold at a window's first latent frame is kept there only on a
lattice, or where its code differs from what the lattice around it suggests; the decompressor fills in the rest
(a fixed-rate base: that suggestion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infotok.calibration import Calibration
from infotok.cli import main
from infotok.dataset_budget import statistics_key
from infotok.dataset_run import tokenize_settings
from infotok.fill import drift, fill_key_frame, hold_last_kept, key_lattice, lattice_interpolation
from infotok.model import InfoTok
from infotok.router import calibrate_thresholds, hold_rates
from infotok.selection import drift_masks
from infotok.spec import TokenizeSpec
from infotok.tokens import Tokens
from infotok.video import synthetic_video, write_video
from tests.conftest import tiny_model

CLIP = synthetic_video(17, 32, 32, seed=3)


@pytest.fixture(scope="module")
def model():
    return tiny_model(predictor=True)


def test_the_lattices_keep_every_position_a_checkerboard_or_every_other_row_and_column():
    assert key_lattice(1.0, 4, 4) is None
    assert key_lattice(0.5, 2, 4).int().tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    quarter = key_lattice(0.25, 4, 4)
    assert quarter.int().tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="key_density must be one of"):
        key_lattice(0.3, 4, 4)


def test_off_the_lattice_a_position_drifts_from_the_interpolation_and_holds_it_until_it_drifts():
    """One channel on a 3x3 grid whose lattice (0.25) is its four corners: position (0, 1) lies between two
    lattice codes, 0 and 1."""
    codes = torch.zeros(1, 1, 2, 3, 3)
    codes[0, 0, :, 0, 2] = 1.0  # a lattice code
    codes[0, 0, 0, 0, 1] = 0.5  # what the lattice suggests there: its mean
    codes[0, 0, 0, 1, 1] = 0.9  # far from its four diagonal lattice neighbours' mean, 0.25
    codes[0, 0, :, 1, 2] = 0.5  # what the lattice suggests there too, in both latent frames
    codes[0, 0, 1, 0, 1] = 0.5  # unchanged in the second latent frame: no drift from the held interpolation
    codes[0, 0, 1, 1, 1] = 0.9  # and (1, 1) stays as kept
    key = key_lattice(0.25, 3, 3)
    assert lattice_interpolation(codes[:, :, 0], key[None])[0, 0, 0, 1] == pytest.approx(0.5)
    d = drift(codes, 0.3, key_density=0.25)
    assert d[0, 0][key].tolist() == [float("inf")] * 4  # the lattice is always kept
    assert d[0, 0, 0, 1] == pytest.approx(0.0) and d[0, 0, 1, 1] == pytest.approx(0.65)
    assert d[0, 1, 0, 1] == pytest.approx(0.0)  # it held the interpolation, which it still shows
    assert hold_rates(codes, 0.3, key_density=0.25) == [pytest.approx(5 / 18)]  # the lattice and (1, 1)
    mask = drift_masks(codes, [5 / 18], key_density=0.25)[0]
    assert mask[0].sum() == 5 and bool(mask[0, 1, 1]) and not bool(mask[0, 0, 1])


def test_a_continuing_window_keeps_its_carried_codes_and_treats_only_positions_never_kept_as_fresh():
    codes = torch.zeros(1, 1, 2, 2, 2)
    carried = torch.zeros(1, 1, 2, 2)
    present = torch.tensor([[[True, False], [True, True]]])  # (0, 1) was never kept
    d = drift(codes, 0.1, carried, present, key_density=0.25)  # the lattice: (0, 0) alone
    assert d[0, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # nothing drifted, nothing to pay: no spike
    assert drift(codes, 0.1, carried, present)[0, 0, 0, 1] == float("inf")  # whole key frames: kept


def test_sparse_key_frames_keep_the_lattice_decode_and_round_trip(model, tmp_path):
    tokens = model.tokenize(CLIP, rate=0.25, strategy="static", fill="hold", selection="drift", key_density=0.25)
    first = torch.from_numpy(np.asarray(tokens.windows[0].mask[0]))
    assert bool(first[key_lattice(0.25, *first.shape)].all()) and not bool(first.all())
    assert tokens.ledger().kept == round(0.25 * tokens.ledger().total)
    whole = model.tokenize(CLIP, rate=0.25, strategy="static", fill="hold", selection="drift", key_density=1.0)
    assert bool(torch.from_numpy(np.asarray(whole.windows[0].mask[0])).all())
    decoded = model.detokenize(tokens)
    assert decoded.shape == CLIP.shape and not np.array_equal(decoded, model.detokenize(whole))
    path = tokens.save(tmp_path / "sparse.itok")
    assert np.array_equal(model.detokenize(Tokens.load(path)), decoded)


def test_the_mask_fill_and_the_zero_code_convention_refuse_sparse_key_frames(model):
    with pytest.raises(ValueError, match="hold fill and drift selection"):
        model.tokenize(CLIP, rate=0.5, fill="mask", selection="value", key_density=0.5)
    zero_code = tiny_model()
    zero_code.dropped_mode = "zero_code"  # the release's convention: a dropped token is the all-zero code
    with pytest.raises(ValueError, match="no learned dropped embedding"):
        zero_code.tokenize(CLIP, rate=0.5, fill="hold", key_density=0.25)


def test_a_base_fills_a_sparse_key_frame_with_the_interpolation_its_drift_measured_against():
    """One channel, 3x3, lattice at the corners: (0, 1) is dropped and decodes as the mean of its two lattice
    neighbours, (1, 1) was kept, and the second latent frame is left to `hold`."""
    codes = torch.zeros(1, 1, 2, 3, 3)
    codes[0, 0, :, 0, 2] = 1.0
    codes[0, 0, :, 1, 1] = 0.9
    mask = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    mask[0, 0] = key_lattice(0.25, 3, 3)
    mask[0, 0, 1, 1] = True
    filled, has_code = fill_key_frame(codes, mask)
    assert bool(has_code[0, 0].all()) and not bool(has_code[0, 1].any())  # later frames: left to `hold`
    assert filled[0, 0, 0, 0, 1] == pytest.approx(0.5) and filled[0, 0, 0, 1, 2] == pytest.approx(0.5)
    assert filled[0, 0, 0, 1, 1] == pytest.approx(0.9)  # a kept code stays
    assert torch.equal(fill_key_frame(codes, torch.ones_like(mask))[0], codes)  # nothing missing: unchanged


def test_a_base_tokenizes_and_decodes_sparse_key_frames_at_the_lattice_it_interpolates(tmp_path):
    base = tiny_model(adaptive=False)
    assert base.fills_in_dropped and base.resolve_key_density(None, "hold", "drift") == 1.0  # uncalibrated: whole
    tokens = base.tokenize(CLIP, rate=0.25, strategy="static", fill="hold", key_density=0.25)
    first = torch.from_numpy(np.asarray(tokens.windows[0].mask[0]))
    assert bool(first[key_lattice(0.25, *first.shape)].all()) and not bool(first.all())
    batch = tokens.batch(0)
    codes, mask = base.base.codes_from_indices(batch.indices), batch.mask
    held, _ = hold_last_kept(*fill_key_frame(codes, mask))  # every position has a code from the first frame on
    expected = base.base.decode_features(base.base.features_from_codes(held))
    assert torch.allclose(base.decode_codes(codes, mask, "hold"), expected)
    path = tokens.save(tmp_path / "base.itok")
    assert np.array_equal(base.detokenize(Tokens.load(path)), base.detokenize(tokens))
    with pytest.raises(ValueError, match="key density 0.25 alone, not 0.5"):
        base.tokenize(CLIP, rate=0.25, fill="hold", key_density=0.5)


def test_a_checkpoint_tokenizes_with_the_density_it_was_calibrated_with(model, tmp_path):
    codes = list(model.latent_codes(torch.from_numpy(np.stack([synthetic_video(9, 32, 32, seed=s) for s in range(4)]))))
    calibrated = tiny_model(predictor=True)
    calibrated.calibration.rd_thresholds = calibrate_thresholds(codes, key_density=0.25)
    calibrated.calibration.key_density = 0.25
    folder = calibrated.save_pretrained(tmp_path / "sparse-ckpt")
    loaded = InfoTok.from_pretrained(folder)
    assert loaded.calibration.key_density == 0.25 and model.calibration.key_density == 1.0
    assert Calibration.from_config({}, None).key_density == 1.0  # configs written before it
    tokens = loaded.tokenize(CLIP, rate=0.25, fill="hold", selection="drift")
    assert not bool(np.asarray(tokens.windows[0].mask[0]).all())  # the default: sparse
    assert TokenizeSpec(rate=0.25, fill="hold").resolved(loaded).key_density == 0.25
    assert TokenizeSpec(rate=0.25, fill="mask").resolved(loaded).key_density == 1.0  # only where it applies


def test_a_dataset_run_records_the_density_and_its_statistics_depend_on_it():
    assert "key_density" not in tokenize_settings(TokenizeSpec())  # folders begun before it resume
    settings = tokenize_settings(TokenizeSpec(key_density=0.5))
    assert settings["key_density"] == 0.5
    identity, grid = {"weights_hash": "h"}, [0.0, 0.1]
    plain = tokenize_settings(TokenizeSpec(fill="hold"))
    assert statistics_key(identity, plain | {"fill": "hold"}, grid) != statistics_key(
        identity, plain | {"fill": "hold", "key_density": 0.25}, grid
    )


def test_the_cli_takes_a_key_density_and_refuses_one_that_cannot_apply(tmp_path, tiny_checkpoint, capsys):
    video = write_video(tmp_path / "clip.mp4", CLIP, fps=12)
    out = tmp_path / "clip.itok"
    args = ["encode", str(video), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--window", "9"]
    assert main(args + ["--fill", "hold", "--strategy", "static", "--rate", "0.5", "--key-density", "0.25"]) == 0
    assert not bool(np.asarray(Tokens.load(out).windows[0].mask[0]).all())
    assert main(args + ["--overwrite", "--fill", "mask", "--key-density", "0.5"]) == 2
    assert "hold fill and drift selection" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--key-density", "0.3"])
