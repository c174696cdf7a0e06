"""The token prior and prior-coded `.itok` files: lossless, identical on every CPU kernel, refusing another prior,
and `infotok train prior` (resumable) on shard folders."""

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infotok import entropy
from infotok.entropy import PriorCoder
from infotok.prior import (
    ASKED_ROWS,
    KEPT_BUCKETS,
    PRIOR_FORMAT,
    CodingOrder,
    PriorConfig,
    PriorNet,
    TokenPrior,
    asked_row,
    coded_here,
    context_bits,
    features,
    features_by_frame,
    features_on_lattices,
    frame_features,
    kept_bucket,
    lattice_ok,
    pass_context,
    warm_start,
    window_passes,
    window_states,
)
from infotok.token_file import HEADER_DICTIONARY
from infotok.tokens import TokenFormatError, TokenHeader, Tokens, TokenWindow, check_header, describe
from infotok.video import synthetic_video, write_video

from .conftest import tiny_model
from .test_tokens import MUTATION, assert_self_consistent, layout, load_or_format_error, mutate, sample_tokens

SMALL = dict(channels=8, dilations=[1, 2], pass_dilations=[1])


def random_prior(levels, seed=0, **config) -> TokenPrior:
    torch.manual_seed(seed)
    net = PriorNet(PriorConfig(levels=list(levels), **SMALL | config))
    for p in net.parameters():  # a prior that is far from uniform, so coding is exercised
        torch.nn.init.normal_(p, std=0.3)
    return TokenPrior.from_net(net)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tokens(model, tmp_path_factory) -> Tokens:
    clip = write_video(tmp_path_factory.mktemp("v") / "clip.mp4", synthetic_video(29, 40, 56, seed=4), fps=8)
    return model.tokenize(clip, rate=0.4, window=9, overlap=1)


def same(a: Tokens, b: Tokens) -> bool:
    return len(a.windows) == len(b.windows) and all(
        np.array_equal(x.mask, y.mask) and np.array_equal(x.indices, y.indices) for x, y in zip(a.windows, b.windows)
    )


def test_a_prior_coded_file_decodes_to_the_same_tokens(tmp_path, tokens):
    prior = random_prior(tokens.header.levels)
    path = tokens.save(tmp_path / "a.itok", prior=prior)
    back = Tokens.load(path, prior)
    assert back.header.codec == "prior" and back.header.prior_hash == prior.hash
    assert len(tokens.windows) >= 3 and same(tokens, back)  # windows chained through the previous one's state
    assert back.header.num_frames == tokens.header.num_frames


@pytest.mark.parametrize(
    "held_digits, phase_levels, interleaved", [(False, 1, False), (True, 1, False), (True, 3, False), (True, 2, True)]
)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (2, 4, 4), (5, 6, 3), (2, 9, 13)])
def test_any_window_shape_and_mask_round_trips(shape, held_digits, phase_levels, interleaved):
    prior = random_prior(
        [8, 5, 3], seed=1, held_digits=held_digits, phase_levels=phase_levels, interleaved_masks=interleaved
    )
    rng = np.random.default_rng(sum(shape))
    enc, dec = PriorCoder(prior), PriorCoder(prior)
    for fill in (0.0, 1.0, 0.3, 0.7):  # no token kept, all kept, some: each window continues the last
        mask = rng.random(shape) < fill
        indices = rng.integers(0, 120, int(mask.sum())).astype(np.uint16)
        got_mask, got_indices = dec.decode(enc.encode(mask, indices), shape, int(mask.sum()))
        assert np.array_equal(got_mask, mask) and np.array_equal(got_indices, indices)


def test_the_encoder_batches_latent_frames_in_chunks_of_any_size_to_the_same_bytes(monkeypatch):
    """`walk_known` runs each pass over a chunk of latent frames at once; one frame a chunk, two, or the whole
    window give the same groups, so the same file (and the decoder, frame by frame, reads it)."""
    prior = random_prior([8, 5, 3], seed=2, held_digits=True, phase_levels=2)
    rng = np.random.default_rng(5)
    windows = [rng.random((5, 6, 7)) < fill for fill in (1.0, 0.3, 0.05)]  # continuing windows
    coded = {}
    for chunk in (1, 2, 5):
        monkeypatch.setattr(entropy, "KNOWN_CHUNK_POSITIONS", chunk * 6 * 7)
        enc, dec = PriorCoder(prior, refresh=10), PriorCoder(prior, refresh=10)
        coded[chunk] = []
        for mask in windows:
            indices = np.random.default_rng(int(mask.sum())).integers(0, 120, int(mask.sum()))
            coded[chunk].append(enc.encode(mask, indices))
            assert all(map(np.array_equal, dec.decode(coded[chunk][-1], mask.shape, int(mask.sum())), (mask, indices)))
    assert coded[1] == coded[2] == coded[5]


