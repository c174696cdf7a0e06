"""What the command line does with bad input: exit code 2, one specific line on stderr, never a traceback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from infotok.cli import main
from infotok.tokens import TokenReader, Tokens
from infotok.video import iter_frames, read_video, synthetic_video, write_video
from tests.conftest import tiny_model

WIN = ["--window", "9", "--overlap", "2"]  # three small windows on the 21-frame sample
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ helpers
def run(capsys, *args) -> tuple[int, str, str]:
    """main(argv) in-process -> (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_error_line(err: str, *parts: str) -> None:
    """Exactly one line, `infotok: error: ...`, holding every part."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infotok: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])


def encode(capsys, src, dst, checkpoint, *extra) -> tuple[int, str, str]:
    return run(capsys, "encode", src, "-o", dst, "--checkpoint", checkpoint, *WIN, *extra)


def make_video(
    path: Path,
    codec: str,
    pix_fmt: str,
    frames: int = 9,
    width: int = 64,
    height: int = 48,
    alpha: bool = False,
    fmt: str | None = None,
    options: dict | None = None,
) -> Path:
    """Write synthetic frames with PyAV in any codec / pixel format (PyAV converts from RGB)."""
    video = synthetic_video(frames, height, width, seed=2)
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i, f in enumerate(video):
            if alpha:
                a = np.full(f.shape[:2] + (1,), 64 + 16 * i, np.uint8)
                frame = av.VideoFrame.from_ndarray(np.concatenate([f, a], -1), format="rgba")
            else:
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def cli_subprocess(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "infotok", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


# ------------------------------------------------------------------------------- bad inputs
def test_missing_input(capsys, tmp_path, tiny_checkpoint):
    code, out, err = encode(capsys, tmp_path / "missing.mp4", tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2 and out == ""
    assert_error_line(err, str(tmp_path / "missing.mp4"), "no such file")
    assert not (tmp_path / "o.itok").exists()


def test_folder_or_pattern_without_videos(capsys, tmp_path, tiny_checkpoint):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a video")
    code, _, err = encode(capsys, tmp_path / "empty", tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, "no inputs found in", str(tmp_path / "empty"))
    code, _, err = encode(capsys, tmp_path / "nothing*.mp4", tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, "no inputs found in")


def test_empty_file(capsys, tmp_path, tiny_checkpoint):
    (tmp_path / "empty.mp4").write_bytes(b"")
    code, _, err = encode(capsys, tmp_path / "empty.mp4", tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tmp_path / "empty.mp4"), "empty file")


def test_random_bytes_named_mp4(capsys, tmp_path, tiny_checkpoint):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    code, _, err = encode(capsys, tmp_path / "noise.mp4", tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tmp_path / "noise.mp4"), "not a readable video")
    assert not (tmp_path / "o.itok").exists()


def test_file_without_a_video_stream(capsys, tmp_path, tiny_checkpoint):
    path = tmp_path / "audio_only.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    code, _, err = encode(capsys, path, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(path), "has no video stream")


def test_truncated_mp4_is_refused_or_read_with_a_warning_and_never_hangs(tmp_path, tiny_checkpoint, sample_video):
    data = sample_video.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    result = cli_subprocess("encode", half, "-o", tmp_path / "half.itok", "--checkpoint", tiny_checkpoint, *WIN)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        assert_error_line(result.stderr, str(half))
        assert not (tmp_path / "half.itok").exists()
    else:
        assert "warning" in result.stderr.lower() and str(half) in result.stderr
        assert Tokens.load(tmp_path / "half.itok").header.num_frames < 21


def faststart_mp4_cut_after_packets(tmp_path: Path, packets: int) -> tuple[Path, int]:
    """An MP4 whose index (moov) comes first, cut cleanly after `packets` packets: a download cut short."""
    path = make_video(
        tmp_path / "full.mp4", "libx264", "yuv420p", frames=21, fmt="mp4", options={"movflags": "faststart"}
    )
    with av.open(str(path)) as c:
        declared = c.streams.video[0].frames
        spans = sorted((p.pos, p.size) for p in c.demux(video=0) if p.size)
    cut = spans[packets - 1][0] + spans[packets - 1][1]
    short = tmp_path / "cut_short.mp4"
    short.write_bytes(path.read_bytes()[:cut])
    return short, declared


def test_mp4_cut_short_is_refused_or_warned_about(capsys, tmp_path, tiny_checkpoint):
    short, declared = faststart_mp4_cut_after_packets(tmp_path, 11)
    assert declared == 21
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = encode(capsys, short, tmp_path / "cut.itok", tiny_checkpoint)
    if code == 2:
        assert_error_line(err, str(short))
        return
    assert code == 0
    frames = Tokens.load(tmp_path / "cut.itok").header.num_frames
    assert frames < declared  # only what is there was encoded...
    told = any(str(short) in str(w.message) for w in caught) or ("warning" in err.lower() and str(short) in err)
    assert told, "frames were silently dropped"  # ...and the user is told


@pytest.mark.parametrize(
    "name,codec,pix_fmt,alpha",
    [
        ("gray.mkv", "ffv1", "gray", False),
        ("gray16.mkv", "ffv1", "gray16le", False),
        ("rgba.mov", "png", "rgba", True),
        ("bgra.mkv", "ffv1", "bgra", True),
        ("yuva.mkv", "ffv1", "yuva420p", True),
        ("ten_bit.mkv", "ffv1", "yuv420p10le", False),
        ("ten_bit_h264.mp4", "libx264", "yuv420p10le", False),
        ("twelve_bit_444.mkv", "ffv1", "yuv444p12le", False),
    ],
)
def test_gray_alpha_and_high_bit_depth_inputs(capsys, tmp_path, tiny_checkpoint, name, codec, pix_fmt, alpha):
    src = make_video(tmp_path / name, codec, pix_fmt, alpha=alpha)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    first = next(iter_frames(src))
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    if pix_fmt.startswith("gray"):
        assert np.array_equal(first[..., 0], first[..., 1]) and np.array_equal(first[..., 1], first[..., 2])
    code, out, err = encode(capsys, src, tmp_path / "t.itok", tiny_checkpoint)
    assert code == 0, err
    assert "9 frames 64x48" in out
    header = Tokens.load(tmp_path / "t.itok").header
    assert (header.width, header.height, header.source_width, header.source_height, header.num_frames) == (
        64,
        48,
        64,
        48,
        9,
    )
    code, out, err = run(
        capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "back.mp4", "--checkpoint", tiny_checkpoint
    )
    assert code == 0, err
    frames, info = read_video(tmp_path / "back.mp4")
    assert frames.shape == (9, 48, 64, 3) and (info.width, info.height) == (64, 48)


@pytest.mark.parametrize(
    "width,height,frames", [(5, 3, 7), (3, 5, 7), (1, 1, 5), (37, 23, 7), (65, 9, 13), (64, 48, 1)]
)
def test_tiny_and_odd_sizes_are_padded_then_cropped_back(capsys, tmp_path, tiny_checkpoint, width, height, frames):
    src = write_video(tmp_path / "small.mp4", synthetic_video(frames, height, width, seed=4), fps=12)
    code, out, err = encode(capsys, src, tmp_path / "t.itok", tiny_checkpoint)
    assert code == 0, err
    assert f"{frames} frames {width}x{height}" in out
    tokens = Tokens.load(tmp_path / "t.itok")
    assert (tokens.header.width, tokens.header.height) == (width, height)
    assert tokens.windows[0].mask.shape[1:] == (math.ceil(height / 8), math.ceil(width / 8))
    code, out, err = run(capsys, "reconstruct", src, "-o", tmp_path / "rec.mp4", "--checkpoint", tiny_checkpoint, *WIN)
    assert code == 0, err
    assert "PSNR" in out
    code, out, err = run(
        capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "back.mp4", "--checkpoint", tiny_checkpoint
    )
    assert code == 0, err
    for path in (tmp_path / "back.mp4", tmp_path / "rec.mp4"):
        back, info = read_video(path)
        assert back.shape == (frames, height, width, 3) and (info.width, info.height) == (width, height)


# ------------------------------------------------------------------------------ bad options
@pytest.mark.parametrize("rate", ["0", "1.5", "nan", "-1", "inf", "x"])
def test_rates_outside_the_range_are_refused(capsys, tmp_path, tiny_checkpoint, sample_video, rate):
    code, out, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint, "--rate", rate)
    assert code == 2 and out == ""
    assert "argument --rate: must be a share of the grid's tokens in (0, 1]" in err.strip().splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "o.itok").exists()


def test_a_grid_rate_under_one_sixteenth_points_to_the_1d_layout(capsys, tmp_path, tiny_checkpoint, sample_video):
    code, out, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint, "--rate", "0.01")
    assert code == 2 and out == "" and not (tmp_path / "o.itok").exists()
    assert "rate must lie in [1/16, 1]" in err and "--layout 1d" in err


def test_bad_rates_in_other_commands(capsys, tmp_path, tiny_checkpoint, sample_video):
    code, _, err = run(
        capsys, "reconstruct", sample_video, "-o", tmp_path / "r.mp4", "--rate", "2", "--checkpoint", tiny_checkpoint
    )
    assert code == 2 and "rate must lie in [1/16, 1]" in err
    code, _, err = run(capsys, "eval", sample_video, "--rates", "0.5,0", "--checkpoint", tiny_checkpoint)
    assert code == 2 and "argument --rates: rate must lie in [1/16, 1]" in err
    code, _, err = run(capsys, "encode", sample_video, "-o", tmp_path / "o.itok", "--rate", "half")
    assert code == 2 and "argument --rate" in err


@pytest.mark.parametrize("command", ["encode", "reconstruct", "viz"])
@pytest.mark.parametrize("window", ["3", "0", "-5"])
def test_window_below_one_latent_step(capsys, tmp_path, tiny_checkpoint, sample_video, command, window):
    code, out, err = run(
        capsys,
        command,
        sample_video,
        "-o",
        tmp_path / "o.out",
        "--window",
        window,
        "--overlap",
        "0",
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 2 and out == ""
    assert_error_line(err, "window must be at least 5 frames", f"got {window}")
    assert not (tmp_path / "o.out").exists()


@pytest.mark.parametrize("overlap", ["9", "12", "-1"])
def test_overlap_must_be_smaller_than_the_window(capsys, tmp_path, tiny_checkpoint, sample_video, overlap):
    code, _, err = run(
        capsys,
        "encode",
        sample_video,
        "-o",
        tmp_path / "o.itok",
        "--window",
        "9",
        "--overlap",
        overlap,
        "--checkpoint",
        tiny_checkpoint,
    )
    assert code == 2
    assert_error_line(err, "overlap must be at least 0 and smaller than window (9)", f"got {overlap}")
    assert not (tmp_path / "o.itok").exists()


# ------------------------------------------------------------------------------ checkpoints
def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_checkpoint_folder_missing_its_weights(capsys, tmp_path, tiny_checkpoint, sample_video):
    (tiny_checkpoint / "model.safetensors").unlink()
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tiny_checkpoint), "missing model.safetensors")


def test_checkpoint_folder_missing_its_config(capsys, tmp_path, tiny_checkpoint, sample_video):
    (tiny_checkpoint / "config.json").unlink()
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, "missing config.json")


def test_checkpoint_that_does_not_exist_or_is_a_file(capsys, tmp_path, sample_video):
    for ckpt in (tmp_path / "nowhere", sample_video):
        code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", ckpt)
        assert code == 2
        assert_error_line(err, str(ckpt), "checkpoint folder not found")


@pytest.mark.parametrize(
    "what,edit",
    [
        ("base width", lambda c: c["base"].update(enc_hi=c["base"]["enc_hi"] + 4)),
        ("compressor width", lambda c: c["compressor"].update(width=24)),
        ("levels", lambda c: c["base"].update(levels=[8, 8, 8])),
        ("no compressor", lambda c: c.update(compressor=None)),
    ],
)
def test_checkpoint_config_that_does_not_match_its_weights(capsys, tmp_path, tiny_checkpoint, sample_video, what, edit):
    edit_config(tiny_checkpoint, edit)
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tiny_checkpoint), "weights do not match config.json", "was the config edited")


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "not a readable safetensors file"),
        (np.random.default_rng(1).bytes(4096), "not a readable safetensors file"),
        ((2**60).to_bytes(8, "little") + b"{}", "not a readable safetensors file"),
    ],
)
def test_unreadable_weights(capsys, tmp_path, tiny_checkpoint, sample_video, content, expected):
    (tiny_checkpoint / "model.safetensors").write_bytes(content)
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tiny_checkpoint / "model.safetensors"), expected)


def test_config_that_is_not_json(capsys, tmp_path, tiny_checkpoint, sample_video):
    (tiny_checkpoint / "config.json").write_text("{ not json")
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tiny_checkpoint / "config.json"), "invalid JSON")


@pytest.mark.parametrize(
    "what",
    [
        "unknown key",
        "json list",
        "string width",
        "negative width",
        "heads not dividing width",
        "score_mean text",
        "target margins without a predictor",
        "target margins text",
    ],
)
def test_checkpoint_config_with_invalid_values(capsys, tmp_path, tiny_checkpoint, sample_video, what):
    if what == "json list":
        (tiny_checkpoint / "config.json").write_text("[1, 2]")
    else:
        edit_config(
            tiny_checkpoint,
            {
                "unknown key": lambda c: c["base"].update(typo_width=8),
                "string width": lambda c: c["base"].update(enc_hi="8"),
                "negative width": lambda c: c["base"].update(enc_hi=-8),
                "heads not dividing width": lambda c: c["compressor"].update(heads=3),
                "score_mean text": lambda c: c.update(score_mean="calibrated"),
                "target margins without a predictor": lambda c: c.update(target_margins=[1.0] * 16),
                "target margins text": lambda c: c.update(target_margins=["wide"]),
            }[what],
        )
    code, _, err = encode(capsys, sample_video, tmp_path / "o.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tiny_checkpoint))


# ---------------------------------------------------------------------------------- outputs
def test_existing_output_needs_overwrite_and_is_left_unchanged(capsys, tmp_path, tiny_checkpoint, sample_video):
    out_file = tmp_path / "o.itok"
    out_file.write_bytes(b"precious")
    stat = out_file.stat()
    code, out, err = encode(capsys, sample_video, out_file, tiny_checkpoint)
    assert code == 2 and out == ""
    assert_error_line(err, str(out_file), "exists; pass --overwrite to replace it")
    assert out_file.read_bytes() == b"precious" and out_file.stat().st_mtime_ns == stat.st_mtime_ns
    code, _, err = encode(capsys, sample_video, out_file, tiny_checkpoint, "--overwrite")
    assert code == 0, err
    assert Tokens.load(out_file).header.num_frames == 21
    (tmp_path / "v.mp4").write_bytes(b"precious")
    code, _, err = run(capsys, "decode", out_file, "-o", tmp_path / "v.mp4", "--checkpoint", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(tmp_path / "v.mp4"), "exists; pass --overwrite")
    assert (tmp_path / "v.mp4").read_bytes() == b"precious"


def test_folder_run_refuses_before_working_if_any_output_exists(capsys, tmp_path, tiny_checkpoint):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        write_video(videos / f"{name}.mp4", synthetic_video(9, 16, 16, seed=1), fps=12)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.itok").write_bytes(b"keep")
    code, out, err = encode(capsys, videos, tmp_path / "out", tiny_checkpoint)
    assert code == 2 and out == ""
    assert_error_line(err, str(tmp_path / "out" / "b.itok"), "exists")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.itok"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_output_equal_to_input_is_refused(capsys, tmp_path, tiny_checkpoint, sample_video, overwrite):
    before = sample_video.read_bytes()
    for command in ("encode", "reconstruct", "viz"):
        code, _, err = run(
            capsys, command, sample_video, "-o", sample_video, "--checkpoint", tiny_checkpoint, *WIN, *overwrite
        )
        assert code == 2
        assert_error_line(err, str(sample_video), "the output would overwrite its own input")
    alias = tmp_path / "." / "sample.mp4"  # the same file by another spelling
    code, _, err = encode(capsys, sample_video, alias, tiny_checkpoint, *overwrite)
    assert code == 2 and "overwrite its own input" in err
    assert sample_video.read_bytes() == before
    assert encode(capsys, sample_video, tmp_path / "t.itok", tiny_checkpoint)[0] == 0
    tokens = (tmp_path / "t.itok").read_bytes()
    code, _, err = run(
        capsys, "decode", tmp_path / "t.itok", "-o", tmp_path / "t.itok", "--checkpoint", tiny_checkpoint, *overwrite
    )
    assert code == 2
    assert_error_line(err, "the output would overwrite its own input")
    assert (tmp_path / "t.itok").read_bytes() == tokens


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc as an unwritable folder")
def test_output_folder_that_cannot_be_written(capsys, tmp_path, tiny_checkpoint, sample_video):
    code, _, err = encode(capsys, sample_video, "/proc/infotok_test.itok", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, "/proc")


def test_folder_run_with_bad_files_among_good_ones(capsys, tmp_path, tiny_checkpoint):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = [
        write_video(videos / f"{name}.mp4", synthetic_video(9, 24, 32, seed=i), fps=12)
        for i, name in enumerate(["a_good", "c_good", "e_good"])
    ]
    (videos / "b_empty.mp4").write_bytes(b"")
    (videos / "d_noise.mp4").write_bytes(np.random.default_rng(2).bytes(3000))
    code, out, err = encode(capsys, videos, tmp_path / "out/", tiny_checkpoint)
    assert code == 2
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["a_good.itok", "c_good.itok", "e_good.itok"]  # the others finished, nothing half-written
    for path in good:
        assert Tokens.load(tmp_path / "out" / f"{path.stem}.itok").header.num_frames == 9
        assert f"{path} -> {tmp_path / 'out' / (path.stem + '.itok')}" in out
    lines = err.strip().splitlines()
    assert f"infotok: warning: skipped {videos / 'b_empty.mp4'}: empty file" in lines
    skipped = f"infotok: warning: skipped {videos / 'd_noise.mp4'}: not a readable video"
    assert any(line.startswith(skipped) for line in lines)
    assert lines[-3] == "infotok: encode: 2 of 5 inputs failed:"  # the failures are listed at the end
    assert lines[-2] == f"  {videos / 'b_empty.mp4'}: empty file"
    assert lines[-1].startswith(f"  {videos / 'd_noise.mp4'}: not a readable video")
    assert "Traceback" not in err


def test_folder_run_exit_code_from_a_real_process(tmp_path, tiny_checkpoint):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "good.mp4", synthetic_video(9, 16, 16, seed=1), fps=12)
    (videos / "bad.mp4").write_bytes(b"\x00" * 100)
    result = cli_subprocess("encode", videos, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint, *WIN)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "infotok: encode: 1 of 2 inputs failed:"
    assert lines[-1].startswith(f"  {videos / 'bad.mp4'}: not a readable video")
    assert (tmp_path / "out" / "good.itok").exists() and not (tmp_path / "out" / "bad.itok").exists()


def test_missing_input_from_a_real_process(tmp_path, tiny_checkpoint):
    result = cli_subprocess(
        "encode", tmp_path / "missing.mp4", "-o", tmp_path / "o.itok", "--checkpoint", tiny_checkpoint
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr == f"infotok: error: {tmp_path / 'missing.mp4'}: no such file\n"


# -------------------------------------------------------------------------- bad token files
@pytest.fixture
def token_file(capsys, tmp_path, tiny_checkpoint, sample_video) -> Path:
    code, _, err = encode(capsys, sample_video, tmp_path / "t.itok", tiny_checkpoint, "--rate", "0.5")
    assert code == 0, err
    return tmp_path / "t.itok"


def record_spans(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    with TokenReader(path) as reader:
        pos = reader.header_bytes
        spans = []
        for w in reader:
            spans.append((pos, pos + w.nbytes))
            pos += w.nbytes
    assert pos + 8 == len(data)
    return spans


@pytest.mark.parametrize("k", [0, 1, 2])
def test_decode_of_a_truncated_token_file_names_the_window(capsys, tmp_path, tiny_checkpoint, token_file, k):
    start, end = record_spans(token_file)[k]
    bad = tmp_path / "cut.itok"
    bad.write_bytes(token_file.read_bytes()[: (start + end) // 2])
    code, out, err = run(capsys, "decode", bad, "-o", tmp_path / "out.mp4", "--checkpoint", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(bad), f"window {k}", "truncated")
    assert not (tmp_path / "out.mp4").exists()  # no half-written video
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nor temporary files


@pytest.mark.parametrize("k", [0, 1, 2])
def test_decode_of_a_bit_flipped_token_file_names_the_window(capsys, tmp_path, tiny_checkpoint, token_file, k):
    start, end = record_spans(token_file)[k]
    data = bytearray(token_file.read_bytes())
    data[(start + end) // 2] ^= 0x10
    bad = tmp_path / "flipped.itok"
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "decode", bad, "-o", tmp_path / "out.mp4", "--checkpoint", tiny_checkpoint)
    assert code == 2
    assert_error_line(err, str(bad), f"window {k}: checksum mismatch")
    assert not (tmp_path / "out.mp4").exists()
    code, out, err = run(capsys, "info", bad)
    assert code == 2 and out == ""
    assert_error_line(err, f"window {k}: checksum mismatch")


def test_decode_of_other_bad_token_files(capsys, tmp_path, tiny_checkpoint, token_file):
    cases = {
        "missing.itok": None,
        "empty.itok": b"",
        "video.itok": b"\x00\x00\x00\x18ftypmp42" + bytes(64),
        "header_cut.itok": token_file.read_bytes()[:30],
        "newer.itok": token_file.read_bytes()[:4] + b"\x07\x00" + token_file.read_bytes()[6:],
    }
    expected = {
        "missing.itok": "no such token file",
        "empty.itok": "truncated in the header",
        "video.itok": "bad magic",
        "header_cut.itok": "truncated in the header",
        "newer.itok": "format version 7 is not supported",
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        code, _, err = run(
            capsys, "decode", tmp_path / name, "-o", tmp_path / "out.mp4", "--checkpoint", tiny_checkpoint
        )
        assert code == 2, name
        assert_error_line(err, str(tmp_path / name), expected[name])


def test_decode_with_another_checkpoint_is_refused(capsys, tmp_path, token_file):
    other = tiny_model(seed=1).save_pretrained(tmp_path / "other-ckpt")
    code, _, err = run(capsys, "decode", token_file, "-o", tmp_path / "out.mp4", "--checkpoint", other)
    assert code == 2
    assert_error_line(err, str(token_file), "decode with the checkpoint that made them")
    assert not (tmp_path / "out.mp4").exists()


def test_decode_several_files_with_one_bad(capsys, tmp_path, tiny_checkpoint, token_file):
    bad = tmp_path / "bad.itok"
    bad.write_bytes(token_file.read_bytes()[:-20])
    code, out, err = run(capsys, "decode", token_file, bad, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint)
    assert code == 2
    assert (tmp_path / "out" / "t.mp4").exists() and not (tmp_path / "out" / "bad.mp4").exists()
    assert read_video(tmp_path / "out" / "t.mp4")[0].shape == (21, 48, 64, 3)
    lines = err.strip().splitlines()
    assert lines[-2:] == ["infotok: decode: 1 of 2 inputs failed:", lines[-1]]
    assert lines[-1] == f"  {bad}: truncated in window 2"
