"""Router, selection and the block-causal compressor."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from infotok.compressor import BlockCausalTransformer, CompressorConfig
from infotok.model import InfoTok
from infotok.router import balanced_rates, check_rate, global_elbo_rate, score_map, uniform_rate
from infotok.selection import keep_mask, kept_count
from infotok.tokens import Tokens
from infotok.video import synthetic_video
from tests.conftest import TINY_BASE, TINY_COMPRESSOR, tiny_model


@pytest.mark.parametrize("rate", [1 / 16, 0.25, 0.3, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("method", ["error", "order", "random"])
def test_keep_mask_keeps_exactly_round_rate_times_n(rate, method):
    scores = torch.rand(5, 7, 9)
    mask = keep_mask(scores, rate, method, torch.Generator().manual_seed(0))
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == kept_count(rate, scores.numel()) == round(rate * 315)


def test_error_selection_keeps_the_highest_scores_with_ties_broken_by_position():
    scores = torch.tensor([[[0.1, 0.9, 0.5, 0.5], [0.5, 0.2, 0.0, 0.3]]])
    # keep 3 of 8: the 0.9, then two of the three 0.5s, the earlier positions first
    mask = keep_mask(scores, 3 / 8, "error")
    assert mask.flatten().tolist() == [False, True, True, True, False, False, False, False]
    mask = keep_mask(scores, 0.5, "error")
    assert mask.flatten().tolist() == [False, True, True, True, True, False, False, False]


def test_order_selection_is_a_prefix_of_every_latent_frame():
    mask = keep_mask(torch.rand(3, 4, 4), 0.25, "order")
    for frame in mask:
        assert frame.flatten()[:4].all() and not frame.flatten()[4:].any()


def test_score_map_pools_frame0_alone_then_groups_of_four():
    x = torch.zeros(1, 3, 9, 16, 16)
    x_hat = torch.zeros_like(x)
    x_hat[:, :, 0] = 1.0  # error only in frame 0
    x_hat[:, :, 5, :8, :8] = 0.4  # error in frame 5 (latent frame 2), top-left token
    s = score_map(x, x_hat)
    assert s.shape == (1, 3, 2, 2)
    assert torch.allclose(s[0, 0], torch.ones(2, 2))
    assert s[0, 1].abs().sum() == 0
    assert s[0, 2, 0, 0] == pytest.approx(0.1) and s[0, 2, 1, 1] == 0


def test_global_elbo_follows_score_and_clips():
    assert global_elbo_rate(0.5, 2.0, 1.0) == 1.0
    assert global_elbo_rate(0.5, 1.0, 1.0) == 0.5
    assert global_elbo_rate(0.5, 0.01, 1.0) == 1 / 16
    with pytest.raises(ValueError, match="calibrate"):
        global_elbo_rate(0.5, 1.0, 0.0)


def test_balanced_rates_meet_the_average_despite_clipping():
    scores = [0.1, 0.2, 0.3, 3.0, 0.05]
    rates = balanced_rates(0.5, scores, score_mean=float(np.mean(scores)))
    assert np.mean(rates) == pytest.approx(0.5, abs=1e-6)
    assert rates[3] == 1.0 and min(rates) >= 1 / 16
    assert np.argsort(rates).tolist() == np.argsort(scores).tolist()


def test_uniform_rate_has_the_requested_mean_and_range():
    rng = np.random.default_rng(0)
    rates = [uniform_rate(0.5, rng) for _ in range(4000)]
    assert np.mean(rates) == pytest.approx(0.5, abs=0.02) and min(rates) >= 1 / 16 and max(rates) <= 1


@pytest.mark.parametrize("bad", [0.0, 1.5, -1.0, float("nan"), 0.05])
def test_absurd_rates_are_refused(bad):
    with pytest.raises(ValueError, match=r"\[1/16, 1\]"):
        check_rate(bad)


def test_compressor_is_block_causal_and_starts_as_identity():
    torch.manual_seed(0)
    stack = BlockCausalTransformer(8, CompressorConfig(width=16, depth=2, heads=2))
    x = torch.randn(1, 8, 4, 3, 5)
    assert torch.equal(stack(x), x)  # zero-initialised output projection
    torch.nn.init.normal_(stack.proj_out.weight, std=0.1)
    y = stack(x)
    x2 = x.clone()
    x2[:, :, 2] += 1.0  # change latent frame 2
    y2 = stack(x2)
    assert torch.allclose(y[:, :, :2], y2[:, :, :2], atol=1e-6)  # frames 0, 1 never look ahead
    assert not torch.allclose(y[:, :, 2:], y2[:, :, 2:])
    x3 = x.clone()
    x3[:, :, 2, 0, 0] += 1.0  # one token: the whole of its frame sees it (attention within a frame)
    assert not torch.allclose(stack(x3)[:, :, 2, 2, 4], y[:, :, 2, 2, 4])


def test_dropped_positions_use_the_learned_embedding_not_their_code():
    model = tiny_model()
    codes, _ = model.encode_codes(torch.rand(1, 3, 5, 16, 16) * 2 - 1)
    mask = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 1, 0, 0] = False
    other = codes.clone()
    other[:, :, 1, 0, 0] = -codes[:, :, 1, 0, 0]  # a different code at the dropped position
    with torch.no_grad():
        assert torch.equal(model.decode_codes(codes, mask), model.decode_codes(other, mask))
        assert not torch.equal(model.decode_codes(codes), model.decode_codes(other))


def test_encode_kept_counts_scores_and_strategies():
    model = tiny_model(score_mean=1e-9)  # every clip looks complex -> global_elbo clips to rate 1
    x = torch.rand(1, 3, 9, 24, 32) * 2 - 1
    static = model.encode(x, 0.5, "static")
    assert static.mask.shape == (1, 3, 3, 4) and int(static.mask.sum()) == 18
    assert static.indices.shape == (1, 3, 3, 4) and not static.indices[~static.mask].any()  # dropped hold 0
    assert static.nfe == 2 and static.rate.tolist() == [0.5] and static.score.dtype == torch.float64
    assert model.encode(x, 0.5, "global_elbo").rate.tolist() == [1.0]
    model.score_mean.fill_(1e9)  # every clip looks trivial -> the minimum rate
    low = model.encode(x, 0.5, "global_elbo")
    assert low.rate.tolist() == [1 / 16] and int(low.mask.sum()) == round(36 / 16)
    full = model.encode(x, 1.0, "static")
    assert full.nfe == 1 and bool(full.mask.all()) and torch.isnan(full.score).all()


@pytest.mark.parametrize("strategy, selection", [("global_elbo", "error"), ("uniform", "random"), ("static", "order")])
def test_a_batch_of_four_equals_four_batches_of_one(strategy, selection):
    model = tiny_model()
    clips = np.stack([synthetic_video(9, 24, 32, seed=s) for s in range(4)])  # uint8 [B, T, H, W, 3]
    batch = model.encode(clips, 0.5, strategy, selection, generator=np.random.default_rng(3))
    rng = np.random.default_rng(3)  # one generator across the calls, as across a video's windows
    ones = [model.encode(clips[i : i + 1], 0.5, strategy, selection, generator=rng) for i in range(4)]
    for i, one in enumerate(ones):
        assert torch.equal(batch.indices[i], one.indices[0]) and torch.equal(batch.mask[i], one.mask[0])
        assert batch.rate[i] == one.rate[0]
        assert torch.equal(batch.score[i : i + 1], one.score) or (batch.score[i].isnan() and one.score.isnan().all())
    assert torch.equal(model.decode(batch), torch.cat([model.decode(one) for one in ones]))


def test_encode_takes_any_size_and_decode_crops_back():
    model = tiny_model()
    x = torch.rand(2, 3, 7, 20, 27) * 2 - 1  # off the 1 + 4k x 8 x 8 grid
    batch = model.encode(x, 0.5, "static")
    assert batch.mask.shape == (2, 3, 3, 4) and (batch.frames, batch.height, batch.width) == (7, 20, 27)
    assert model.decode(batch).shape == x.shape
    with pytest.raises(ValueError, match="uint8 \\[B, T, H, W, 3\\]"):
        model.encode(torch.zeros(2, 3, 5, 16, 16, dtype=torch.int32))


def test_reselect_gives_what_encode_gives_at_that_rate():
    model = tiny_model()
    x = torch.rand(1, 3, 9, 24, 32) * 2 - 1
    full = model.encode(x, 1.0, "static", keep_scores=True)
    for rate in (0.25, 0.5, 0.75):
        again = model.reselect(full, [rate])
        direct = model.encode(x, rate, "static")
        assert torch.equal(again.mask, direct.mask) and torch.equal(again.indices, direct.indices)
    with pytest.raises(ValueError, match="full-rate"):
        model.reselect(model.encode(x, 0.5, "static", keep_scores=True), [0.25])


def test_fixed_rate_base_drops_tokens_only_under_hold():
    model = tiny_model(adaptive=False)
    x = torch.zeros(1, 3, 5, 16, 16)
    with pytest.raises(ValueError, match="fixed-rate base tokenizer: below rate 1 it tokenizes only under the hold"):
        model.encode(x, 0.5, "static")
    full = model.encode(x, 1.0, "static")
    with pytest.raises(ValueError, match="only under the hold fill, not mask"):
        model.decode_codes(model.base.codes_from_indices(full.indices), full.mask & False, "mask")


def test_fixed_rate_base_under_hold_decodes_each_dropped_token_as_the_code_last_kept_there():
    model = tiny_model(adaptive=False)
    x = torch.from_numpy(synthetic_video(17, 32, 32, seed=3))[None]
    full = model.encode(x, 1.0, "static", fill="hold")
    for rate in (0.25, 0.5):
        batch = model.encode(x, rate, "static", fill="hold")
        mask = batch.mask
        assert bool(mask[:, 0].all()) and not bool(mask.all())  # drift keeps the first latent frame whole
        codes = model.base.codes_from_indices(full.indices)
        held = codes.clone()
        for j in range(1, codes.shape[2]):
            held[:, :, j] = torch.where(mask[:, None, j], codes[:, :, j], held[:, :, j - 1])
        expected = model.base.decode_features(model.base.features_from_codes(held))
        expected = model.geometry.crop(expected, 17, 32, 32).clamp(-1, 1)
        assert torch.allclose(model.decode(batch), expected, atol=1e-5)


def test_calibration_mean_is_stored_loaded_and_written_into_token_headers(tmp_path):
    model = tiny_model(score_mean=0.123)
    loaded = InfoTok.from_pretrained(model.save_pretrained(tmp_path / "c"))
    assert float(loaded.score_mean) == pytest.approx(0.123)
    tokens = loaded.tokenize(synthetic_video(9, 16, 16), rate=0.5)
    assert tokens.header.score_mean == pytest.approx(0.123)


def test_tokens_of_one_video_do_not_depend_on_other_inputs():
    model = tiny_model()
    a, b = synthetic_video(9, 16, 24, seed=1), synthetic_video(9, 16, 24, seed=2)
    alone = model.tokenize(a, rate=0.5)
    model.tokenize(b, rate=0.5)
    again = model.tokenize(a, rate=0.5)
    assert all(
        np.array_equal(w1.indices, w2.indices) and np.array_equal(w1.mask, w2.mask)
        for w1, w2 in zip(alone.windows, again.windows)
    )


def test_temporal_selection_keeps_the_first_latent_frame_then_what_moved():
    model = tiny_model()
    still = np.repeat(synthetic_video(1, 32, 32, seed=3), 9, axis=0)  # 9 identical frames
    moving = still.copy()
    moving[5:, :8, :8] = 255 - moving[5:, :8, :8]  # one token's patch changes from frame 5 (latent frame 2) on
    rate = 24 / 48  # frame 0's 16 tokens, then 8 more
    batch = model.encode(np.stack([still, moving]), rate, "static", "temporal")
    assert batch.nfe == 1  # no router pass: the ranking comes from the codes
    for b in range(2):
        assert bool(batch.mask[b, 0].all())  # nothing earlier to fill the first latent frame from
    change = model.latent_change(
        model.encode_codes(
            model.geometry.pad(torch.from_numpy(np.stack([still, moving])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1)
        )[0]
    )
    assert torch.isinf(change[:, 0]).all() and change[1, 2, 0, 0] > change[0, 2, 0, 0]
    assert bool(batch.mask[1, 2, 0, 0])  # the changed position is among the kept ones
    full = model.encode(moving[None], 1.0, "static", keep_scores=True)
    again = model.reselect(full, [rate], "temporal")
    assert torch.equal(again.mask, model.encode(moving[None], rate, "static", "temporal").mask)


def test_a_wider_decompressor_tile_decodes_the_same_tokens_differently_and_files_stay_readable(tmp_path):
    tiled = InfoTok(TINY_BASE, replace(TINY_COMPRESSOR, window=4), name="tiny-tiled")
    for stack in (tiled.compressor, tiled.decompressor):
        torch.nn.init.normal_(stack.proj_out.weight, std=0.1)
    wider = InfoTok(TINY_BASE, replace(TINY_COMPRESSOR, window=4, decoder_window=0), name="tiny-tiled")
    wider.load_state_dict(tiled.state_dict())
    tiled = InfoTok.from_pretrained(tiled.save_pretrained(tmp_path / "tiled"))
    wider = InfoTok.from_pretrained(wider.save_pretrained(tmp_path / "wider"))
    assert wider.compressor.config.window == 4 and wider.decompressor.config.window == 0
    assert wider.config_hash == tiled.config_hash and wider.model_hash == tiled.model_hash
    video = synthetic_video(9, 64, 64, seed=2)
    tokens = tiled.tokenize(video, rate=0.5, strategy="static", selection="random", fill="mask", window=9)
    again = wider.tokenize(video, rate=0.5, strategy="static", selection="random", fill="mask", window=9)
    assert all(np.array_equal(a.indices, b.indices) and np.array_equal(a.mask, b.mask)
               for a, b in zip(tokens.windows, again.windows))  # fmt: skip
    tokens.save(tmp_path / "t.itok")
    decoded = wider.detokenize(Tokens.load(tmp_path / "t.itok"))  # a file of the tiled model decodes
    assert decoded.shape == video.shape and not np.array_equal(decoded, tiled.detokenize(tokens))
