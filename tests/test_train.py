"""Training data and the training loop: reproducibility, learning, Flex fine-tuning, kill and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from infotok.data import VideoClipDataset
from infotok.model import InfoTok
from infotok.train import TrainConfig, Trainer
from infotok.video import synthetic_video, write_video
from tests.conftest import TINY_BASE, TINY_COMPRESSOR

TINY_TRAIN = dict(
    frames=5,
    crop=32,
    batch=2,
    lr=1e-2,
    warmup=2,
    log_every=1,
    workers=0,
    cache=None,
    base=asdict(TINY_BASE),
    compressor=asdict(TINY_COMPRESSOR),
)


@pytest.fixture
def video_folder(tmp_path):
    folder = tmp_path / "videos"
    for i in range(2):
        write_video(folder / f"v{i}.mp4", synthetic_video(24, 48, 64, seed=10 + i), fps=12)
    return folder


def read_log(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_dataset_items_are_reproducible_and_shaped(video_folder):
    paths = sorted(video_folder.iterdir())
    a = VideoClipDataset(paths, frames=9, crop=32, seed=1, synthetic_fraction=0.3)
    b = VideoClipDataset(paths, frames=9, crop=32, seed=1, synthetic_fraction=0.3)
    for k in (0, 5, 17):
        assert torch.equal(a[k], b[k])
        assert a[k].shape == (3, 9, 32, 32) and a[k].min() >= -1 and a[k].max() <= 1
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], VideoClipDataset(paths, frames=9, crop=32, seed=2)[0])


def test_border_augmentation_paints_static_flat_bars_on_opposite_edges(video_folder):
    paths = sorted(video_folder.iterdir())
    plain = VideoClipDataset(paths, frames=5, crop=32, seed=3, synthetic_fraction=0.5)
    framed = VideoClipDataset(paths, frames=5, crop=32, seed=3, synthetic_fraction=0.5, border_fraction=1.0)
    for k in range(8):
        x = framed[k]
        corners = x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # [3, T, 4]
        assert torch.equal(corners, corners[:, :1, :1].expand_as(corners))  # one flat colour, every frame
        # pillarbox: the first and last columns are flat; letterbox: the first and last rows
        cols, rows = x[:, :, :, [0, -1]], x[:, :, [0, -1], :]
        assert (cols == cols[:, :1, :1, :1]).all() or (rows == rows[:, :1, :1, :1]).all()
    # off by default and then draws nothing: existing runs replay the same data
    assert torch.equal(
        plain[4], VideoClipDataset(paths, frames=5, crop=32, seed=3, synthetic_fraction=0.5, border_fraction=0.0)[4]
    )


def test_elongated_crops_share_a_shape_within_each_batch_and_keep_the_area(video_folder):
    paths = sorted(video_folder.iterdir())
    data = VideoClipDataset(
        paths, frames=5, crop=32, seed=4, synthetic_fraction=0.3, long_side=64, long_fraction=0.6, batch=3
    )
    shapes = [tuple(data[k].shape[2:]) for k in range(36)]
    assert {shapes[k] for k in range(36)} == {(32, 32), (16, 64), (64, 16)}  # square, landscape, portrait
    for b in range(12):
        assert len(set(shapes[3 * b : 3 * b + 3])) == 1  # a batch stacks
        assert shapes[3 * b] == data.crop_shape(3 * b)
    # without elongated crops nothing changes: earlier runs replay the same items
    square = VideoClipDataset(paths, frames=5, crop=32, seed=4, synthetic_fraction=0.3)
    assert torch.equal(
        square[5],
        VideoClipDataset(
            paths, frames=5, crop=32, seed=4, synthetic_fraction=0.3, long_side=64, long_fraction=0.0, batch=3
        )[5],
    )
    with pytest.raises(ValueError, match="long_side"):
        VideoClipDataset(paths, frames=5, crop=32, long_side=16, long_fraction=0.5)


def test_short_base_training_run_lowers_the_loss_and_saves_a_loadable_checkpoint(tmp_path, video_folder):
    cfg = TrainConfig(kind="base", data=[str(video_folder)], out=str(tmp_path / "run"), steps=40, **TINY_TRAIN)
    Trainer(cfg, progress=False).run()
    log = read_log(tmp_path / "run" / "log.csv")
    assert len(log) == 40
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.8 * first
    model = InfoTok.from_pretrained(tmp_path / "run" / "model")
    assert (
        not model.adaptive
        and json.loads((tmp_path / "run" / "model" / "config.json").read_text())["trained_steps"] == 40
    )


def test_flex_fine_tuning_samples_rates_and_tracks_the_score_mean(tmp_path):
    base_cfg = TrainConfig(kind="base", out=str(tmp_path / "base"), steps=5, **TINY_TRAIN)
    Trainer(base_cfg, progress=False).run()
    cfg = TrainConfig(
        kind="infotok", out=str(tmp_path / "flex"), init=str(tmp_path / "base" / "model"), steps=12, **TINY_TRAIN
    )
    Trainer(cfg, progress=False).run()
    log = read_log(tmp_path / "flex" / "log.csv")
    assert {r["rate"] for r in log} <= {1.0, 0.75, 0.5, 0.25, 0.875, 0.625, 0.375}  # means of 2 clips
    assert len({r["rate"] for r in log}) > 1
    model = InfoTok.from_pretrained(tmp_path / "flex" / "model")
    assert model.adaptive and float(model.score_mean) > 0
    assert float(model.score_mean) == pytest.approx(log[-1]["score_ema"], rel=1e-3)


def test_elbo_rate_sampling_gives_each_clip_global_elbo_rate_of_a_flex_average(tmp_path):
    base_cfg = TrainConfig(kind="base", out=str(tmp_path / "base"), steps=2, **TINY_TRAIN)
    Trainer(base_cfg, progress=False).run()
    cfg = TrainConfig(
        kind="infotok",
        out=str(tmp_path / "elbo"),
        init=str(tmp_path / "base" / "model"),
        steps=1,
        rate_sampling="elbo",
        **TINY_TRAIN,
    )
    trainer = Trainer(cfg, progress=False)
    # a flat clip and a noisy one: the router must give the noisy clip the higher rate
    flat = torch.zeros(1, 3, 5, 32, 32)
    noisy = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = torch.cat([flat, noisy])
    with torch.no_grad():
        codes, _ = trainer.model.encode_codes(x)
        scores = [float(s) for s in trainer.model.router_scores(x, codes).mean(dim=(1, 2, 3))]
    assert scores[0] < scores[1]
    trainer.score_ema = scores[1]
    seen = []
    for step in range(8):
        trainer.step = step
        with torch.no_grad():  # the training pass: one encode, the router, masks at global_elbo rates
            _, rates, smap, _ = trainer.model(x, trainer._rates(2), "error", trainer.score_ema)
        rng = np.random.default_rng([cfg.seed, 7, step])
        averages = [float(rng.choice((1.0, 0.75, 0.5, 0.25))) for _ in range(2)]
        expected = [min(1.0, max(1 / 16, a * s / scores[1])) for a, s in zip(averages, scores)]
        assert rates == pytest.approx(expected)
        assert [float(s.mean()) for s in smap] == pytest.approx(scores)
        seen += rates
    assert len(set(np.round(seen, 6))) > 4  # rates off the Flex grid: the spread global_elbo produces


def test_resume_reads_the_step_from_the_state_file_and_accepts_older_states(tmp_path):
    cfg = TrainConfig(kind="base", out=str(tmp_path / "run"), steps=4, checkpoint_every=2, **TINY_TRAIN)
    Trainer(cfg, progress=False).run()
    state, meta = tmp_path / "run" / "train_state.safetensors", tmp_path / "run" / "train_state.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"step": 2}))  # a JSON left one checkpoint behind
    resumed = Trainer(cfg, progress=False)
    assert resumed.resume() and resumed.step == 4  # the tensors' own step wins
    # an older state: no metadata in the tensors' file, the step only in the JSON
    save_file(load_file(str(state)), str(state))
    older = Trainer(cfg, progress=False)
    assert older.resume() and older.step == 2


# Runs `infotok train` and SIGKILLs itself at a chosen moment: after a given training step, or in
# the middle of a checkpoint (after the tensors' rename, before the JSON's). Deterministic, unlike a
# kill from outside racing a fast run.
KILLER = """
import os, signal, sys
from infotok import train
from infotok.cli import main

