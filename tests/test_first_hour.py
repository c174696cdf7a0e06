"""What a new user meets in the first hour, through the CLI and the API: timing of variable-rate video,
quick looks at a segment, output paths, token inputs like video inputs, devices, help, arrays' frame rate."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest
import torch

from infotok.cli import Progress, build_parser, main
from infotok.model import InfoTok
from infotok.tokens import Tokens
from infotok.video import read_video, synthetic_video
from tests.test_video_io import VFR_CLIPS, write_timed


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infotok: error: "), err
    return lines[0]


@pytest.mark.parametrize("kind", ["mkv", "avi"])
def test_variable_frame_rate_keeps_its_duration_through_reconstruct(tmp_path, capsys, tiny_checkpoint, kind):
    fmt, time_base, times = VFR_CLIPS[kind]
    src = write_timed(tmp_path / f"vfr.{kind}", times, fmt, time_base)
    duration = times[-1] + 1 / 15
    code, out, err = run(
        capsys,
        "reconstruct",
        src,
        "-o",
        tmp_path / "out.mp4",
        "--rate",
        "0.5",
        "--window",
        "9",
        "--overlap",
        "2",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith(f"infotok: warning: {src}: variable frame rate; resampled")
    frames, info = read_video(tmp_path / "out.mp4")
    assert abs(len(frames) / info.fps - duration) <= 1 / info.fps  # not a sped-up clip of the real frames
    assert f"{len(frames)} frames" in out


def test_a_segment_is_a_quick_look(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, out, _ = run(
        capsys,
        "encode",
        sample_video,
        "-o",
        tmp_path / "seg.itok",
        "--start",
        "4",
        "--max-frames",
        "9",
        "--window",
        "9",
        "--overlap",
        "2",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0 and "9 frames" in out
    model = InfoTok.from_pretrained(tiny_checkpoint)
    whole = read_video(sample_video)[0]
    direct = model.tokenize(whole[4:13], rate=0.5, window=9, overlap=2, fps=12)
    saved = Tokens.load(tmp_path / "seg.itok")
    assert saved.header.num_frames == 9 and saved.header.fps == 12
    assert all(
        np.array_equal(a.indices, b.indices) and np.array_equal(a.mask, b.mask)
        for a, b in zip(saved.windows, direct.windows)
    )
    code, _, _ = run(
        capsys,
        "viz",
        sample_video,
        "-o",
        tmp_path / "v.mp4",
        "--max-frames",
        "9",
        "--window",
        "9",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 0 and len(read_video(tmp_path / "v.mp4")[0]) == 9 and (tmp_path / "v.png").stat().st_size > 0


def test_sources_are_shrunk_to_the_trained_resolution_by_default_never_enlarged(tmp_path, tiny_checkpoint):
    model = InfoTok.from_pretrained(tiny_checkpoint)
    large = synthetic_video(5, 300, 400, seed=2)
    shrunk = model.tokenize(large, rate=0.5, window=5, overlap=0, max_size=256)
    assert (shrunk.header.width, shrunk.header.height, shrunk.header.resize) == (341, 256, 256)
    small = model.tokenize(synthetic_video(5, 48, 64), rate=0.5, window=5, overlap=0, max_size=256)
    assert (small.header.width, small.header.height, small.header.resize) == (64, 48, None)
    parser = build_parser()
    assert parser.parse_args(["encode", "x.mp4", "-o", "y.itok"]).size is None  # default: shrink only
    assert parser.parse_args(["encode", "x.mp4", "-o", "y.itok", "--size", "native"]).size == "native"


@pytest.mark.parametrize("output, words", [("newdir", "has no extension"), ("out.txt", ".txt")])
def test_a_bad_output_path_fails_before_any_work(tmp_path, capsys, tiny_checkpoint, sample_video, output, words):
    code, _, err = run(capsys, "reconstruct", sample_video, "-o", tmp_path / output, "--checkpoint", tiny_checkpoint)
    assert code == 2 and words in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.mp4", "tiny-ckpt"]


def test_the_extension_picks_the_container_and_outputs_follow_the_umask(
    tmp_path, capsys, tiny_checkpoint, sample_video
):
    old = os.umask(0o022)
    try:
        assert (
            run(capsys, "reconstruct", sample_video, "-o", tmp_path / "r.avi", "--checkpoint", tiny_checkpoint)[0] == 0
        )
        assert run(capsys, "encode", sample_video, "-o", tmp_path / "t.itok", "--checkpoint", tiny_checkpoint)[0] == 0
    finally:
        os.umask(old)
    assert (tmp_path / "r.avi").read_bytes()[:4] == b"RIFF"
    assert (tmp_path / "r.avi").stat().st_mode & 0o777 == 0o644 and (
        tmp_path / "t.itok"
    ).stat().st_mode & 0o777 == 0o644


def test_decode_and_info_take_folders_and_globs(tmp_path, capsys, tiny_checkpoint, sample_video):
    tokens = tmp_path / "tokens"
    for name in ("a", "b"):
        assert (
            run(capsys, "encode", sample_video, "-o", tokens / f"{name}.itok", "--checkpoint", tiny_checkpoint)[0] == 0
        )
    code, out, _ = run(capsys, "info", tokens, "--json")
    assert code == 0 and out.count('"format_version"') == 2
    code, _, _ = run(capsys, "decode", f"{tokens}/*.itok", "-o", tmp_path / "videos", "--checkpoint", tiny_checkpoint)
    assert code == 0 and sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.mp4", "b.mp4"]


def test_an_absent_device_is_one_line(tmp_path, capsys, tiny_checkpoint, sample_video):
    for device in ("gpu", "cuda:7" if torch.cuda.is_available() else "cuda"):
        code, _, err = run(
            capsys,
            "encode",
            sample_video,
            "-o",
            tmp_path / "t.itok",
            "--device",
            device,
            "--checkpoint",
            tiny_checkpoint,
        )
        assert code == 2 and "this machine has: cpu" in one_error_line(err)
    with pytest.raises(ValueError, match="this machine has: cpu"):
        InfoTok.from_pretrained(tiny_checkpoint, device="cuda:7" if torch.cuda.is_available() else "cuda")


def test_every_option_of_every_command_says_what_it_does():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"infotok {name} {'/'.join(action.option_strings) or action.dest} has no help"


def test_arrays_carry_their_frame_rate_and_indices_compute_in_torch(tiny_checkpoint):
    model = InfoTok.from_pretrained(tiny_checkpoint)
    tokens = model.tokenize(synthetic_video(9, 16, 24), rate=0.5, window=9, fps=30)
    assert tokens.header.fps == 30
    assert model.tokenize(synthetic_video(9, 16, 24), rate=0.5, window=9).header.fps == 24  # the stated default
    batch = tokens.batch(0)
    assert batch.indices.dtype == torch.int64 and batch.mask.dtype == torch.bool
    assert torch.equal(batch.indices[batch.mask], torch.from_numpy(tokens.windows[0].indices.astype(np.int64)))
    assert (batch.indices + 1).sum() > 0  # arithmetic works on them


def test_the_api_gives_what_readme_says(tiny_checkpoint):
    """encode's indices are int64 like a file's batch, decode stays in [-1, 1], tokens print in a line."""
    model = InfoTok.from_pretrained(tiny_checkpoint)
    x = torch.from_numpy(synthetic_video(9, 32, 32, seed=4))[None]
    batch = model.encode(x, 0.5)
    assert batch.indices.dtype == torch.int64 and batch.mask.dtype == torch.bool
    with torch.no_grad():
        model.decompressor.proj_out.bias.add_(5.0)  # a decoder that overshoots
        recon = model.decode(batch)
    assert recon.min() >= -1 and recon.max() <= 1 and (recon.abs() == 1).any()
    tokens = model.tokenize(synthetic_video(17, 32, 32), rate=0.5, window=9, overlap=1)
    assert repr(tokens).count("\n") == 0 and len(repr(tokens)) < 200 and "2 windows" in repr(tokens)
    first = tokens.windows[0]
    assert repr(first) == f"TokenWindow(frames 0-8, rate {first.rate:.4f}, kept {first.kept}/{first.num_tokens})"


def test_progress_on_a_log_is_a_periodic_status_line(capsys):
    bar = Progress(4, "encode x.mp4", interval=0.0)
    assert bar.bar is None or not sys.stderr.isatty()
    for _ in range(2):
        bar.update()
    bar.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("infotok: encode x.mp4: 2/4 win") and "ETA" in err[-1]


def test_token_files_name_the_decoding_weights_and_a_mismatch_says_what_differs(tmp_path, tiny_checkpoint):
    """A copy with another calibration or other encoder weights decodes the tokens; other decoding
    weights or another architecture are refused naming which; files that name the whole weights file
    (written before the decoding hash) still decode."""
    from infotok.checkpoint import save_calibrated
    from tests.conftest import TINY_BASE, TINY_COMPRESSOR

    model = InfoTok.from_pretrained(tiny_checkpoint)
    tokens = model.tokenize(synthetic_video(9, 32, 32, seed=2), rate=0.5, window=9, overlap=2)
    expected = model.detokenize(tokens)
    recalibrated = save_calibrated(
        InfoTok.from_pretrained(tiny_checkpoint),
        tiny_checkpoint,
        tmp_path / "cal",
        {"score_mean": 0.9, "scores": {}, "size": 32, "frames": 9, "rd_thresholds": [[0.5, 0.1]]},
    )
    encoder = InfoTok.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        encoder.base.encoder_modules()[0].weight.add_(0.1)
        encoder.compressor.proj_out.weight.add_(0.1)
    for folder in (recalibrated, encoder.save_pretrained(tmp_path / "encoder")):
        copy = InfoTok.from_pretrained(folder)
        assert copy.model_hash == model.model_hash and copy.weights_hash != model.weights_hash
        assert np.array_equal(copy.detokenize(tokens), expected)
    decoder = InfoTok.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        decoder.decompressor.proj_out.weight.add_(0.1)
    with pytest.raises(ValueError, match="with other decoding weights"):
        InfoTok.from_pretrained(decoder.save_pretrained(tmp_path / "decoder")).detokenize(tokens)
    other = InfoTok(dataclasses.replace(TINY_BASE, dec_lo=24), TINY_COMPRESSOR, name="tiny-infotok")
    with pytest.raises(ValueError, match="of another architecture"):
        InfoTok.from_pretrained(other.save_pretrained(tmp_path / "arch")).detokenize(tokens)
    old_style = Tokens(dataclasses.replace(tokens.header, model_hash=model.weights_hash), tokens.windows)
    assert np.array_equal(model.detokenize(old_style), expected)


def test_an_argument_error_is_one_line_that_points_to_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["encode", "x.mp4", "-o", "y.itok", "--rate", "7"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("infotok encode: error: argument --rate") and "`infotok encode --help`" in err


def test_the_summary_gives_the_realized_rate_beside_the_asked_one(tmp_path, capsys, tiny_checkpoint, sample_video):
    code, out, _ = run(
        capsys, "encode", sample_video, "-o", tmp_path / "t.itok", "--rate", "0.5", "--checkpoint", tiny_checkpoint
    )
    tokens = Tokens.load(tmp_path / "t.itok")
    assert code == 0 and "1 window," in out
    assert f"(rate {tokens.ledger().realized_rate:.3f}, asked 0.5;" in out


@pytest.mark.parametrize(
    "preset, flags",
    [
        ("paper", ["--strategy", "global_elbo", "--selection", "error", "--fill", "mask"]),
        ("fixed", ["--strategy", "static"]),
        ("default", []),
    ],
)
def test_a_preset_is_its_flags_bit_for_bit(tmp_path, capsys, sample_video, preset, flags):
    encode = ["encode", sample_video, "--rate", "0.25", "--max-frames", "9", "--window", "9", "--overlap", "2"]
    assert run(capsys, *encode, "-o", tmp_path / "preset.itok", "--preset", preset)[0] == 0
    assert run(capsys, *encode, "-o", tmp_path / "flags.itok", *flags)[0] == 0
    assert (tmp_path / "preset.itok").read_bytes() == (tmp_path / "flags.itok").read_bytes()
    header = Tokens.load(tmp_path / "preset.itok").header
    assert preset != "paper" or (header.strategy, header.selection, header.fill) == ("global_elbo", "error", "mask")
    # an option given explicitly wins over the preset
    assert run(capsys, *encode, "-o", tmp_path / "mixed.itok", "--preset", preset, "--fill", "mask")[0] == 0
    assert Tokens.load(tmp_path / "mixed.itok").header.fill == "mask"
