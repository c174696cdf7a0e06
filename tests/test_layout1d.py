"""The 1D layout end to end with the shipped infotok-1d checkpoint: tokens you can cut, v2 files, the CLI."""

import json

import numpy as np
import pytest
import torch

from infotok import InfoTok
from infotok.cli import main
from infotok.layout1d import InfoTok1D, share_tokens, source_stream
from infotok.metrics import psnr
from infotok.tokens import FORMAT_VERSION_1D, TokenFormatError, TokenReader, Tokens
from infotok.video import read_video, resize_and_crop, synthetic_video, write_video

from .conftest import SHARED_VIDEOS

EVAL_VIDEOS = sorted(SHARED_VIDEOS.glob("*.mp4"))


@pytest.fixture(scope="module")
def model() -> InfoTok1D:
    return InfoTok.from_pretrained(layout="1d")


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return synthetic_video(40, 64, 128, seed=3)  # two windows (33 + 8 frames), two 64x64 regions


@pytest.fixture(scope="module")
def tokens(model, video) -> Tokens:
    return model.tokenize(video, fps=25.0)


def test_a_window_is_one_sequence_of_registers_times_regions(model, tokens):
    assert [(w.start, w.end, w.kept) for w in tokens.windows] == [(0, 33, 128), (32, 40, 128)]
    assert tokens.header.layout == "1d" and tokens.header.format_version == FORMAT_VERSION_1D
    assert tokens.ledger().total == 2 * 9 * 8 * 16 and not tokens.ledger().masked
    assert "1D layout" in repr(tokens)


def test_a_cut_equals_encoding_fewer_tokens(model, video, tokens):
    fewer = model.tokenize(video, tokens=5, fps=25.0)
    cut = tokens.truncate(5)
    for a, b in zip(fewer.windows, cut.windows):
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.mask, b.mask)
    assert cut.truncate(99).windows[0].kept == 5  # a window holding fewer keeps them all


@pytest.mark.parametrize("k", [1, 2, 16, 128])
def test_every_prefix_decodes(model, video, tokens, k):
    frames = model.detokenize(tokens.truncate(k))
    assert frames.shape == video.shape and frames.dtype == np.uint8


