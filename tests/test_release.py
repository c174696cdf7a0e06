"""The release's networks (`infotok.cosmos`) and converters (`infotok.convert`).

Parity: `tests/data/release/` holds a reduced-size release checkpoint with random weights and the
outputs of the release's own code on one clip (see the README there). The full-size architecture is
checked on the meta device (parameter count, key names and shapes), which costs no memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from infotok.cli import main
from infotok.convert import (
    ConversionError,
    convert_cosmos_jit,
    convert_release,
    expected_shapes,
    infer_configs,
    map_state,
    our_names,
    release_name,
)
from infotok.cosmos import (
    CosmosConfig,
    CosmosTokenizer,
    ReleaseCompressorConfig,
    haar_patch,
    haar_unpatch,
    parameter_count,
    release_stacks,
    zero_code_index,
)
from infotok.model import InfoTok
from infotok.tokens import Tokens
from infotok.video import read_video, synthetic_video, write_video

from .conftest import RELEASE_FILE

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # the JIT tests script modules
DATA = RELEASE_FILE.parent


@pytest.fixture(scope="module")
def reference():
    return load_file(str(DATA / "reference.safetensors"))


def _modules(model: InfoTok):
    """(config, base, compressor, decompressor) of a converted model loaded through `InfoTok`."""
    return model.config_dict(), model.base, model.compressor, model.decompressor


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = convert_release(RELEASE_FILE, tmp_path_factory.mktemp("conv") / "tiny-release")
    model = InfoTok.from_pretrained(out)
    return out, _modules(model) + (model,)


@pytest.fixture(scope="module")
def outputs(converted, reference):
    """Our networks on the fixture's clip, loaded through `InfoTok`: every intermediate the fixture has."""
    _, (_, base, comp, dec, model) = converted
    torch.manual_seed(0)
    x = reference["video_uint8"].float() / 127.5 - 1
    with torch.no_grad():
        h = base.encode_features(x)
        hc = comp(h)
        codes, indices = base.quantize(hc)
        f = base.features_from_codes(base.codes_from_indices(indices))
        fd = dec(f)
        full = base.decode_features(fd)
        partial = model.decode_codes(codes, reference["keep_mask"].bool())  # dropped = the all-zero code
    return dict(
        encoder_z=h,
        compressor_out=hc,
        codes=codes,
        indices=indices,
        decompressor_in=f,
        decompressor_out=fd,
        recon_full=full,
        recon_partial=partial,
    )


def _uint8_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()).abs() * 127.5).mean())


# ------------------------------------------------------------------------------------ parity
def test_release_parity_indices(outputs, reference):
    equal = (outputs["indices"] == reference["indices"]).float().mean().item()
    assert equal >= 0.999, f"only {equal:.4%} of FSQ indices match the release"
    assert reference["indices"].unique().numel() > 50  # the fixture spreads over the grid


def test_release_parity_full_decode(outputs, reference):
    assert outputs["recon_full"].shape == reference["recon_full"].shape
    assert _uint8_levels(outputs["recon_full"], reference["recon_full"]) < 0.5


def test_release_parity_rate_half_decode(outputs, reference):
    """The release's own rate-0.5 path (ELBO router, error selection) decodes dropped tokens as code 0."""
    assert int(reference["keep_mask"].sum()) == reference["keep_mask"].numel() // 2
    assert _uint8_levels(outputs["recon_partial"], reference["recon_rate_0.5"]) < 0.5


def test_release_parity_batch_odd_sizes(converted, reference):
    """A batch of two 5-frame 24x40 clips: latent grid 2 x 3 x 5 (odd sizes), full rate."""
    _, (_, base, comp, dec, _) = converted
    x = reference["video2_uint8"].float() / 127.5 - 1
    with torch.no_grad():
        codes, indices = base.quantize(comp(base.encode_features(x)))
        y = base.decode_features(dec(base.features_from_codes(codes)))
    assert indices.shape == reference["indices2"].shape == (2, 2, 3, 5)
    assert (indices == reference["indices2"]).float().mean().item() >= 0.999
    assert _uint8_levels(y, reference["recon2_full"]) < 0.5


@pytest.mark.parametrize("name", ["encoder_z", "compressor_out", "decompressor_in", "decompressor_out"])
def test_release_parity_features(outputs, reference, name):
    ref = reference[name]
    assert torch.allclose(outputs[name], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max())), name


