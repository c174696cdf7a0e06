"""Reading and writing video and token files: variable frame rates, output modes, odd sizes, paths."""

import math
import os
import warnings
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from infotok.convert import convert_release
from infotok.tokens import TokenHeader, Tokens, TokenWindow, TokenWriter, check_token_output
from infotok.video import (
    OUTPUT_FORMATS,
    SIZE_TAG,
    VideoError,
    check_video_output,
    iter_frames,
    list_videos,
    probe,
    read_video,
    synthetic_video,
    write_video,
)

from .conftest import RELEASE_FILE, tiny_model

# --------------------------------------------------------------------------------- helpers
LEVEL = 20  # frame i of a timed clip is flat grey 20 * (i + 1), so a decoded frame says which it is


def write_timed(path: Path, times: list[float], fmt: str, time_base: Fraction, rate: int = 15) -> Path:
    """A clip whose frame i is shown from times[i] seconds (explicit, irregular pts)."""
    codec, pix_fmt, options = ("mpeg4", "yuv420p", {}) if fmt == "avi" else ("libx264", "yuv420p", {"bf": "0"})
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt, stream.options = 32, 32, pix_fmt, options
        stream.codec_context.time_base = time_base
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), LEVEL * (i + 1), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t / time_base), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2: a picture's start code; its next 2 bits say I (0), P (1) or B (2)