@pytest.mark.parametrize("pass_dilations, phase_levels", [([1, 2, 4], 1), ([2, 2], 1), ([3], 1), ([1, 2, 4], 2)])
@pytest.mark.parametrize("size", [(6, 8), (7, 5), (1, 3)])
def test_the_coder_computes_each_lattice_alone_to_the_same_integers(pass_dilations, phase_levels, size):
    """`features_on_lattices` (what the coder runs: a third of the work) gives exactly `features` at each stride-2
    lattice's positions, in frames of odd or even size."""
    torch.manual_seed(3)
    config = PriorConfig(
        levels=[8, 5, 3], channels=8, dilations=[1], pass_dilations=pass_dilations, phase_levels=phase_levels
    )
    net = PriorNet(config)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    prior = TokenPrior.from_net(net)
    assert lattice_ok(prior.config)
    rng = np.random.default_rng(4)
    mask = torch.from_numpy(rng.random((2, *size)) < 0.5)
    codes = torch.from_numpy(rng.integers(0, 120, (2, *size)))
    held, age, _, _ = window_states(mask, codes, torch.full(size, -1), torch.zeros(size, dtype=torch.long))
    ctx, _, _, _ = window_passes(config.order, mask, codes, held, age)
    lattices = ((0, 0), (1, 1), (0, 1), (1, 0))
    for row in range(len(ctx.step)):
        one = ctx.select(slice(row, row + 1))
        trunk = frame_features(prior, one)
        whole = features(prior, one, trunk)
        for (dy, dx), on_lattice in zip(lattices, features_on_lattices(prior, one, trunk, lattices)):
            assert torch.equal(on_lattice, whole[..., dy::2, dx::2])


@pytest.mark.parametrize("phase_levels, size", [(1, (6, 8)), (2, (7, 5)), (2, (1, 3))])
def test_the_trainer_runs_each_pass_on_its_lattices_to_the_whole_frames_values_where_it_codes(phase_levels, size):
    """`features_by_frame` (the trainer's and the held-out log's path) runs the float network's pass blocks on the
    lattices a pass codes: at every position a pass codes, the whole frame's features, and their gradients."""
    torch.manual_seed(7)
    config = SMALL | dict(pass_dilations=[1, 2, 4], held_digits=True, phase_levels=phase_levels)
    net = PriorNet(PriorConfig(levels=[8, 5, 3], **config))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    assert lattice_ok(net.config)
    rng = np.random.default_rng(8)
    mask = torch.from_numpy(rng.random((3, *size)) < 0.5)
    codes = torch.from_numpy(rng.integers(0, 120, (3, *size)))
    held, age, _, _ = window_states(mask, codes, torch.full(size, -1), torch.zeros(size, dtype=torch.long))
    ctx, mask_b, _, step = window_passes(net.config.order, mask, codes, held, age)
    trunk = frame_features(net, ctx.select(slice(None, None, net.config.order.passes)))
    whole = features(net, ctx, trunk.repeat_interleave(net.config.order.passes, 0))
    coded = torch.stack(coded_here(net.config.order, step, mask_b)).any(0)[:, None].expand_as(whole)
    on_lattices = features_by_frame(net, ctx)
    assert torch.allclose(on_lattices[coded], whole[coded], atol=1e-5)
    weight = net.layers["pass_a0"].weight
    grads = [torch.autograd.grad(f[coded].square().sum(), weight, retain_graph=True)[0] for f in (whole, on_lattices)]
    assert torch.allclose(*grads, rtol=1e-4, atol=1e-4)


def test_a_prior_whose_later_blocks_read_other_phases_codes_whole_frames():
    torch.manual_seed(5)
    net = PriorNet(PriorConfig(levels=[8, 5, 3], channels=8, dilations=[], pass_dilations=[1, 3]))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    prior = TokenPrior.from_net(net)
    assert not lattice_ok(prior.config)
    mask = np.random.default_rng(6).random((2, 5, 6)) < 0.5
    indices = np.arange(int(mask.sum()), dtype=np.uint16) % 120
    got_mask, got_indices = PriorCoder(prior).decode(PriorCoder(prior).encode(mask, indices), mask.shape, len(indices))
    assert np.array_equal(got_mask, mask) and np.array_equal(got_indices, indices)


def test_kept_bucket_is_exact_integer_arithmetic():
    assert [kept_bucket(k, 9216) for k in (9216, 4608, 4607, 2304, 1, 0)] == [0, 4, 4, 8, 40, 41]
    assert kept_bucket(6518, 9216) == 1  # 9216 / 6518 = 1.41392 > 2 ** 0.25 = 1.18921, < 2 ** 0.5 = 1.41421


def test_windows_must_be_decoded_in_order():
    """A window is coded given the state the one before left: decoding it alone gives other tokens (hence the
    reader decodes a file's windows in order)."""
    prior = random_prior([8, 5, 3], seed=2)
    rng = np.random.default_rng(0)
    mask = rng.random((3, 6, 6)) < 0.5
    indices = rng.integers(0, 120, int(mask.sum())).astype(np.uint16)
    enc = PriorCoder(prior)
    enc.encode(mask, indices)
    second = enc.encode(mask, indices)
    try:
        got_mask, got_indices = PriorCoder(prior).decode(second, mask.shape, int(mask.sum()))
        assert not (np.array_equal(got_mask, mask) and np.array_equal(got_indices, indices))
    except ValueError:
        pass  # or the data runs out: either way not the window that was coded


