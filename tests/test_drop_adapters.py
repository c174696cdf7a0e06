"""Drop adapters: the tokens are the base's, rate 1 decodes as the base, and what fills drops acts only near them."""

from __future__ import annotations

import pytest
import torch

from infotok.core import as_model_input
from infotok.drop_adapters import DropAdapterConfig
from infotok.model import InfoTok
from infotok.train import TrainConfig, build_model
from infotok.video import synthetic_video
from tests.conftest import tiny_model


def adapter_model(tmp_path, trained: bool = True) -> tuple[InfoTok, InfoTok]:
    """(a model built as `train infotok --init FLEX --base-init BASE --drop-adapters` builds it, `trained`:
    with every new branch and stack output made non-zero as training would, BASE's model)."""
    tiny_model(predictor=True).save_pretrained(tmp_path / "flex")
    base = tiny_model(adaptive=False, seed=5)
    base.save_pretrained(tmp_path / "base")
    cfg = TrainConfig(kind="infotok", init=str(tmp_path / "flex"), base_init=str(tmp_path / "base"), drop_adapters=True)
    model = build_model(cfg.check())
    assert not any(p.requires_grad for p in model.base.parameters())  # the base stays as it is
    if not trained:
        return model.eval(), base
    torch.manual_seed(3)
    with torch.no_grad():
        for p in [*model.drop_adapters.parameters(), model.decompressor.proj_out.weight]:
            p.normal_(0, 0.1)
    return model.eval(), base


def video(seed: int = 1) -> torch.Tensor:
    return as_model_input(torch.from_numpy(synthetic_video(9, 32, 32, seed=seed)[None]))


def test_full_rate_decodes_as_the_base_bit_for_bit(tmp_path):
    model, base = adapter_model(tmp_path)
    x = video()
    with torch.no_grad():
        codes, indices = model.encode_codes(x)
        base_codes, base_indices = base.encode_codes(x)
        assert torch.equal(indices, base_indices)  # no compressor: the tokens are the base's codes
        every = torch.ones_like(indices, dtype=torch.bool)
        assert torch.equal(model.decode_codes(codes, every, "mask"), base.decode_codes(base_codes))
        assert torch.equal(model(x, [1.0])[0], base(x, [1.0])[0])


def test_training_starts_from_the_base_under_hold(tmp_path):
    """New branches and restarted stacks add nothing, and a sparse key frame's drops get the base's lattice
    interpolation: before training the model decodes every hold selection exactly as its base."""
    model, base = adapter_model(tmp_path, trained=False)
    x = video()
    with torch.no_grad():
        codes, indices = model.encode_codes(x)
        mask = torch.rand(indices.shape, generator=torch.Generator().manual_seed(1)) < 0.4
        assert not mask[:, 0].all()
        assert torch.equal(model.decode_codes(codes, mask, "hold"), base.decode_codes(codes, mask, "hold"))


def test_a_drop_changes_the_decoding_from_its_latent_frame_on(tmp_path):
    model, base = adapter_model(tmp_path)
    x = video()
    with torch.no_grad():
        codes, indices = model.encode_codes(x)
        mask = torch.ones_like(indices, dtype=torch.bool)
        mask[:, 1, 1, 1] = False  # latent frame 1: frames 1-4
        dropped = model.decode_codes(codes, mask, "mask")
        full = base.decode_codes(codes)
    assert torch.equal(dropped[:, :, :1], full[:, :, :1])  # causal: frame 0 cannot see the drop
    assert not torch.allclose(dropped[:, :, 1:], full[:, :, 1:])


def test_the_gate_opens_within_reach_of_a_position_without_its_own_code():
    mask = torch.ones(1, 2, 5, 5, dtype=torch.bool)
    mask[0, 1, 0, 0] = False
    model = InfoTok(tiny_model().base.config, tiny_model().compressor_config, adapters=DropAdapterConfig(reach=1))
    gate = model.drop_gate(mask)
    assert gate[0, 0].sum() == 0 and gate[0, 1, :2, :2].all() and gate[0, 1].sum() == 4
    assert model.drop_gate(torch.ones_like(mask)) is None  # every token kept: the base decodes alone


def test_decoding_in_chunks_matches_decoding_whole(tmp_path):
    """Inference decodes a few latent frames at a time; the side branches follow the chunks."""
    model, _ = adapter_model(tmp_path)
    x = video()
    codes, indices = model.encode_codes(x)
    mask = torch.rand(indices.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.enable_grad():  # one chunk
        whole = model.decode_codes(codes.detach(), mask, "hold").detach()
    model.base.chunk_pixels = 32 * 32  # one latent frame per chunk
    with torch.no_grad():
        chunked = model.decode_codes(codes, mask, "hold")
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_the_checkpoint_keeps_its_adapters_and_names_other_tokens(tmp_path):
    model, base = adapter_model(tmp_path)
    model.save_pretrained(tmp_path / "adapted")
    loaded = InfoTok.from_pretrained(tmp_path / "adapted")
    assert loaded.adapter_config == DropAdapterConfig()
    assert not any(k.startswith("compressor.") for k in loaded.state_dict())
    flex = InfoTok.from_pretrained(tmp_path / "flex")
    assert loaded.config_hash != flex.config_hash  # the same stacks' config, but the tokens mean the base's codes
    x = video(2)
    with torch.no_grad():
        codes, indices = model.encode_codes(x)
        mask = indices % 3 > 0
        assert torch.equal(loaded.decode_codes(codes, mask, "hold"), model.decode_codes(codes, mask, "hold"))


def test_drop_adapters_are_for_train_infotok():
    with pytest.raises(ValueError, match="drop_adapters"):
        TrainConfig(kind="base", drop_adapters=True).check()