def test_converted_config(converted):
    out, _ = converted
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "infotok-checkpoint" and config["version"] == 1
    assert config["base"]["kind"] == "cosmos" and config["compressor"]["kind"] == "release"
    assert config["dropped"] == "zero_code" and config["score_mean"] == 0.0
    assert config["base"]["channels"] == 6 and config["compressor"]["heads"] == 3
    assert len(config["source"]["sha256"]) == 64
    state = load_file(str(out / "model.safetensors"))
    assert state["score_mean"].shape == () and float(state["score_mean"]) == 0.0
    assert {k.split(".")[0] for k in state} == {"base", "compressor", "decompressor", "score_mean"}
    assert CosmosConfig.from_dict(config["base"]) == CosmosConfig(channels=6, z_channels=24)


def test_ema_weights(tmp_path):
    out = convert_release(RELEASE_FILE, tmp_path / "ema", ema=True)
    state = load_file(str(out / "model.safetensors"))
    model = torch.load(RELEASE_FILE, weights_only=True)["model"]
    ema = {k[len("ema.network-") :].replace("-", "."): v for k, v in model.items() if k.startswith("ema.")}
    assert ema
    for key, value in ema.items():
        for ours in our_names(key):
            assert torch.equal(state[ours], value.float()), key
    assert json.loads((out / "config.json").read_text())["source"]["weights"] == "ema"


# ------------------------------------------------------------------------- full architecture
def test_full_parameter_count():
    with torch.device("meta"):
        base = CosmosTokenizer()
        comp, dec = release_stacks(ReleaseCompressorConfig())
        everything = nn.ModuleDict(dict(base=base, compressor=comp, decompressor=dec))
    assert parameter_count(everything) == 123_142_646  # InfoTok-Flex
    assert parameter_count(base) == 112_619_766  # the Cosmos DV4x8x8 base alone
    assert json.loads((DATA / "release_full_keys.json").read_text())["parameter_count"] == 123_142_646


def test_full_key_set_matches_release():
    keys = json.loads((DATA / "release_full_keys.json").read_text())
    state = {
        k: torch.empty(shape, device="meta")
        for k, shape in keys["network"].items()
        if not k.startswith("quantizer.") and k not in ("save_loss", "ema_loss")
    }
    base, comp = infer_configs(state, "release", heads=32)
    assert base == CosmosConfig() and comp == ReleaseCompressorConfig()
    mapped = map_state(state, base, comp, "release")  # raises on any missing / unexpected / mis-shaped key
    expected = expected_shapes(base, comp)
    assert set(mapped) == set(expected)
    assert all(tuple(mapped[k].shape) == expected[k] for k in expected)
    assert all(release_name(our_names(k)[0]) == k for k in state)
    # the EMA half names exactly the parameters
    assert set(keys["parameters"]) == set(state)


def test_default_heads_assumption():
    keys = json.loads((DATA / "release_full_keys.json").read_text())
    state = {
        k: torch.empty(s, device="meta")
        for k, s in keys["network"].items()
        if k == "temporal_embed"
        or k.startswith(("vit_encoder.0.mlp", "encoder.conv_in", "encoder.down", "encoder.conv_out", "quant_conv"))
    }
    assert infer_configs(state, "release")[1].heads == 32


# ------------------------------------------------------------------------------ behaviour
def test_haar_round_trip():
    x = torch.randn(2, 3, 9, 16, 24)
    y = haar_patch(x)
    assert y.shape == (2, 24, 5, 8, 12)
    assert torch.allclose(haar_unpatch(y), x, atol=1e-5)


def test_grid_errors():
    model = CosmosTokenizer(CosmosConfig(channels=4, z_channels=16))
    for shape in [(1, 3, 8, 16, 16), (1, 3, 9, 12, 16), (1, 1, 9, 16, 16)]:
        with pytest.raises(ValueError):
            model.encode_features(torch.zeros(shape))