CODE = """
import hashlib, sys
import numpy as np, torch
from infotok.entropy import PriorCoder, load_prior
prior = load_prior(sys.argv[1])
rng = np.random.default_rng(7)
mask = rng.random((4, 12, 20)) < 0.4
indices = rng.integers(0, 120, int(mask.sum())).astype(np.uint16)
data = PriorCoder(prior).encode(mask, indices)
other = bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else data
m, i = PriorCoder(prior).decode(other, mask.shape, int(mask.sum()))
assert np.array_equal(m, mask) and np.array_equal(i, indices)
print(data.hex())
"""


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_coding_is_identical_across_processes_and_cpu_kernels(tmp_path, capability):
    """Encoder and decoder agree bit for bit whatever float kernels the machine has: another process under
    another ATEN_CPU_CAPABILITY writes the same bytes and decodes this process's."""
    folder = random_prior([8, 5, 3], seed=3).save_pretrained(tmp_path / "prior")
    here = subprocess.run([sys.executable, "-c", CODE, str(folder)], capture_output=True, text=True, check=True)
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
    there = subprocess.run(
        [sys.executable, "-c", CODE, str(folder), here.stdout.strip()], capture_output=True, text=True, env=env
    )
    assert there.returncode == 0, there.stderr[-2000:]
    assert there.stdout == here.stdout


def test_a_file_refuses_another_prior(tmp_path, tokens, monkeypatch):
    prior, other = random_prior(tokens.header.levels, 0), random_prior(tokens.header.levels, 5)
    path = tokens.save(tmp_path / "a.itok", prior=prior)
    with pytest.raises(TokenFormatError, match=f"coded with prior {prior.hash}, but the prior given is {other.hash}"):
        Tokens.load(path, other)
    monkeypatch.setattr(entropy, "SHIPPED_PRIOR", tmp_path / "absent")
    with pytest.raises(TokenFormatError, match=f"prior {prior.hash}, which is not installed; pass"):
        Tokens.load(path)
    other_folder = other.save_pretrained(tmp_path / "installed")
    monkeypatch.setattr(entropy, "SHIPPED_PRIOR", other_folder)  # an installed prior with another hash
    with pytest.raises(TokenFormatError, match="which is not installed"):
        Tokens.load(path)


