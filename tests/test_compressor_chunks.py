"""In inference the block-causal stacks run in place in bands of tile rows (or a few latent frames at a
time), and the router scores each decoded chunk as it comes (for memory at 720p); both give what the
whole-window computations they replaced give, up to the last bits of float sums (matrix kernels may
block a band's product differently from the whole frame's, and how depends on the CPU)."""

import pytest
import torch

from infotok.compressor import BlockCausalTransformer, CompressorConfig


def whole_stack(stack: BlockCausalTransformer, feats: torch.Tensor) -> torch.Tensor:
    """The whole-window forward the chunked one replaced: it still runs wherever grad is enabled."""
    with torch.enable_grad():
        return stack(feats).detach()


def random_stack(channels: int, window: int) -> BlockCausalTransformer:
    """Random non-zero weights everywhere (the output projection starts at zero)."""
    torch.manual_seed(0)
    stack = BlockCausalTransformer(channels, CompressorConfig(width=32, depth=3, heads=2, window=window))
    for p in stack.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return stack.eval()


# how the stacks' inputs come: contiguous, as the encoder's [(b t) c h w] and the decoder's channels-last features
LAYOUTS = {
    "contiguous": lambda b, c, t, h, w: torch.randn(b, c, t, h, w),
    "frames": lambda b, c, t, h, w: torch.randn(b, t, c, h, w).transpose(1, 2),
    "channels_last": lambda b, c, t, h, w: torch.randn(b, t, h, w, c).permute(0, 4, 1, 2, 3),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("window", [0, 4])
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (2, 2, 3, 5), (1, 9, 6, 9), (2, 9, 7, 11)])
def test_chunked_stack_equals_whole_window(window, shape, layout):
    b, t, h, w = shape
    stack = random_stack(12, window)
    feats = LAYOUTS[layout](b, 12, t, h, w)
    with torch.no_grad():
        ref = whole_stack(stack, feats)
        for rows in (1, 2 * b * h * w, 1 << 30):  # one, two, all latent frames per chunk
            stack.chunk_rows = rows
            y = stack(feats)
            assert y.shape == ref.shape
            assert y.stride() == ref.stride()  # the next convolution's sums depend on the layout
            assert (y - ref).abs().max() < 1e-5, rows


@pytest.mark.parametrize("shape", [(1, 3, 17, 9), (2, 2, 12, 5)])
def test_bands_of_tile_rows_give_the_sums_of_one_band(shape):
    """A layer cut into bands of tile rows (down to one each, shifted or not) adds up as one band over
    the whole frame. The chunking is a fixed function of the window's size, so a machine's tokens stay
    deterministic whatever it is; across CPUs the two agree to float rounding."""
    b, t, h, w = shape
    stack = random_stack(12, 4)
    feats = torch.randn(b, 12, t, h, w)
    with torch.no_grad():
        stack.chunk_rows = 1 << 30
        whole = stack(feats)
        stack.chunk_rows = 1
        assert (stack(feats) - whole).abs().max() < 1e-5


def test_chunked_stack_keeps_its_input():
    stack = random_stack(12, 4)
    feats = torch.randn(1, 12, 5, 6, 9)
    before = feats.clone()
    with torch.no_grad():
        stack.chunk_rows = 1
        stack(feats)
    assert torch.equal(feats, before)


# ------------------------------------------------------------------ the router, chunk by chunk
def random_infotok(base=None):
    from infotok.base import BaseConfig
    from infotok.model import InfoTok

    torch.manual_seed(0)
    base = base or BaseConfig(
        enc_hi=8, enc_lo=16, enc_hi_blocks=1, enc_lo_blocks=1, dec_hi=8, dec_lo=16, dec_hi_blocks=1, dec_lo_blocks=2
    )
    model = InfoTok(base, CompressorConfig(width=16, depth=2, heads=2, window=4), score_mean=0.2)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


@pytest.mark.parametrize("shape", [(1, 3, 1, 16, 24), (1, 3, 5, 24, 40), (2, 3, 9, 24, 16), (1, 3, 33, 16, 8)])
def test_router_scores_chunk_by_chunk(shape):
    from infotok.router import score_map

    model = random_infotok()
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        codes = model.encode_codes(x)[0]
        ref = score_map(x, model.decode_codes(codes), model.geometry)  # the whole decoded window
        for pixels in (1, shape[-1] * shape[-2] * 2, 1 << 30):  # one, two, all latent frames per chunk
            model.base.chunk_pixels = pixels
            scores = model.router_scores(x, codes)
            assert scores.shape == ref.shape
            assert (scores - ref).abs().max() < 1e-6, pixels
            starts = [
                (start, frames.shape[2])
                for start, frames in model.base.decoded_windows(
                    codes[:, :1].new_zeros(shape[0], 16, codes.shape[2], *codes.shape[-2:])
                )
            ]
            # each chunk: the frame before its latent frames, then theirs; together the whole window
            assert starts[0][0] == 0 and all(a + n - 1 == b for (a, n), (b, _) in zip(starts, starts[1:]))
            assert starts[-1][0] + starts[-1][1] == shape[2]


def test_router_scores_of_other_bases_decode_whole():
    from infotok.cosmos import CosmosConfig
    from infotok.router import score_map

    model = random_infotok(CosmosConfig(channels=4, z_channels=16))
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        codes = model.encode_codes(x)[0]
        assert torch.equal(model.router_scores(x, codes), score_map(x, model.decode_codes(codes), model.geometry))


@pytest.mark.parametrize("shape", [(1, 11, 20, 30), (2, 17, 24, 16), (1, 1, 16, 24)])
def test_uint8_windows_stay_uint8_and_tokenize_as_float(shape):
    """encode keeps uint8 windows as they are (our base and the router convert a chunk at a time, padded
    or not): the same tokens, rates and scores as from to_model's float window."""
    from infotok.video import to_model, unit_range

    model = random_infotok()
    model.base.chunk_pixels = 2 * shape[2] * shape[3]  # two latent frames per chunk
    torch.manual_seed(2)
    video = torch.randint(0, 256, (*shape, 3), dtype=torch.uint8)
    assert torch.equal(unit_range(video.permute(0, 4, 1, 2, 3)), to_model(video))
    for settings in (
        dict(strategy="global_elbo", selection="error", fill="mask"),
        dict(strategy="static", selection="temporal", fill="hold"),
    ):
        a = model.encode(video, 0.5, keep_scores=True, **settings)
        b = model.encode(to_model(video), 0.5, keep_scores=True, **settings)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.rate, b.rate)
        assert (a.score_map - b.score_map).abs().max() < 1e-6 and (a.score - b.score).abs().max() < 1e-9