def test_causal(converted):
    _, (_, base, comp, _, _) = converted
    torch.manual_seed(1)
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    y = x.clone()
    y[:, :, 5:] = torch.rand_like(y[:, :, 5:])  # frames 5.. feed latent frame 2 only
    with torch.no_grad():
        a, b = comp(base.encode_features(x)), comp(base.encode_features(y))
        assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-5)
        assert not torch.allclose(a[:, :, 2:], b[:, :, 2:], atol=1e-3)
        f = torch.randn(1, 24, 3, 2, 2)
        g = f.clone()
        g[:, :, 2:] += 1
        da, db = base.decode_features(f), base.decode_features(g)
        assert torch.allclose(da[:, :, :5], db[:, :, :5], atol=1e-5)


def test_space_up_sampling_by_phases():
    """HybridUp's spatial step (four 2x2 convolutions on the low-resolution grid) = nearest 2x up-sampling,
    3x3 convolution with zero padding, residual, 1x1x1 mix."""
    from infotok.cosmos import HybridUp

    torch.manual_seed(4)
    up = HybridUp(6, space=True, time=False)
    x = torch.randn(2, 6, 3, 5, 7)
    with torch.no_grad():
        u = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        expected = up.mix(up.spatial(u) + u)
        assert torch.allclose(up(x), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 17, 24, 40), (1, 3, 1, 16, 16), (1, 3, 5, 16, 16), (1, 3, 13, 16, 8)])