def test_a_damaged_prior_coded_file_is_refused(tmp_path, tokens):
    prior = random_prior(tokens.header.levels)
    path = tokens.save(tmp_path / "a.itok", prior=prior)
    data = path.read_bytes()
    flipped = [data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :] for i in (20, len(data) - 40)]  # header, a window
    for broken in (data[:-20], data[: len(data) // 2], *flipped):
        (tmp_path / "b.itok").write_bytes(broken)
        with pytest.raises(TokenFormatError):
            Tokens.load(tmp_path / "b.itok", prior)


def test_a_prior_coded_file_is_version_5_a_compressed_header_and_compact_window_heads(tmp_path, tokens):
    prior = random_prior(tokens.header.levels)
    data = tokens.save(tmp_path / "a.itok", prior=prior).read_bytes()
    version, n = struct.unpack_from("<HI", data, 4)
    header = zlib.decompressobj(zdict=HEADER_DICTIONARY).decompress(data[10 : 10 + n])
    assert version == 5 and json.loads(header)["format_version"] == 5 and n < 150
    back = Tokens.load(tmp_path / "a.itok", prior)
    coder = PriorCoder(prior, tokens.header.refresh)  # a record: length, CRC, rate, score, kept, the range code
    assert [w.nbytes for w in back.windows] == [8 + 20 + len(coder.encode(w.mask, w.indices)) for w in tokens.windows]
    for a, b in zip(tokens.windows, back.windows):
        assert (a.start, a.end, a.rate) == (b.start, b.end, b.rate) and np.array_equal(a.score, b.score, equal_nan=True)
    for version in (4, 5):
        with pytest.raises(ValueError, match="prior-coded files only"):
            check_header(TokenHeader(**{**tokens.header.__dict__, "format_version": version}))


def test_tokens_read_from_a_prior_coded_file_are_saved_with_zlib_without_a_prior(tmp_path, tokens):
    prior = random_prior(tokens.header.levels)
    back = Tokens.load(tokens.save(tmp_path / "a.itok", prior=prior), prior)
    assert back.save(tmp_path / "b.itok").read_bytes() == tokens.save(tmp_path / "z.itok").read_bytes()


@pytest.mark.parametrize("name, version", [("independent", 1), ("continuing", 3)])
def test_prior_coded_files_written_before_version_4_still_read(name, version):
    folder = Path(__file__).parent / "data" / "legacy"  # how they were made: make_legacy.py there
    old = Tokens.load(folder / f"{name}-prior.itok", entropy.load_prior(folder / "prior"))
    twin = Tokens.load(folder / f"{name}-zlib.itok")
    assert old.header.format_version == version and old.header.codec == "prior" and same(old, twin)
    assert [(w.start, w.end, w.rate, w.score) for w in old.windows] == [
        (w.start, w.end, w.rate, w.score) for w in twin.windows
    ]


def test_prior_coded_files_of_version_4_still_read_masks_they_coded_for_full_and_empty_windows():
    folder = Path(__file__).parent / "data" / "legacy"  # how they were made: make_legacy.py there
    old = Tokens.load(folder / "implied-masks-prior.itok", entropy.load_prior(folder / "prior"))
    twin = Tokens.load(folder / "implied-masks-zlib.itok")
    assert old.header.format_version == 4 and same(old, twin)
    assert [w.kept / w.mask.size for w in twin.windows][:2] == [1.0, 0.0]


def test_a_prior_coded_file_is_described_without_its_prior_and_refused_when_its_windows_are_read():
    folder = Path(__file__).parent / "data" / "legacy"  # coded with the random prior there, which is not installed
    path, prior = folder / "continuing-prior.itok", entropy.load_prior(folder / "prior")
    described = describe(path)
    assert described == describe(path, prior) and described["prior_hash"] == prior.hash
    twin = describe(folder / "continuing-zlib.itok")
    assert [(w["frames"], w["rate"], w["kept"], w["tokens"]) for w in described["per_window"]] == [
        (w["frames"], w["rate"], w["kept"], w["tokens"]) for w in twin["per_window"]
    ]
    assert sum(w["bytes"] for w in described["per_window"]) == described["window_bytes"]
    with pytest.raises(TokenFormatError, match="which is not installed"):
        Tokens.load(path)


@pytest.mark.parametrize("name", ["format-1", "format-1-unkept"])
def test_files_of_a_format_1_prior_read_with_its_folder_as_it_is_and_after_a_save(name, tmp_path):
    """The first shipped priors' folders (format 1, one set of blocks run each pass) load as format 2's pass blocks;
    their files name the hash of the weights under the old names, which the loaded prior answers to, and so does
    the format-2 folder it saves (the hashes follow from the weights). The very first priors did not read the kept
    fraction ("unkept": coded by such a prior, the same folder less its `kept` table)."""
    from safetensors.torch import load_file, save_file

    folder = Path(__file__).parent / "data" / "legacy"  # how they were made: make_legacy.py there
    prior_folder = folder / "prior-format-1"
    if name == "format-1-unkept":
        prior_folder = tmp_path / "unkept"
        prior_folder.mkdir()
        (prior_folder / "config.json").write_bytes((folder / "prior-format-1" / "config.json").read_bytes())
        weights = load_file(str(folder / "prior-format-1" / "prior.safetensors"))
        save_file({k: v for k, v in weights.items() if k != "table.kept"}, str(prior_folder / "prior.safetensors"))
    prior = entropy.load_prior(prior_folder)
    twin = Tokens.load(folder / "format-1-zlib.itok")
    named = Tokens.load(folder / f"{name}-prior.itok", prior).header.prior_hash
    assert named != prior.hash and named in prior.hashes and prior.hashes[0] == prior.hash
    for loaded in (prior, entropy.load_prior(prior.save_pretrained(tmp_path / "saved"))):
        assert same(Tokens.load(folder / f"{name}-prior.itok", loaded), twin)
    with pytest.raises(TokenFormatError, match=f"coded with prior {named}, but the prior given is"):
        Tokens.load(folder / f"{name}-prior.itok", entropy.load_prior(folder / "prior"))


def test_a_window_that_keeps_every_token_or_none_codes_no_mask():
    """From version 5 on its kept count says its mask: the walk asks for code digits only (none if nothing is
    kept), the file is smaller than version 4's, and both round-trip."""
    prior = random_prior([8, 8, 8, 5, 5, 5])
    rng = np.random.default_rng(0)
    for keep in (np.ones((3, 5, 7), bool), np.zeros((3, 5, 7), bool)):
        indices = rng.integers(0, 64000, int(keep.sum()))
        kinds = []
        PriorCoder(prior).walk_known(keep, indices, lambda probs, true: kinds.append(probs.shape[1]) or true)
        assert 2 not in kinds and len(kinds) == (6 * prior.config.order.phases * 3 if keep.any() else 0)  # 6 digits
        sizes = {}
        for version in (4, 5):
            data = PriorCoder(prior, format_version=version).encode(keep, indices)
            mask, back = PriorCoder(prior, format_version=version).decode(data, keep.shape, int(keep.sum()))
            assert np.array_equal(mask, keep) and np.array_equal(back, indices)
            sizes[version] = len(data)
        assert sizes[5] < sizes[4]


@lru_cache(maxsize=None)
def prior_coded_bytes() -> tuple[bytes, TokenPrior]:
    """`test_tokens`' sample (3 windows) as a version-5 file, and its prior; cached."""
    prior = random_prior(sample_tokens().header.levels)
    with tempfile.TemporaryDirectory() as d:
        return sample_tokens().save(Path(d, "t.itok"), prior=prior).read_bytes(), prior


@settings(max_examples=150, deadline=None)
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_every_change_to_a_prior_coded_file_is_detected(mutations):
    data, prior = prior_coded_bytes()
    changed = mutate(data, mutations)
    assert load_or_format_error(changed, prior) is None or changed == data


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2), st.lists(MUTATION, min_size=1, max_size=3))
def test_prior_coded_record_mutations_behind_a_valid_checksum(k, mutations):
    """Checksums recomputed, so the compact head and the range decoder meet the damage themselves."""
    data, prior = prior_coded_bytes()
    header_end, spans = layout(data)
    records = [data[start + 8 : end] for start, end in spans]  # payloads, after length and CRC
    records[k] = mutate(records[k], mutations)
    forged = data[:header_end] + b"".join(struct.pack("<II", len(r), zlib.crc32(r)) + r for r in records)
    forged += data[spans[-1][1] :]
    assert_self_consistent(load_or_format_error(forged, prior))


def test_the_header_names_a_prior_exactly_when_the_codec_is_prior(tokens):
    check_header(tokens.header)
    for fields in ({"codec": "prior"}, {"prior_hash": "0123456789abcdef"}, {"codec": "brotli"}):
        bad = TokenHeader(**{**tokens.header.__dict__, **fields})
        with pytest.raises(ValueError):
            check_header(bad)