def write_xvid(path: Path, count: int, packed: bool) -> Path:
    """An MPEG-4 Part 2 AVI at 23.976 fps, two B-frames between references, frame i grey LEVEL * (i + 1)
    under a checkerboard moving a pixel a frame (motion to code). `packed` stores it as Xvid and DivX
    did (UCF-101, HMDB): the first B-frame after a reference (I- or P-frame) rides in its chunk, an empty
    picture (N-VOP) fills the slot that frees, and a "DivX...p" user-data tag tells the decoder; FFmpeg
    hands those frames on in order but stamps them out of order."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(24000, 1001))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.max_b_frames = 2
        packets = []  # in decode order: I0 P3 B1 B2 P6 B4 B5 ...
        yy, xx = np.mgrid[0:32, 0:32]
        for i in range(count):
            board = 12 * np.where((yy // 4 + (xx + i) // 4) % 2, 1, -1)
            picture = np.repeat((LEVEL * (i + 1) + board)[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
            packets += [bytes(p) for p in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24"))]
        packets += [bytes(p) for p in stream.encode()]
        kinds = [data[data.index(VOP) + 4] >> 6 for data in packets]
        chunks = packets
        if packed:  # I0 | P3 B1 | B2 | N | P6 B4 | B5 | N ...
            tick_bits = (stream.codec_context.time_base.denominator - 1).bit_length()
            bits = "01" + "0" + "1" + "0" * tick_bits + "1" + "0"  # P, same second, marker, time, marker, not coded
            bits += "0" + "1" * (-(len(bits) + 1) % 8)  # stuffing to a byte boundary
            nvop = VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")
            chunks, joinable, owed = [], False, False
            for data, kind in zip(packets, kinds):
                if kind == 2 and joinable:
                    chunks[-1] += data
                    joinable, owed = False, True
                    continue
                if kind != 2 and owed:
                    chunks.append(nvop)
                    owed = False
                chunks.append(data)
                joinable = kind != 2
            chunks += [nvop] if owed else []
            at = chunks[0].index(VOP)
            chunks[0] = chunks[0][:at] + b"\x00\x00\x01\xb2DivX503b1393p" + chunks[0][at:]
        for i, data in enumerate(chunks):  # AVI keeps the order only
            packet = av.Packet(data)
            packet.stream, packet.time_base = stream, stream.codec_context.time_base
            packet.pts = packet.dts = i
            packet.is_keyframe = data[data.index(VOP) + 4] >> 6 == 0
            out.mux(packet)
    return path


def frame_ids(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / LEVEL)) - 1 for f in frames]


@contextmanager
def recorded_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def tiny_tokens() -> Tokens:
    """5 frames of 16x16 in one window, every token kept: no model needed."""
    header = TokenHeader(
        model="m",
        model_hash="0",
        config_hash="0",
        levels=[8, 8, 8, 5, 5, 5],
        temporal_factor=4,
        spatial_factor=8,
        width=16,
        height=16,
        source_width=16,
        source_height=16,
        fps=8.0,
        num_frames=5,
        window=5,
        overlap=0,
        strategy="static",
        selection="error",
        avg_rate=1.0,
        score_mean=0.0,
    )
    mask = np.ones((2, 2, 2), bool)
    return Tokens(header, [TokenWindow(0, 5, 1.0, 0.0, mask, np.arange(8, dtype=np.uint16))])


# A variable-rate clip: pauses, bursts, two frames (1.1, 1.15) nearest one 1/15 s slot
VFR_TIMES = [0, 0.2, 0.25, 1.1, 1.15, 1.5, 1.6, 1.7, 3.0, 3.05, 4.0, 4.9]
# The case reported: an AVI whose index holds 74 chunks at 15 fps, 64 of them empty (dropped frames)
AVI_TICKS = [0, 3, 4, 22, 24, 25, 45, 46, 60, 73]
VFR_CLIPS = {
    "mkv": ("matroska", Fraction(1, 1000), VFR_TIMES),
    "mp4": ("mp4", Fraction(1, 1000), VFR_TIMES),
    "avi": ("avi", Fraction(1, 15), [k / 15 for k in AVI_TICKS]),
}


# ----------------------------------------------------------------------- variable frame rate
@pytest.mark.parametrize("kind", sorted(VFR_CLIPS))
def test_variable_frame_rate_is_resampled_to_its_true_duration(tmp_path, kind):
    fmt, time_base, times = VFR_CLIPS[kind]
    path = write_timed(tmp_path / f"vfr.{kind}", times, fmt, time_base)
    with recorded_warnings() as caught:
        frames, info = read_video(path)
    fps = info.fps
    duration = times[-1] + 1 / 15  # each writer gives the last frame one 1/15 s tick
    assert abs(len(frames) / fps - duration) <= 1 / fps
    assert len(frames) > len(times)  # pauses became duplicates, not a shorter, faster clip
    # output frame k is the latest frame whose timestamp rounds to slot k or before
    slots = [math.floor(t * fps + 0.5) for t in times]
    ids = frame_ids(frames)
    assert ids == [max(i for i, s in enumerate(slots) if s <= k) for k in range(len(frames))]
    messages = [str(w.message) for w in caught]
    assert messages == [
        f"{path}: variable frame rate; resampled to a constant {fps:g} fps "
        f"({len(frames) - len(set(ids))} frames duplicated, {len(times) - len(set(ids))} dropped)"
    ]
    assert caught[0].filename == __file__  # the warning points at the caller, not into infotok
    assert abs(probe(path).num_frames - len(frames)) <= 1 and probe(path).fps == fps


@pytest.mark.parametrize("kind", sorted(VFR_CLIPS))
def test_seeking_into_a_variable_rate_clip_matches_the_full_read(tmp_path, kind):
    fmt, time_base, times = VFR_CLIPS[kind]
    path = write_timed(tmp_path / f"vfr.{kind}", times, fmt, time_base)
    with recorded_warnings():
        full, _ = read_video(path)
        for start in (1, 4, 20, len(full) - 3):
            part, _ = read_video(path, start=start, max_frames=5)
            assert np.array_equal(part, full[start : start + 5]), start


def test_the_reported_avi_is_not_called_truncated(tmp_path):
    path = write_timed(tmp_path / "vfr.avi", [k / 15 for k in AVI_TICKS], "avi", Fraction(1, 15))
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 74  # the header counts the dropped frames too
    with recorded_warnings() as caught:
        frames = list(iter_frames(path))
    assert len(frames) == 74 and probe(path).num_frames == 74 and probe(path).fps == 15
    assert [str(w.message) for w in caught] == [
        f"{path}: variable frame rate; resampled to a constant 15 fps (64 frames duplicated, 0 dropped)"
    ]
    assert caught[0].filename == __file__


@pytest.mark.parametrize("packed", [False, True])
def test_avi_with_b_frames_reads_every_frame_once_in_order(tmp_path, packed):
    path = write_xvid(tmp_path / "xvid.avi", 12, packed)
    with av.open(str(path)) as c:
        stamps = [f.pts for f in c.decode(video=0)]
    assert len(stamps) == 12 and (stamps != sorted(stamps)) == packed  # packed: in order, stamped out of order
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant rate: nothing resampled
        frames, info = read_video(path)
        part, _ = read_video(path, start=5, max_frames=4)
    assert frame_ids(frames) == list(range(12)) and info.fps == pytest.approx(24000 / 1001)
    assert probe(path).num_frames == 12 and np.array_equal(part, frames[5:9])


@pytest.mark.parametrize("suffix", sorted(OUTPUT_FORMATS))
def test_constant_rate_clip_reads_exactly_its_frames_without_warning(tmp_path, suffix):
    video = synthetic_video(13, 32, 48, seed=2)
    path = write_video(tmp_path / f"cfr{suffix}", video, fps=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames, info = read_video(path)
        assert probe(path).num_frames == 13
        assert np.array_equal(read_video(path, start=5, max_frames=4)[0], frames[5:9])
    assert frames.shape == video.shape and (info.fps, info.num_frames) == (12.0, 13)


def test_truncated_stream_is_reported_and_read_up_to_the_cut(tmp_path):
    path = write_video(tmp_path / "whole.mkv", synthetic_video(60, 32, 32, seed=1), fps=15)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.4)])
    with recorded_warnings() as caught:
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < 45
    assert any("truncated file?" in str(w.message) and str(cut) in str(w.message) for w in caught)


def write_faststart_mp4(path: Path, video: np.ndarray, fps: int) -> Path:
    """An H.264 MP4 with its index (moov box) before the frames, as `-movflags +faststart` writes it."""
    with av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = *video.shape[1:3], "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


MP4_CUT = (
    "truncated MP4/MOV: its index (moov box) is missing or cut off, so no frame can be decoded (most MP4s "
    "keep the index at the end; a faststart copy, with the index at the front, keeps the frames written "
    "before a break)"
)


def test_mp4_cut_before_the_end_of_its_index_says_so(tmp_path):
    path = write_video(tmp_path / "whole.mp4", synthetic_video(60, 32, 32, seed=1), fps=15)
    data = path.read_bytes()
    index, tags = data.index(b"moov") - 4, data.index(b"udta") - 4  # the index and, last in it, the tags
    assert data.index(b"mdat") < index  # the index after the frames, as in most MP4s
    cut = tmp_path / "cut.mp4"
    for keep in (40, len(data) // 2, index + 64, *range(index, tags + 1, 8)):  # FFmpeg fails each differently
        cut.write_bytes(data[:keep])
        for read in (probe, iter_frames, read_video) if keep < index + 100 else (iter_frames,):
            with pytest.raises(VideoError) as error:
                list(read(cut)) if read is iter_frames else read(cut)
            assert str(error.value) == f"{cut}: {MP4_CUT}", keep
    cut.write_bytes(data[: tags + 8])  # only the tags cut off: every frame is there
    assert len(list(iter_frames(cut))) == 60


def test_faststart_mp4_cut_is_read_up_to_the_break(tmp_path):
    data = write_faststart_mp4(tmp_path / "whole.mp4", synthetic_video(60, 32, 32, seed=1), fps=15).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with recorded_warnings() as caught:
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < 50 and probe(cut).num_frames == 60
    assert [str(w.message) for w in caught] == [
        f"{cut}: stream ended at {len(frames) / 15:.2f} s of the 4.00 s its header declares (truncated file?); "
        "using those"
    ]


def test_start_past_the_end_says_how_many_frames_there_are(tmp_path):
    path = write_video(tmp_path / "v.mp4", synthetic_video(12, 16, 16), fps=8)
    assert len(list(iter_frames(path, start=11))) == 1
    for start in (12, 1000):
        for read in (lambda: list(iter_frames(path, start=start)), lambda: read_video(path, start=start)):
            with pytest.raises(VideoError) as error:
                read()
            assert str(error.value) == f"{path}: start {start} is past the end of the video (12 frames)"


def test_ffmpeg_errors_say_their_cause_once(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(VideoError) as error:
        probe(noise)
    assert str(error.value) == f"{noise}: not a readable video (Invalid data found when processing input)"
    data = write_faststart_mp4(tmp_path / "whole.mp4", synthetic_video(8, 32, 32, seed=1), fps=15).read_bytes()
    cut = tmp_path / "first_frame_cut.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + 40])
    with pytest.raises(VideoError) as error:
        list(iter_frames(cut))
    assert str(error.value) == f"{cut}: cannot decode any frame (Invalid data found when processing input)"


# ------------------------------------------------------------------------------ file modes
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, mask, mode):
    """Videos, token files, checkpoint folders and a converted release (safetensors' own writer and
    `tempfile` would make the last two 0600 / 0700: unreadable to the rest of a shared machine)."""
    with umask(mask):
        video = write_video(tmp_path / "v.mp4", synthetic_video(3, 16, 16), fps=8)
        tokens = tiny_tokens().save(tmp_path / "t.itok")
        (tmp_path / "plain").write_text("x")
        checkpoint = tiny_model().save_pretrained(tmp_path / "ckpt")
        release = convert_release(RELEASE_FILE, tmp_path / "release")
    assert (tmp_path / "plain").stat().st_mode & 0o777 == mode  # what open() gives
    for path in (video, tokens, *checkpoint.iterdir(), *release.iterdir()):
        assert path.stat().st_mode & 0o777 == mode, path
    assert release.stat().st_mode & 0o777 == checkpoint.stat().st_mode & 0o777 == mode | 0o111 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "plain", "release", "t.itok", "v.mp4"]
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]  # no temporaries


# ------------------------------------------------------------------------------- odd sizes
@pytest.mark.parametrize("suffix", sorted(OUTPUT_FORMATS))
@pytest.mark.parametrize("height,width", [(171, 341), (64, 223), (23, 40)])
def test_odd_sizes_are_written_as_yuv420p_and_read_back_at_their_size(tmp_path, suffix, height, width):
    video = synthetic_video(3, height, width, seed=4)
    path = write_video(tmp_path / f"odd{suffix}", video, fps=10)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        coded = (stream.width, stream.height)
        tag = {k.lower(): v for k, v in c.metadata.items()}.get(SIZE_TAG)
    if suffix in (".mp4", ".mov", ".mkv"):  # H.264 4:2:0: padded to even, true size in the tag
        assert coded == (width + width % 2, height + height % 2)
        assert tag == (f"{width}x{height}" if coded != (width, height) else None)
    else:  # VP9 and MPEG-4 code odd sizes as they are
        assert coded == (width, height) and tag is None
    back, info = read_video(path)
    assert back.shape == video.shape and (info.width, info.height) == (width, height)
    error = np.abs(back.astype(int) - video)
    assert error.mean() < 6 and error[:, -1].mean() < 8 and error[:, :, -1].mean() < 8  # the edges survive
    small = np.stack(list(iter_frames(path, size=(width // 2, height // 2))))
    assert small.shape == (3, height // 2, width // 2, 3)


@pytest.mark.parametrize("suffix", sorted(OUTPUT_FORMATS))
def test_lossless_is_exact_in_every_container_at_odd_sizes(tmp_path, suffix):
    video = synthetic_video(4, 23, 37, seed=5)
    back, info = read_video(write_video(tmp_path / f"exact{suffix}", video, fps=8, lossless=True))
    assert np.array_equal(back, video) and (info.width, info.height) == (37, 23)


# ---------------------------------------------------------------------------- output paths
@pytest.mark.parametrize(
    "suffix,format_name,codec,magic",
    [
        (".mp4", "mp4", "h264", (4, b"ftypisom")),
        (".MP4", "mp4", "h264", (4, b"ftypisom")),
        (".mov", "mov", "h264", (4, b"ftypqt  ")),
        (".mkv", "matroska", "h264", (0, b"\x1aE\xdf\xa3")),
        (".webm", "webm", "vp9", (0, b"\x1aE\xdf\xa3")),
        (".avi", "avi", "mpeg4", (0, b"RIFF")),
    ],
)
def test_the_extension_chooses_the_container(tmp_path, suffix, format_name, codec, magic):
    path = write_video(tmp_path / f"v{suffix}", synthetic_video(3, 16, 16), fps=8)
    offset, expected = magic
    assert path.read_bytes()[offset : offset + len(expected)] == expected  # x.avi is an AVI file, not an MP4
    with av.open(str(path)) as c:
        assert format_name in c.format.name.split(",") and c.streams.video[0].codec_context.name == codec


def test_check_video_output(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert check_video_output(tmp_path / "new" / "deeper" / "x.MP4") == tmp_path / "new" / "deeper" / "x.MP4"
    cases = {
        str(tmp_path / "newdir") + os.sep: "ends with a separator",
        tmp_path / "folder": "is an existing folder",
        tmp_path / "x.gif": "cannot write .gif videos; use one of .avi, .mkv, .mov, .mp4, .webm",
        tmp_path / "x": "has no extension; use one of .avi, .mkv, .mov, .mp4, .webm",
        tmp_path / "file.txt" / "x.mp4": "file.txt is a file, not a folder",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message) as error:
            check_video_output(path)
        assert str(error.value).startswith(os.fspath(path)) and "\n" not in str(error.value)


def test_write_video_refuses_a_bad_path_before_writing(tmp_path):
    (tmp_path / "folder").mkdir()
    for path in (tmp_path / "folder", tmp_path / "x.gif", str(tmp_path / "newdir") + "/"):
        with pytest.raises(VideoError):
            write_video(path, iter([np.zeros((8, 8, 3), np.uint8)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any((tmp_path / "folder").iterdir())


def test_check_token_output(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "t.itok").write_bytes(b"")
    assert check_token_output(tmp_path / "a" / "t.ITOK") == tmp_path / "a" / "t.ITOK"
    for path, message in {
        tmp_path / "folder": "is an existing folder",
        str(tmp_path / "newdir") + os.sep: "ends with a separator",
        tmp_path / "t.mp4": "token files must end in .itok",
        tmp_path / "t": "token files must end in .itok",
        tmp_path / "t.itok" / "x.itok": "t.itok is a file, not a folder",
    }.items():
        with pytest.raises(ValueError, match=message):
            check_token_output(path)
        with pytest.raises(ValueError, match=message):
            TokenWriter(path, tiny_tokens().header, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "t.itok"]


def test_tokens_save_refuses_to_overwrite_unless_asked(tmp_path):
    tokens = tiny_tokens()
    path = tokens.save(tmp_path / "t.itok")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True") as error:
        tokens.save(path)
    assert str(path) in str(error.value) and path.read_bytes() == before
    tokens.header.fps = 4.0
    assert Tokens.load(tokens.save(path, overwrite=True)).header.fps == 4.0


# ------------------------------------------------------------------------------- listing
def test_list_videos_takes_other_suffixes_for_folders(tmp_path):
    for name in ("b.itok", "a.ITOK", "c.mp4", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.itok").mkdir()
    assert [p.name for p in list_videos([tmp_path])] == ["c.mp4"]
    assert [p.name for p in list_videos([tmp_path], suffixes={".itok"})] == ["a.ITOK", "b.itok"]
    assert [p.name for p in list_videos([tmp_path], suffixes=["itok", ".mp4"])] == ["a.ITOK", "b.itok", "c.mp4"]
    # globs and plain files pass through whatever the suffixes
    assert [p.name for p in list_videos([str(tmp_path / "*.txt"), tmp_path / "x.itok"], suffixes={".itok"})] == [
        "notes.txt",
        "x.itok",
    ]
