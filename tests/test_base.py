"""The causal base tokenizer: geometry, index range, causality, checkpoints."""

import json

import pytest
import torch

from infotok.model import CheckpointError, InfoTok
from tests.conftest import tiny_model


def test_encode_decode_geometry_and_index_range():
    base = tiny_model(adaptive=False).base
    x = torch.rand(2, 3, 17, 32, 48) * 2 - 1
    idx = base.encode(x)
    assert idx.shape == (2, 5, 4, 6)
    assert idx.min() >= 0 and idx.max() < 64000 and base.codebook_size == 64000
    assert base.decode(idx).shape == x.shape


def test_single_frame_is_its_own_latent_frame():
    base = tiny_model(adaptive=False).base
    assert base.encode(torch.zeros(1, 3, 1, 16, 16)).shape == (1, 1, 2, 2)


def test_off_grid_input_is_refused():
    base = tiny_model(adaptive=False).base
    with pytest.raises(ValueError, match="not on the model grid"):
        base.encode(torch.zeros(1, 3, 6, 16, 16))


@pytest.mark.parametrize("adaptive", [False, True])
def test_changing_a_frame_never_changes_earlier_latent_frames(adaptive):
    model = tiny_model(adaptive=adaptive)
    x = torch.rand(1, 3, 17, 32, 32) * 2 - 1
    with torch.no_grad():
        codes, idx = model.encode_codes(x)
        for frame in (1, 5, 9, 16):
            y = x.clone()
            y[:, :, frame] = torch.rand_like(y[:, :, frame])
            codes2, idx2 = model.encode_codes(y)
            latent = (frame - 1) // 4 + 1  # first latent frame that sees `frame`
            assert torch.equal(idx[:, :latent], idx2[:, :latent])
            assert not torch.equal(codes[:, :, latent:], codes2[:, :, latent:])
            # and the decoder is causal too: earlier output frames are unchanged
            out, out2 = model.decode_codes(codes), model.decode_codes(codes2)
            first_frame = 1 + 4 * (latent - 1)
            assert torch.allclose(out[:, :, :first_frame], out2[:, :, :first_frame], atol=1e-6)


def test_checkpoint_save_load_gives_identical_outputs(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = InfoTok.from_pretrained(tmp_path / "ckpt")
    x = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
    assert loaded.name == model.name and float(loaded.score_mean) == pytest.approx(float(model.score_mean))
    assert len(loaded.model_hash) == 16


def test_checkpoint_errors_are_specific(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        InfoTok.from_pretrained(tmp_path / "nope")
    tiny_model().save_pretrained(tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["base"]["dec_lo"] = 24
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        InfoTok.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        InfoTok.from_pretrained(tmp_path / "c")