def test_a_1d_file_cannot_be_prior_coded(tmp_path, tokens):
    header = TokenHeader(**{**tokens.header.__dict__, "layout": "1d", "registers": 4, "region": 1})
    one = Tokens(header, [TokenWindow(0, 9, 1.0, 0.0, np.ones((1, 1, 4), bool), np.arange(4, dtype=np.uint16))])
    with pytest.raises(ValueError, match="grid files only"):
        one.save(tmp_path / "x.itok", prior=random_prior(tokens.header.levels))


def test_a_prior_of_other_levels_is_refused(tmp_path, tokens):
    with pytest.raises(ValueError, match="FSQ levels"):
        tokens.save(tmp_path / "x.itok", prior=random_prior([8, 5, 3]))
    assert not (tmp_path / "x.itok").exists()


def random_window(shape=(4, 16, 16), seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.random(shape) < 0.5), torch.from_numpy(rng.integers(0, 120, shape))


def float_bits_by_kind(net: PriorNet, mask: torch.Tensor, codes: torch.Tensor) -> tuple[float, float]:
    """The float network's (mask bits, code bits) of a window that starts its video (what `train prior` logs)."""
    none = torch.full(mask.shape[1:], -1)
    held, age, _, _ = window_states(mask, codes, none, torch.zeros_like(none))
    with torch.no_grad():
        ctx, pass_mask, pass_codes, _ = window_passes(net.config.order, mask, codes, held, age)
        return tuple(float(b) for b in context_bits(net, ctx, pass_mask, pass_codes))


def float_bits(net: PriorNet, mask: torch.Tensor, codes: torch.Tensor) -> float:
    return sum(float_bits_by_kind(net, mask, codes))


def coded_bits(prior: TokenPrior, mask: torch.Tensor, codes: torch.Tensor) -> int:
    return len(PriorCoder(prior).encode(mask.numpy(), codes[mask].numpy().astype(np.uint16))) * 8


@pytest.mark.parametrize("held_digits", [False, True])
def test_the_integer_prior_costs_what_the_float_network_estimates(held_digits):
    """The fixed-point twin codes within 1% of the float network's bits (what `train prior` logs)."""
    torch.manual_seed(0)
    net = PriorNet(PriorConfig(levels=[8, 5, 3], held_digits=held_digits, **SMALL))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    window = random_window()
    estimate = float_bits(net, *window)
    assert abs(coded_bits(TokenPrior.from_net(net), *window) - estimate) < 0.01 * estimate + 64


def test_warm_start_resumes_a_prior_and_may_add_the_held_digit_and_asked_rate_terms():
    """`train prior --init`: the float network starts where the integer prior is, with or without `held_digits` or
    `asked_rate` (whose tables start at 0); any other difference in the network is refused."""
    prior, window = random_prior([8, 5, 3], seed=2), random_window()

    def warm(prior: TokenPrior, **config) -> PriorNet:
        net = PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL | config))
        warm_start(net, prior)
        return net

    plain, held, asked = (
        float_bits(warm(prior, **config), *window) for config in ({}, {"held_digits": True}, {"asked_rate": True})
    )
    assert plain == pytest.approx(held, rel=1e-5) and plain == pytest.approx(asked, rel=1e-5)
    assert abs(coded_bits(prior, *window) - plain) < 0.01 * plain + 64
    with pytest.raises(ValueError, match="does not fit this network"):
        warm(prior, channels=9)
    for config in ({"held_digits": True}, {"asked_rate": True}):  # a network without the terms cannot take them
        with pytest.raises(ValueError, match="does not fit this network"):
            warm(random_prior([8, 5, 3], **config))


def test_warm_start_may_split_phase_0_into_finer_phases():
    """A finer coding order starts from the coarser prior: its mask passes are the same passes, so they cost the
    same bits; a coarser order than the prior's is refused."""
    prior, window = random_prior([8, 5, 3], seed=2), random_window()
    finer = PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL, phase_levels=3))
    warm_start(finer, prior)
    coarse = PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL))
    warm_start(coarse, prior)
    mask_bits = float_bits_by_kind(finer, *window)[0]
    assert mask_bits == pytest.approx(float_bits_by_kind(coarse, *window)[0], rel=1e-5)
    assert float_bits(finer, *window) > 0
    with pytest.raises(ValueError, match="phase_levels differ"):
        warm_start(coarse, TokenPrior.from_net(finer))


def test_warm_start_may_interleave_the_mask_passes_each_pass_from_the_one_that_coded_its_phases():
    prior = random_prior([8, 5, 3], seed=2, phase_levels=2)
    net = PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL, phase_levels=2, interleaved_masks=True))
    warm_start(net, prior)
    new, old = net.config.order, prior.config.order
    rows, old_rows = net.tables["step_phase"].weight.detach(), prior.weights["table.step_phase"] / 2**8
    for step in range(new.passes):
        first = new.pass_phases(step)[0]
        was = next(s for s in range(old.passes) if old.is_mask(s) == new.is_mask(step) and first in old.pass_phases(s))
        assert torch.equal(rows[step * new.phases : (step + 1) * new.phases], old_rows[was * 6 : (was + 1) * 6].float())
    assert float_bits(net, *random_window()) > 0


