"""The base tokenizer and the router work a few latent frames at a time (for memory); any chunk size
gives what the whole-window computation gives, up to float rounding, and training keeps its gradients."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from infotok.base import BaseConfig, CausalConvTokenizer
from infotok.geometry import Geometry
from infotok.router import token_errors

SHAPES = [(1, 3, 1, 16, 24), (2, 3, 5, 24, 40), (1, 3, 33, 16, 8)]


def whole_encode(m: CausalConvTokenizer, x: torch.Tensor) -> torch.Tensor:
    """The whole-window encoder the chunked one replaced."""
    x = torch.cat([x[:, :, :1].expand(-1, -1, 3, -1, -1), x], dim=2)
    n = x.shape[2] // 4
    y = m.enc_in(F.pixel_unshuffle(rearrange(x, "b c (n f) h w -> (b n) (c f) h w", f=4), 4))
    y = m.enc_lo(m.enc_down(F.pixel_unshuffle(m.enc_hi(y, n), 2)), n)
    return rearrange(y, "(b n) c h w -> b c n h w", n=n)


def whole_decode(m: CausalConvTokenizer, h: torch.Tensor) -> torch.Tensor:
    n = h.shape[2]
    y = m.dec_lo(rearrange(h, "b c n h w -> (b n) c h w"), n)
    y = m.dec_hi(F.pixel_shuffle(m.dec_up(y), 2), n)
    y = F.pixel_shuffle(m.dec_out(F.silu(y)), 4)
    return rearrange(y, "(b n) (c f) h w -> b c (n f) h w", n=n, f=4)[:, :, 3:]


def whole_token_errors(x, x_hat, power=1):
    err = (x.float() - x_hat.float()).abs() ** power
    err = err.mean(dim=1)
    first = F.avg_pool2d(err[:, :1], 8)
    if err.shape[1] == 1:
        return first
    return torch.cat([first, F.avg_pool3d(err[:, 1:].unsqueeze(1), (4, 8, 8)).squeeze(1)], dim=1)


def random_model() -> CausalConvTokenizer:
    """Small widths, random non-zero weights everywhere (the residual branches start at zero)."""
    torch.manual_seed(0)
    m = CausalConvTokenizer(
        BaseConfig(
            enc_hi=8, enc_lo=16, enc_hi_blocks=2, enc_lo_blocks=1, dec_hi=8, dec_lo=16, dec_hi_blocks=2, dec_lo_blocks=1
        )
    )
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m.eval()


@pytest.mark.parametrize("shape", SHAPES)
def test_chunked_equals_whole_window(shape):
    m = random_model()
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        h_ref = whole_encode(m, x)
        f = torch.randn_like(h_ref)
        y_ref = whole_decode(m, f)
        for pixels in (1, shape[-1] * shape[-2] * 2, 1 << 30):  # one, two, all latent frames per chunk
            m.chunk_pixels = pixels
            h, y = m.encode_features(x), m.decode_features(f)
            assert h.shape == h_ref.shape and y.shape == y_ref.shape == x.shape
            assert (h - h_ref).abs().max() < 1e-5 and (y - y_ref).abs().max() < 1e-5, pixels


def test_with_grad_one_chunk_and_gradients_flow():
    m = random_model()
    m.chunk_pixels = 1
    x = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    h = m.encode_features(x)
    y = m.decode_features(h)
    with torch.no_grad():
        assert (h - whole_encode(m, x)).abs().max() < 1e-5
        assert (y - whole_decode(m, h)).abs().max() < 1e-5
    y.square().mean().backward()
    used = [p for name, p in m.named_parameters() if name.startswith(("enc_", "dec_"))]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in used)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("power", [1, 2])
def test_token_errors_by_chunks(shape, power):
    torch.manual_seed(1)
    x, x_hat = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    ref = whole_token_errors(x, x_hat, power)
    for pixels in (1, shape[-1] * shape[-2] * 8, 1 << 30):
        out = token_errors(x, x_hat, Geometry(), power, chunk_pixels=pixels)
        assert out.shape == ref.shape and (out - ref).abs().max() < 1e-6