def test_the_flow_decoder_is_seeded(model, tokens):
    cut = tokens.truncate(8)
    a, b, c = (model.detokenize(cut, steps=2, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_guidance_extrapolates_from_the_unconditional_flow(model, tokens):
    """Classifier-free guidance: w = 0 is the decoder with no register (the same for any prefix), 1 the plain
    flow, and in one Euler step the sample is linear in w (x0 + u + w (v - u))."""
    sample, first, other = (
        model.registers.sample,
        *(torch.from_numpy(w.indices[:8].astype(np.int64))[None] for w in tokens.windows),
    )
    plain = sample(first, 8, 16, steps=1, seed=1)
    assert torch.equal(plain, sample(first, 8, 16, steps=1, seed=1, guidance=1.0))
    blind = sample(first, 8, 16, steps=1, seed=1, guidance=0)
    assert torch.allclose(blind, sample(other, 8, 16, steps=1, seed=1, guidance=0), atol=1e-5)
    assert not torch.allclose(blind, plain, atol=1e-2)
    assert torch.allclose(sample(first, 8, 16, steps=1, seed=1, guidance=2), 2 * plain - blind, atol=1e-4)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
            sample(first, 8, 16, steps=1, guidance=bad)


def test_v2_files_round_trip_byte_for_byte(tmp_path, tokens):
    first = tokens.truncate(7).save(tmp_path / "a.itok")
    loaded = Tokens.load(first)
    assert loaded.header == tokens.truncate(7).header
    second = loaded.save(tmp_path / "b.itok")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:6] == FORMAT_VERSION_1D.to_bytes(2, "little")


def test_a_1d_record_must_keep_a_prefix(tmp_path, tokens):
    broken = tokens.truncate(4)
    broken.windows[0].mask.reshape(-1)[:4] = [True, False, True, True]
    broken.windows[0].mask.reshape(-1)[4] = True
    path = broken.save(tmp_path / "gap.itok")
    with pytest.raises(TokenFormatError, match="prefix"):
        Tokens.load(path)


def test_grid_tokens_cannot_be_cut():
    grid = InfoTok.from_pretrained().tokenize(synthetic_video(9, 64, 64), rate=0.5)
    with pytest.raises(ValueError, match="only 1D-layout tokens"):
        grid.truncate(4)


def test_frames_off_the_64_pixel_grid_are_refused_or_fitted(model, tmp_path):
    with pytest.raises(ValueError, match="multiples of 64"):
        model.tokenize(synthetic_video(5, 64, 96))
    video = synthetic_video(5, 100, 150)
    write_video(tmp_path / "v.mp4", video, fps=10, lossless=True)
    frames, h, w, source = source_stream(model, tmp_path / "v.mp4")
    assert (h, w, source["source_width"], source["source_height"], source["resize"]) == (64, 128, 150, 100, None)
    assert np.array_equal(np.stack(list(frames)), video[:, 18:82, 11:139])  # the centre crop


def test_psnr_rises_with_the_prefix_on_real_clips(model):
    """Eval clips (never trained on): first 33 frames at 256x256, as the benchmark reads them."""
    scores = {k: [] for k in (16, 256, 1024)}
    for path in EVAL_VIDEOS[:3]:
        frames = resize_and_crop(read_video(path, max_frames=33)[0], 256)
        sequence = model.encode_window(frames)
        for k in scores:
            decoded = model.decode_window(sequence[:k], 256, 256)[0, :, : len(frames)]
            scores[k].append(
                psnr(frames, ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy())
            )
    means = [np.mean(scores[k]) for k in (16, 256, 1024)]
    assert means[0] < means[1] < means[2], means


def test_cli_encodes_cuts_and_decodes(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    write_video(src, synthetic_video(20, 64, 128, seed=1), fps=20.0)
    assert main(["encode", str(src), "--layout", "1d", "--tokens", "16", "-o", str(tmp_path / "c.itok")]) == 0
    with TokenReader(tmp_path / "c.itok") as reader:
        assert [w.kept for w in reader] == [16] and reader.header.layout == "1d"
    assert (
        main(["decode", str(tmp_path / "c.itok"), "--tokens", "4", "--steps", "2", "-o", str(tmp_path / "c.mp4")]) == 0
    )
    assert "from 4 tokens a window (flow decoder, 2 steps, seed 0)" in capsys.readouterr().out
    assert read_video(tmp_path / "c.mp4")[0].shape == (20, 64, 128, 3)
    guided = ["decode", str(tmp_path / "c.itok"), "--steps", "2", "-o", str(tmp_path / "g.mp4"), "--guidance"]
    assert main(guided + ["2"]) == 0
    assert "(flow decoder, 2 steps, seed 0, guidance 2)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(guided + ["-1", "--overwrite"])
    assert stop.value.code == 2
    assert "--guidance: guidance must be a finite number >= 0 (1: none), got -1.0" in capsys.readouterr().err


def test_cli_reconstructs_in_the_1d_layout_and_its_psnr_is_the_decode_against_the_input(tmp_path, capsys):
    src, out = tmp_path / "clip.mp4", tmp_path / "r.mp4"
    write_video(src, synthetic_video(20, 64, 128, seed=2), fps=20.0, lossless=True)
    assert main(["reconstruct", str(src), "--layout", "1d", "--tokens", "64", "--lossless", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "64 tokens (1D layout, regression decoder; 64 tokens per second of video)" in said
    printed = float(said.rsplit("PSNR ", 1)[1].split()[0])
    assert printed == pytest.approx(psnr(read_video(src)[0], read_video(out)[0]), abs=0.01)
    for flow in (["--steps", "2"], ["--guidance", "2"]):  # the grid has no flow decoder
        assert main(["reconstruct", str(src), *flow, "-o", str(tmp_path / "g.mp4")]) != 0
        assert "--layout 1d" in capsys.readouterr().err


def test_cli_viz_in_the_1d_layout_shows_the_source_beside_each_prefix(tmp_path, capsys, model):
    src, out = tmp_path / "clip.mp4", tmp_path / "v.mp4"
    write_video(src, synthetic_video(20, 64, 128, seed=2), fps=20.0, lossless=True)
    assert main(["viz", str(src), "--layout", "1d", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    frames = read_video(src)[0]
    expected = model.tokenize(frames, fps=20.0)
    for k in (16, 64, 256, expected.windows[0].kept):
        shown = float(said.split(f"{k} tokens ", 1)[1].split(" dB")[0])
        assert shown == pytest.approx(psnr(frames, model.detokenize(expected.truncate(k))), abs=0.01), k
    panels = read_video(out)[0]
    assert len(panels) == 20 and panels.shape[2] >= 5 * 128 and (tmp_path / "v.png").stat().st_size > 0


def test_cli_eval_in_the_1d_layout_reports_each_prefix_as_the_api_decodes_it(tmp_path, capsys, model):
    src = tmp_path / "clip.mp4"
    write_video(src, synthetic_video(20, 64, 128, seed=3), fps=20.0, lossless=True)
    argv = ["eval", str(src), "--layout", "1d", "--tokens", "4,32", "--size", "64", "--json", str(tmp_path / "e.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    clip = resize_and_crop(read_video(src)[0], 64)
    whole = model.tokenize(clip)
    for row, k in zip(report["results"], (4, 32)):
        assert row["tokens"] == k and row["videos"] == 1
        assert row["psnr"] == pytest.approx(psnr(clip, model.detokenize(whole.truncate(k))), abs=1e-6)
    assert f"PSNR {report['results'][1]['psnr']:.2f} dB" in capsys.readouterr().out
    assert main(["eval", str(src), "--layout", "1d", "--tokens", "5000", "--size", "64"]) != 0  # more than it holds
    assert "more than a 64x64 window holds" in capsys.readouterr().err


def test_a_segment_of_1d_tokens_decodes_as_the_whole_video_does_there(model):
    tokens = model.tokenize(synthetic_video(40, 64, 64, seed=5), tokens=64)  # windows 0-33 and 32-40
    whole = model.detokenize(tokens)
    for start, stop in [(30, 36), (33, 40), (0, 5)]:
        assert np.array_equal(model.detokenize(tokens, start=start, stop=stop), whole[start:stop])


def test_cli_refuses_1d_options_on_grid_files(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    write_video(src, synthetic_video(9, 64, 64), fps=20.0)
    assert main(["encode", str(src), "--tokens", "16", "-o", str(tmp_path / "g.itok")]) != 0
    assert "--layout 1d" in capsys.readouterr().err
    assert main(["encode", str(src), "-o", str(tmp_path / "g.itok")]) == 0
    assert main(["decode", str(tmp_path / "g.itok"), "--tokens", "4", "-o", str(tmp_path / "g.mp4")]) != 0


def test_a_1d_checkpoint_refuses_another_base(tmp_path):
    import shutil

    from infotok.checkpoint import CheckpointError
    from infotok.layout1d import SHIPPED_1D

    copy = tmp_path / "infotok-1d"
    shutil.copytree(SHIPPED_1D, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(
        json.dumps(config | {"base_hash": "0" * 16, "base_checkpoint": str(SHIPPED_1D.parent / "infotok-flex")})
    )
    with pytest.raises(CheckpointError, match="trained on a base"):
        InfoTok1D.from_pretrained(copy)
    assert torch.is_tensor(next(InfoTok1D.from_pretrained(SHIPPED_1D).parameters()))


def test_shared_tokens_go_where_they_gain_most_and_spend_the_budget_exactly():
    ladder = [16, 32, 64, 128]
    still = [30.0, 30.1, 30.15, 30.2]  # saturates at once
    busy = [20.0, 22.0, 24.0, 26.0]
    keeps = share_tokens(ladder, [still, busy], 150)
    assert keeps == [16 + 6, 128]  # the busy window to the top of its ladder, the rest to the still one
    assert share_tokens(ladder, [still, busy], 1) == [1, 1]  # at least one token a window


def test_rate_and_target_choose_each_windows_length(model):
    video = synthetic_video(65, 64, 128, seed=5)
    grid = 9 * 8 * 16  # a 33-frame 64x128 window's 4x8x8 grid
    shared = model.tokenize(video, rate=100 / grid)
    assert sum(w.kept for w in shared.windows) == 100 * len(shared.windows)
    low, high = model.tokenize(video, target_psnr=5.0), model.tokenize(video, target_psnr=60.0)
    assert [w.kept for w in low.windows] == [16, 16] and [w.kept for w in high.windows] == [128, 128]
    assert high.header.target_psnr == 60.0 and high.header.strategy == "target" and shared.header.strategy == "rate"
    with pytest.raises(ValueError, match="at most one"):
        model.tokenize(video, tokens=4, rate=0.01)


def test_the_1d_benchmark_rows_follow_the_asked_prefixes_and_guidances(model, video):
    """`python -m benchmarks.layout1d --tokens --guidance` (how the guidance sweep of docs/LAYOUT_1D.md ran)."""
    from benchmarks.layout1d import one_d_rows

    rows = one_d_rows(model, [video[:33]], False, prefixes=[2, 128], guidances=(1.0, 5.0))
    assert list(rows) == [
        f"{name}|{k}" for k in (2, 128) for name in ("regression", "flow, 8 steps", "flow, 8 steps, guidance 5")
    ]
    assert all(np.isfinite(r["psnr"]) and r["sharpness"] > 0 for r in rows.values())
    assert rows["regression|128"]["psnr"] > rows["regression|2"]["psnr"]