def test_warm_start_may_add_pass_blocks_that_start_as_the_identity():
    """More pass blocks after the prior's: the network starts coding as the prior does; other dilations for the
    prior's own blocks are refused."""
    prior, window = random_prior([8, 5, 3], seed=2), random_window()
    same = PriorNet(prior.config)
    deeper = PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL | dict(pass_dilations=[1, 2])))
    for net in (same, deeper):
        warm_start(net, prior)
    assert float_bits(deeper, *window) == pytest.approx(float_bits(same, *window), rel=1e-5)
    with pytest.raises(ValueError, match="pass_dilations differ"):
        warm_start(PriorNet(PriorConfig(levels=[8, 5, 3], **SMALL | dict(pass_dilations=[2, 2]))), prior)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_each_coding_order_codes_every_position_once_coarse_to_fine(levels):
    """Every position has one phase; the mask passes split them by checkerboard square, and each code pass codes
    one phase; only phase 0 (every 2**levels-th row and column) is coded before any neighbour at a distance below
    its lattice's step."""
    order = CodingOrder(levels)
    phase = order.phase_map(19, 22)
    y, x = torch.arange(19)[:, None], torch.arange(22)[None, :]
    step = 2**levels
    assert torch.equal(phase == 0, (y % step == 0) & (x % step == 0))
    assert torch.equal(phase < order.even_squares, y % 2 == x % 2)
    assert order.pass_phases(0) + order.pass_phases(1) == tuple(range(order.phases))
    assert [order.pass_phases(s) for s in range(2, order.passes)] == [(p,) for p in range(order.phases)]
    for p in range(1, order.phases):  # a phase on a finer lattice than phase 0 has coded neighbours around it
        rows, cols = torch.nonzero(phase == p, as_tuple=True)
        dy, dx = order.lattice(p)
        assert bool(((rows % 2 == dy) & (cols % 2 == dx)).all())
        earlier = phase < p
        r, c = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
        window = earlier[max(r - step // 2, 0) : r + step // 2 + 1, max(c - step // 2, 0) : c + step // 2 + 1]
        assert bool(window.any())
    assert torch.equal(CodingOrder(1).phase_map(4, 4), torch.tensor([[0, 2, 0, 2], [3, 1, 3, 1]] * 2))


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("interleaved", [False, True])
def test_every_pass_sees_what_earlier_passes_coded_and_codes_each_mask_bit_and_code_once(levels, interleaved):
    """The passes of either order code each position's mask bit once and its code once, after its mask bit; each
    pass is shown exactly what the passes before it coded. Interleaved, the key lattice's codes (even rows and
    columns) come before any other position's mask bit."""
    order = CodingOrder(levels, interleaved)
    mask, codes = torch.rand(1, 9, 10) < 0.6, torch.randint(0, 100, (1, 9, 10))
    held, age = torch.full((1, 9, 10), -1), torch.zeros((1, 9, 10), dtype=torch.long)
    masks_coded, codes_coded = torch.zeros_like(mask[0], dtype=torch.long), torch.zeros_like(mask[0], dtype=torch.long)
    key = order.phase_map(9, 10) < order.phases - 3
    for s in range(order.passes):
        step = torch.tensor([s])
        ctx = pass_context(order, held, age, mask, codes, torch.tensor([0]), step, torch.tensor([0]))
        assert torch.equal(ctx.known_mask[0] > 0, masks_coded > 0)
        assert torch.equal(ctx.known_code[0] >= 0, (codes_coded > 0) & mask[0])
        mask_here, code_here = coded_here(order, step, mask)
        assert bool((masks_coded[code_here[0]] == 1).all())  # a code comes after its mask bit
        if interleaved and bool((mask_here[0] & ~key).any()):
            assert bool((codes_coded[key & mask[0]] == 1).all())
        masks_coded += mask_here[0].long()
        codes_coded += code_here[0].long()
    assert bool((masks_coded == 1).all()) and torch.equal(codes_coded, mask[0].long())
    assert order.passes == order.phases + (3 if interleaved else 2)


def test_a_config_with_an_absurd_phase_level_is_refused():
    for bad in (0, 5, True, 1.0):
        with pytest.raises(ValueError, match="phase_levels"):
            PriorConfig.from_dict({"phase_levels": bad})


def test_train_prior_on_shards_resumes_and_exports_a_prior_that_codes(tmp_path, model):
    from infotok.cli import main
    from infotok.shards import ShardWriter, model_identity

    settings = dict(rate=0.4, strategy="static", selection="error", window=9, overlap=1)
    record = settings | {"size": None, "max_size": None, "seed": 0, "start": 0, "max_frames": None}
    writer = ShardWriter(tmp_path / "shards", model_identity(model), record)
    clips = []
    for seed in range(5):
        clip = write_video(tmp_path / f"c{seed}.mp4", synthetic_video(17, 40, 48, seed=seed), fps=8)
        clips.append(model.tokenize(clip, **settings))
        writer.add_tokens(str(clip), clips[-1])
    writer.close()
    args = ["train", "prior", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "run"), "--quiet"]
    args += ["--prior-config", json.dumps(SMALL), "--log-every", "2", "--batch", "4"]
    assert main(args + ["--steps", "3"]) == 0
    assert main(args + ["--steps", "5", "--resume"]) == 0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,seconds,lr,train_bits_per_symbol,bits_per_code")
    assert [row.split(",")[0] for row in log[1:]] == ["2", "3", "4", "5"]
    info = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert info["trained_steps"] == 5 and info["format"] == PRIOR_FORMAT
    prior = entropy.load_prior(tmp_path / "run" / "model")
    assert prior.hash == info["hash"]
    assert same(clips[0], Tokens.load(clips[0].save(tmp_path / "x.itok", prior=prior), prior))
    assert main(args + ["--steps", "6"]) == 2  # the run exists: neither --resume nor --overwrite
    held = ["--prior-config", json.dumps(SMALL | {"held_digits": True}), "--steps", "2", "--batch", "4", "--quiet"]
    warm = ["train", "prior", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "warm"), *held]
    assert main(warm + ["--init", str(tmp_path / "run" / "model")]) == 0  # fine-tune it, adding the held digits
    assert entropy.load_prior(tmp_path / "warm" / "model").config.held_digits