def test_streamed_equals_whole(shape):
    """The encoder and decoder run their full-resolution levels in chunks of latent frames (for
    memory): any chunk size gives the whole pass's outputs, up to rounding, and gradients flow."""
    torch.manual_seed(3)
    model = CosmosTokenizer(CosmosConfig(channels=8, z_channels=16)).eval()
    x = torch.rand(shape) * 2 - 1
    outs = {}
    for chunk in (100, 1, 2, 3):
        model.encoder.chunk = model.decoder.chunk = chunk
        with torch.no_grad():
            h = model.encode_features(x)
            outs[chunk] = h, model.decode_features(h)
    for chunk in (1, 2, 3):
        for ours, whole in zip(outs[chunk], outs[100]):
            assert ours.shape == whole.shape
            assert torch.allclose(ours, whole, atol=1e-5), chunk
    model.encoder.chunk = model.decoder.chunk = 1
    model.decode_features(model.encode_features(x)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_fsq_matches_release_formula():
    """vector-quantize-pytorch's FSQ = the release's: tanh bound, round half to even, index order."""
    model = CosmosTokenizer(CosmosConfig(channels=4, z_channels=16))
    torch.manual_seed(2)
    z = torch.randn(2, 6, 3, 4, 5) * 2
    z[0, :, 0, 0, 0] = torch.tensor([0.0, 10.0, -10.0, 0.3, -0.3, 0.5])
    codes, indices = model.fsq(z)
    levels = torch.tensor([8, 8, 8, 5, 5, 5.0]).view(1, 6, 1, 1, 1)
    half_l = (levels - 1) * 1.001 / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    q = torch.round(torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset)
    half = torch.div(levels, 2, rounding_mode="floor")
    digits = q + half
    basis = torch.tensor([1, 8, 64, 512, 2560, 12800.0]).view(1, 6, 1, 1, 1)
    assert torch.equal(codes, q / half)
    assert torch.equal(indices.long(), (digits * basis).sum(1).long())


def test_zero_code():
    model = CosmosTokenizer(CosmosConfig(channels=4, z_channels=16))
    assert zero_code_index() == 32036
    assert torch.equal(model.codes_from_indices(torch.full((1, 1, 1, 1), 32036)), torch.zeros(1, 6, 1, 1, 1))


def test_bf16_autocast_keeps_fsq_fp32(converted, reference):
    _, (_, base, comp, dec, _) = converted
    x = reference["video_uint8"][:, :, :5, :32, :32].float() / 127.5 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        codes, indices = base.quantize(comp(base.encode_features(x)))
        y = base.decode_features(dec(base.features_from_codes(codes)))
    assert codes.dtype == torch.float32 and indices.dtype == torch.long
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()


# ---------------------------------------------------------------------------- refusals
def _one_line_error(call, *words):
    with pytest.raises(ConversionError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def _nothing_written(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _release_dict() -> dict:
    return torch.load(RELEASE_FILE, weights_only=True)


class NotATensor:
    def __init__(self):
        self.value = 1


def test_refuses_pickled_code(tmp_path):
    obj = _release_dict()
    obj["trainer"] = NotATensor()
    src = tmp_path / "pickled.pt"
    torch.save(obj, src)
    out = tmp_path / "out"
    _one_line_error(lambda: convert_release(src, out), "pickled code", "NotATensor")
    _nothing_written(out)


def test_refuses_unreadable_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(RELEASE_FILE.read_bytes()[:1000])
    for src in (text, cut, tmp_path / "absent.pt"):
        out = tmp_path / f"out-{src.stem}"
        _one_line_error(lambda: convert_release(src, out), src.name)
        _nothing_written(out)


@pytest.mark.parametrize(
    "edit, words",
    [
        ("missing", ["missing key", "network.encoder.mid.block_1.conv1.0.conv3d.weight"]),
        ("extra", ["unexpected key", "network.encoder.mid.block_3.conv1.0.conv3d.weight"]),
        ("shape", ["network.decoder.conv_in.1.conv3d.weight", "shape"]),
        ("ema", ["missing key", "ema.network-vit_decoder-1-mlp-w2-weight"]),
        ("foreign", ["unexpected key", "optimizer.state"]),
    ],
)
def test_refuses_mismatched_keys(tmp_path, edit, words):
    obj = _release_dict()
    model = obj["model"]
    if edit == "missing":
        del model["network.encoder.mid.block_1.conv1.0.conv3d.weight"]
    elif edit == "extra":
        model["network.encoder.mid.block_3.conv1.0.conv3d.weight"] = torch.zeros(3)
    elif edit == "shape":
        w = model["network.decoder.conv_in.1.conv3d.weight"]
        model["network.decoder.conv_in.1.conv3d.weight"] = torch.zeros(w.shape[0], w.shape[1], 1, 1, 1)
    elif edit == "ema":
        del model["ema.network-vit_decoder-1-mlp-w2-weight"]
    else:
        model["optimizer.state"] = torch.zeros(1)
    src = tmp_path / "edited.pt"
    torch.save(obj, src)
    out = tmp_path / "out"
    _one_line_error(lambda: convert_release(src, out, ema=edit == "ema"), *words)
    _nothing_written(out)


def test_refuses_occupied_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_line_error(lambda: convert_release(RELEASE_FILE, out), "not an empty folder")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --------------------------------------------------------------------------- Cosmos JIT
def _holder(tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A module tree whose state-dict names are exactly `tensors`' keys."""

    class Node(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Node()
    for key, value in tensors.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, Node())
            node = getattr(node, part)
        if value.is_floating_point() and "patcher" not in key and "quantizer" not in key:
            node.register_parameter(leaf, nn.Parameter(value.float()))
        else:
            node.register_buffer(leaf, value)
    return root


def _jit_folder(folder: Path) -> Path:
    """encoder.jit / decoder.jit laid out as Cosmos-Tokenizer's (encoder_jit / decoder_jit Sequentials)."""
    network = {k[len("network.") :]: v for k, v in _release_dict()["model"].items() if k.startswith("network.")}
    quantizer = {k[len("quantizer.") :]: v for k, v in network.items() if k.startswith("quantizer.")}
    haar = torch.full((2,), 2**-0.5)
    enc = {k: v for k, v in network.items() if k.startswith(("encoder.", "quant_conv."))}
    enc |= {f"quantizer.{k}": v for k, v in quantizer.items()}
    enc |= {
        "encoder.patcher3d.wavelets": haar,
        "encoder.patcher3d._arange": torch.arange(2),
        "encoder.patcher3d.patch_size_buffer": torch.tensor([2], dtype=torch.int32),
    }
    dec = {k: v for k, v in network.items() if k.startswith(("decoder.", "post_quant_conv."))}
    dec |= {f"inv_quant.quantizer.{k}": v for k, v in quantizer.items()}
    dec |= {"decoder.unpatcher3d.wavelets": haar, "decoder.unpatcher3d._arange": torch.arange(2)}
    folder.mkdir()
    torch.jit.save(torch.jit.script(_holder(enc)), str(folder / "encoder.jit"))
    torch.jit.save(torch.jit.script(_holder(dec)), str(folder / "decoder.jit"))
    return folder


def test_cosmos_jit(tmp_path, converted):
    src = _jit_folder(tmp_path / "Cosmos-Tokenizer-tiny")
    out = convert_cosmos_jit(src, tmp_path / "base")
    config = json.loads((out / "config.json").read_text())
    assert config["compressor"] is None and config["base"]["kind"] == "cosmos"
    assert set(config["source"]["sha256"]) == {"encoder.jit", "decoder.jit"}
    state = load_file(str(out / "model.safetensors"))
    release_state = load_file(str(converted[0] / "model.safetensors"))
    base_keys = {k for k in release_state if k.startswith("base.")}
    assert set(state) == base_keys | {"score_mean"}
    assert all(torch.equal(state[k], release_state[k]) for k in base_keys)


def test_cosmos_jit_missing_file(tmp_path):
    src = _jit_folder(tmp_path / "cosmos")
    (src / "decoder.jit").unlink()
    out = tmp_path / "out"
    _one_line_error(lambda: convert_cosmos_jit(src, out), "missing decoder.jit")
    _nothing_written(out)


def test_cosmos_jit_bad_wavelet(tmp_path):
    src = _jit_folder(tmp_path / "cosmos")
    encoder = torch.jit.load(str(src / "encoder.jit"))
    with torch.no_grad():
        encoder.encoder.patcher3d.wavelets.fill_(1.0)  # the "rearrange" patcher, not Haar
    torch.jit.save(encoder, str(src / "encoder.jit"))
    out = tmp_path / "out"
    _one_line_error(lambda: convert_cosmos_jit(src, out), "encoder.patcher3d.wavelets", "Haar")
    _nothing_written(out)


# -------------------------------------------------------------------- through every command
def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_converted_release_round_trips_through_the_cli_bit_for_bit(tmp_path, capsys):
    code, out, _ = _cli(capsys, "convert", RELEASE_FILE, "-o", tmp_path / "release")
    assert code == 0 and "infotok calibrate" in out
    video = write_video(tmp_path / "clip.mp4", synthetic_video(13, 40, 48, seed=4), fps=12)
    settings = [
        "--rate",
        "0.5",
        "--strategy",
        "static",
        "--window",
        "9",
        "--overlap",
        "4",
        "--checkpoint",
        tmp_path / "release",
    ]
    assert _cli(capsys, "encode", video, "-o", tmp_path / "t.itok", *settings)[0] == 0
    assert (
        _cli(
            capsys,
            "decode",
            tmp_path / "t.itok",
            "-o",
            tmp_path / "dec.mp4",
            "--lossless",
            "--checkpoint",
            tmp_path / "release",
        )[0]
        == 0
    )
    assert _cli(capsys, "reconstruct", video, "-o", tmp_path / "rec.mp4", "--lossless", *settings)[0] == 0
    decoded, reconstructed = read_video(tmp_path / "dec.mp4")[0], read_video(tmp_path / "rec.mp4")[0]
    assert decoded.shape == (13, 40, 48, 3) and np.array_equal(decoded, reconstructed)
    tokens = Tokens.load(tmp_path / "t.itok")
    assert tokens.ledger().realized_rate == pytest.approx(0.5, abs=0.02) and tokens.header.model == "release"
    # calibration writes the mean global_elbo needs into a copy of the converted checkpoint
    code, out, _ = _cli(
        capsys,
        "calibrate",
        video,
        "--size",
        "40",
        "--frames",
        "9",
        "--checkpoint",
        tmp_path / "release",
        "-o",
        tmp_path / "calibrated",
    )
    assert code == 0 and float(InfoTok.from_pretrained(tmp_path / "calibrated").score_mean) > 0
    assert json.loads((tmp_path / "calibrated" / "config.json").read_text())["source"]["kind"] == "infotok-release"


@pytest.mark.parametrize("case", ["pickle", "missing key", "extra key", "wrong shape", "jit folder"])
def test_convert_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case):
    obj = _release_dict()
    network = [k for k in obj["model"] if k.startswith("network.")]
    if case == "pickle":
        obj["trainer"] = NotATensor()
    elif case == "missing key":
        del obj["model"][network[3]]
    elif case == "extra key":
        obj["model"]["network.encoder.extra.weight"] = torch.zeros(2)
    elif case == "wrong shape":
        obj["model"][network[3]] = torch.zeros(7, 7)
    src = tmp_path / "src.pt"
    if case == "jit folder":
        src = _jit_folder(tmp_path / "cosmos")
        (src / "encoder.jit").unlink()
    else:
        torch.save(obj, src)
    code, _, err = _cli(capsys, "convert", src, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("infotok: error: ")
    _nothing_written(tmp_path / "out")