when, at = sys.argv[1], int(sys.argv[2])
if when == "step":
    run = train.Trainer.run
    def hooked(self, on_step=None):
        return run(self, on_step=lambda step, loss: step == at and os.kill(os.getpid(), signal.SIGKILL))
    train.Trainer.run = hooked
else:
    replace = os.replace
    def dying_replace(src, dst):
        replace(src, dst)
        if str(dst).endswith("train_state.safetensors"):
            with train.safe_open(str(dst), "pt") as f:
                if f.metadata()["step"] == str(at):
                    os.kill(os.getpid(), signal.SIGKILL)
    os.replace = dying_replace
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("when, at, resumed_at", [("step", 13, 10), ("checkpoint", 15, 15)])
def test_training_killed_with_sigkill_resumes_and_continues_the_same_curve(tmp_path, when, at, resumed_at):
    def command(out, *extra):
        return [
            "train",
            "base",
            "--out",
            str(out),
            "--steps",
            "30",
            "--frames",
            "5",
            "--crop",
            "32",
            "--batch",
            "2",
            "--lr",
            "3e-3",
            "--warmup",
            "2",
            "--log-every",
            "1",
            "--checkpoint-every",
            "5",
            "--workers",
            "0",
            "--quiet",
            "--base-config",
            json.dumps(asdict(TINY_BASE)),
            *extra,
        ]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "infotok", *command(reference)], check=True, env=env, capture_output=True, timeout=300
    )

    run = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, when, str(at), *command(run)], env=env, capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    if when == "checkpoint":  # killed between the renames: the JSON still names the previous checkpoint
        assert json.loads((run / "train_state.json").read_text())["step"] == at - 5

    done = subprocess.run(
        [sys.executable, "-m", "infotok", *command(run, "--resume")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"resumed {run} at step {resumed_at}" in done.stderr
    ref_log, log = read_log(reference / "log.csv"), read_log(run / "log.csv")
    assert [r["step"] for r in log] == list(range(1, 31))
    assert np.allclose([r["loss"] for r in log], [r["loss"] for r in ref_log], rtol=1e-4, atol=1e-6)