def test_prior_folder_problems_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prior folder"):
        entropy.load_prior(tmp_path)
    folder = random_prior([8, 5, 3]).save_pretrained(tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"prior": config["prior"] | {"channels": 9}}))
    with pytest.raises(ValueError, match="do not match its config"):
        entropy.load_prior(folder)


def test_the_command_line_encodes_decodes_and_describes_prior_coded_files(
    tmp_path, tiny_checkpoint, sample_video, capsys
):
    from infotok.cli import main

    prior = random_prior(tiny_model().base.levels).save_pretrained(tmp_path / "prior")
    common = ["--checkpoint", str(tiny_checkpoint), "--rate", "0.5", "--window", "9"]
    assert main(["encode", str(sample_video), "-o", str(tmp_path / "z.itok"), *common]) == 0
    coded = ["encode", str(sample_video), "-o", str(tmp_path / "p.itok"), *common, "--entropy", "prior"]
    assert main([*coded, "--prior", str(prior)]) == 0
    assert same(Tokens.load(tmp_path / "z.itok"), Tokens.load(tmp_path / "p.itok", entropy.load_prior(prior)))
    capsys.readouterr()
    assert main(["info", str(tmp_path / "z.itok"), "--prior", str(prior), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == "zlib" and info["prior_coded_token_bytes"] > 0 and info["prior_bpp16"] > 0
    assert main(["info", str(tmp_path / "p.itok"), "--prior", str(prior), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == "prior" and info["prior_hash"] == entropy.load_prior(prior).hash
    assert main(["decode", str(tmp_path / "p.itok"), "-o", str(tmp_path / "p.mp4"), "--checkpoint",
                 str(tiny_checkpoint), "--prior", str(prior)]) == 0  # fmt: skip
    assert main(["decode", str(tmp_path / "p.itok"), "-o", str(tmp_path / "q.mp4"), "--checkpoint",
                 str(tiny_checkpoint)]) == 2  # fmt: skip
    assert "which is not installed" in capsys.readouterr().err
    # info needs no prior: what a file holds and which prior it needs come from its header and record heads
    assert main(["info", str(tmp_path / "p.itok"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == info
    assert main([*coded, "--overwrite", "--prior", str(tmp_path)]) == 2  # not a prior folder
    assert "not a prior folder" in capsys.readouterr().err


def test_sample_draws_seeded_windows_and_continues_a_video(tmp_path, tiny_checkpoint, sample_video, capsys):
    from infotok.cli import main
    from infotok.sample import sample_tokens
    from infotok.video import read_video

    model = tiny_model()
    prior = random_prior(model.base.levels)
    a, b = (sample_tokens(model, prior, windows=2, size=(32, 24), seed=3) for _ in range(2))
    assert same(a, b) and len(a.windows) == 2 and a.header.num_frames == 65
    assert not same(a, sample_tokens(model, prior, windows=2, size=(32, 24), seed=4))
    prompt = model.tokenize(sample_video, max_frames=9, window=9)
    both = sample_tokens(model, prior, windows=3, prompt=prompt, seed=0)
    assert same(Tokens(both.header, both.windows[:1]), prompt) and len(both.windows) == 3
    folder = prior.save_pretrained(tmp_path / "prior")
    args = ["sample", "-o", str(tmp_path / "s.mp4"), "--checkpoint", str(tiny_checkpoint), "--prior", str(folder)]
    assert main([*args, "--size", "32x24", "--tokens", str(tmp_path / "s.itok")]) == 0
    frames, _ = read_video(tmp_path / "s.mp4")
    assert frames.shape[:3] == (65, 24, 32) and len(Tokens.load(tmp_path / "s.itok", prior).windows) == 2
    assert main([*args, "--overwrite", "--video", str(sample_video)]) == 2  # 21 frames: no whole window
    assert "a continuation needs a whole window of 33" in capsys.readouterr().err
    longer = write_video(tmp_path / "long.mp4", synthetic_video(40, 24, 32, seed=2), fps=8)
    assert main([*args, "--overwrite", "--video", str(longer)]) == 0
    assert "after the first window of" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--overwrite", "--size", "30x24"])


def test_the_shipped_prior_has_its_log_recipe_and_codes_the_shipped_models_tokens_tightly(tmp_path):
    """The installed prior: trained (log and recipe beside it), named by the hash in its config, lossless on the
    shipped checkpoint's tokens of a clip none of them saw, and well under the zlib file at the same tokens."""
    import csv

    from infotok.model import InfoTok
    from infotok.video import read_video, resize_and_crop

    from .conftest import shared_videos

    folder = entropy.SHIPPED_PRIOR
    info = json.loads((folder / "config.json").read_text())
    with open(folder / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert (
        info["trained_steps"] == int(rows[-1]["step"]) > 0
        and "infotok train prior" in (folder / "TRAINING.md").read_text()
    )
    prior = entropy.load_prior()
    assert prior.hash == info["hash"] and prior.config.continuing  # it codes what `infotok encode` writes
    # the list of every shipped prior, which files coded before an upgrade are decoded by, names this one
    assert f"| {prior.hash} |" in (Path(__file__).parents[1] / "docs" / "PRIOR.md").read_text()
    frames, _ = read_video(shared_videos()[0], max_frames=65)
    tokens = InfoTok.from_pretrained().tokenize(resize_and_crop(frames, 128), rate=0.5)
    assert tokens.header.refresh > 1  # two windows, the second continuing the first
    zlib_bytes = tokens.save(tmp_path / "z.itok").stat().st_size
    prior_bytes = tokens.save(tmp_path / "p.itok", prior=prior).stat().st_size
    assert same(tokens, Tokens.load(tmp_path / "p.itok")) and prior_bytes < 0.8 * zlib_bytes


@pytest.fixture(scope="module")
def calibrated():
    return tiny_model(predictor=True)  # hold thresholds calibrated: windows can continue each other


def continuing_tokens(model, folder, seed: int) -> Tokens:
    clip = write_video(folder / f"long{seed}.mp4", synthetic_video(41, 40, 48, seed=seed), fps=8)
    tokens = model.tokenize(clip, rate=0.4, selection="drift", fill="hold", window=9, overlap=1, refresh=3)
    assert tokens.header.refresh == 3 and len(tokens.windows) == 5
    return tokens


def test_a_continuing_prior_tells_continuing_windows_apart_and_codes_them_losslessly(tmp_path, calibrated):
    tokens = continuing_tokens(calibrated, tmp_path, seed=1)
    levels = tokens.header.levels
    torch.manual_seed(0)
    net = PriorNet(PriorConfig(levels=list(levels), continuing=True, **SMALL))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    continuing, plain = TokenPrior.from_net(net), random_prior(levels)

    def window_bytes(prior, refresh):
        coder = PriorCoder(prior, refresh)
        return [coder.encode(w.mask, w.indices) for w in tokens.windows]

    # windows 1, 2, 4 continue the one before: only a prior with the row codes them otherwise
    a, b = window_bytes(continuing, 3), window_bytes(continuing, 1)
    assert [x == y for x, y in zip(a, b)] == [True, False, False, True, False]
    assert window_bytes(plain, 3) == window_bytes(plain, 1)
    assert same(tokens, Tokens.load(tokens.save(tmp_path / "c.itok", prior=continuing), continuing))
    # `infotok info --prior` on the zlib file counts what the prior-coded file's windows take: continuing ones too
    estimate = describe(tokens.save(tmp_path / "z.itok"), continuing)["prior_coded_token_bytes"]
    assert estimate == sum(map(len, a))


def test_asked_row_is_the_headers_rd_rate_bucket_and_whether_its_windows_continue(tokens):
    rd = replace(tokens.header, strategy="rd", refresh=1)
    rows = [asked_row(replace(rd, avg_rate=r)) for r in (1.0, 0.5, 0.25, 0.125)]
    assert rows == [1, 5, 9, 13]  # 1 + the quarter-octave bucket (`kept_bucket`)
    assert asked_row(replace(rd, avg_rate=0.125, refresh=10)) == 13 + KEPT_BUCKETS + 2  # a chain's thresholds
    assert asked_row(replace(rd, strategy="static")) == 0  # another strategy's rates say nothing of a threshold
    assert 0 < asked_row(replace(rd, avg_rate=2**-20, refresh=3)) < ASKED_ROWS


def test_an_asked_rate_prior_codes_by_the_files_asked_rate_losslessly(tmp_path, calibrated):
    tokens = continuing_tokens(calibrated, tmp_path, seed=1)
    asked, plain = random_prior(tokens.header.levels, asked_rate=True), random_prior(tokens.header.levels)

    def window_bytes(prior, rate):
        coder = PriorCoder(prior, 3, asked=asked_row(replace(tokens.header, avg_rate=rate)))
        return [coder.encode(w.mask, w.indices) for w in tokens.windows]

    assert tokens.header.strategy == "rd"
    assert window_bytes(asked, 0.4) != window_bytes(asked, 0.1)
    assert window_bytes(plain, 0.4) == window_bytes(plain, 0.1)
    assert same(tokens, Tokens.load(tokens.save(tmp_path / "a.itok", prior=asked), asked))


def test_train_prior_on_itok_folders_learns_which_windows_continue(tmp_path, calibrated):
    from infotok.cli import main
    from infotok.train_prior import TokenWindows

    folder = tmp_path / "itok"
    clips = [continuing_tokens(calibrated, tmp_path, seed) for seed in range(4)]
    for seed, tokens in enumerate(clips):
        tokens.save(folder / f"long{seed}.itok")
    data = TokenWindows([str(folder)], held_out=1, crop=32)
    assert [w["continues"] for w in data.sets["validation"]] == [False, True, True, False, True]
    assert {w["asked"] for w in data.sets["validation"]} == {asked_row(clips[-1].header)}
    args = ["train", "prior", "--shards", str(folder), "--out", str(tmp_path / "run"), "--quiet", "--steps", "3"]
    config = SMALL | {"continuing": True, "asked_rate": True}
    assert main(args + ["--prior-config", json.dumps(config), "--batch", "4"]) == 0
    prior = entropy.load_prior(tmp_path / "run" / "model")
    assert prior.config.continuing and prior.config.asked_rate
    assert same(clips[0], Tokens.load(clips[0].save(tmp_path / "x.itok", prior=prior), prior))
