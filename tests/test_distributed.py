"""Training across processes and on GPUs: `accelerate launch` with 2 CPU processes (gloo) must train
exactly what one process does with the same global batch, keep the ranks identical and resume after
a kill; bf16 autocast keeps FSQ in fp32 and the EMA on the parameters' device."""

import csv
import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from infotok.train import EMA, TrainConfig, Trainer
from tests.conftest import TINY_BASE, TINY_COMPRESSOR, tiny_model

LAUNCHER = Path(__file__).with_name("launch_train.py")
STEPS, KILL_AT, EVERY = 12, 7, 5


def read_log(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(
    out: Path, processes: int, batch: int, *extra: str, kind: str = "base", kill_at: int | None = None
) -> subprocess.CompletedProcess:
    """`infotok train KIND` on `processes` CPU processes with `batch` clips each (tests/launch_train.py)."""
    args = [
        "train",
        kind,
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--batch",
        str(batch),
        "--frames",
        "5",
        "--crop",
        "32",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--log-every",
        "1",
        "--checkpoint-every",
        str(EVERY),
        "--workers",
        "0",
        "--quiet",
        "--base-config",
        json.dumps(asdict(TINY_BASE)),
        *extra,
    ]
    script = [str(LAUNCHER), *(["--kill-at", str(kill_at)] if kill_at else []), *args]
    if processes == 1:
        command = [sys.executable, *script]
    else:  # accelerate's torchrun launcher; ACCELERATE_USE_CPU makes the processes a gloo group on the CPU
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            *script,
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_train_what_one_does_with_the_same_global_batch_and_resume_after_a_kill(tmp_path):
    reference = tmp_path / "one"
    done = train(reference, 1, 4)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "two"
    killed = train(run, 2, 2, kill_at=KILL_AT)
    assert killed.returncode != 0
    assert json.loads((run / "train_state.json").read_text())["step"] == EVERY
    assert not (run / "rank0.json").exists()

    resumed = train(run, 2, 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {run} at step {EVERY}" in resumed.stderr

    ranks = [json.loads((run / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["processes"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [STEPS, STEPS]
    assert ranks[0]["params"] == ranks[1]["params"] and ranks[0]["ema"] == ranks[1]["ema"]

    one, two = read_log(reference / "log.csv"), read_log(run / "log.csv")
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))  # rows past the checkpoint written again
    for key in ("loss", "psnr"):
        assert np.allclose([r[key] for r in two], [r[key] for r in one], rtol=1e-4, atol=1e-6), key
    a, b = load_file(str(reference / "train_state.safetensors")), load_file(str(run / "train_state.safetensors"))
    for key in (k for k in a if k.startswith(("model.", "ema."))):
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key


def test_two_processes_fine_tune_infotok_flex_as_one_does_rates_router_and_elongated_crops(tmp_path):
    """The rates of the global batch, the router pass under DDP, the score mean from every process's
    scores, and elongated crops that share one shape across the global batch."""
    base = tiny_model(adaptive=False).save_pretrained(tmp_path / "base")
    extra = [
        "--init",
        str(base),
        "--compressor-config",
        json.dumps(asdict(TINY_COMPRESSOR)),
        "--rate-sampling",
        "elbo",
        "--long-side",
        "64",
        "--long-fraction",
        "0.5",
    ]
    for out, processes, batch in ((tmp_path / "one", 1, 4), (tmp_path / "two", 2, 2)):
        done = train(out, processes, batch, *extra, kind="infotok")
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_log(tmp_path / "one" / "log.csv"), read_log(tmp_path / "two" / "log.csv")
    assert len({r["rate"] for r in one}) > 1 and one[-1]["score_ema"] > 0
    for key in ("loss", "psnr", "rate", "score_ema"):
        assert np.allclose([r[key] for r in two], [r[key] for r in one], rtol=1e-4, atol=1e-6), key


# ------------------------------------------------------------------------------- precision, device
def cuda() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")


def test_the_ema_is_one_fused_lerp_on_the_parameters_device_and_follows_them():
    model = tiny_model(adaptive=False)
    ema = EMA(model)
    assert all(s.device == p.device and s.dtype == torch.float32 for s, p in zip(ema.shadow, model.parameters()))
    before = [s.clone() for s in ema.shadow]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 0.75)
    for old, new, p in zip(before, ema.shadow, model.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * p)


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one state per process, with its precision: reset it around a bf16 trainer."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda())])
def test_bf16_autocast_keeps_fsq_in_fp32_and_a_training_step_stays_finite(tmp_path, device, fresh_accelerate):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 5, 32, 32, device=device) * 2 - 1
    model = tiny_model(adaptive=True).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        h = model.base.encode_features(x)
        codes, indices = model.encode_codes(x)
    assert h.dtype == torch.bfloat16  # the convolutions do run in bf16 ...
    assert codes.dtype == torch.float32  # ... but the quantizer's rounding does not move with them
    with torch.no_grad():
        full_codes, full_indices = model.encode_codes(x)
    assert (indices == full_indices).float().mean() > 0.9

    cfg = TrainConfig(
        kind="base",
        out=str(tmp_path / "run"),
        steps=2,
        batch=2,
        frames=5,
        crop=32,
        warmup=1,
        log_every=1,
        workers=0,
        cache=None,
        mixed_precision="bf16",
        base=asdict(TINY_BASE),
    )
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    assert device == "cpu" or next(trainer.model.parameters()).device.type == "cuda"  # accelerate's pick
    assert all(s.device.type == p.device.type for s, p in zip(trainer.ema.shadow, trainer.model.parameters()))
    assert all(np.isfinite(r["loss"]) for r in read_log(tmp_path / "run" / "log.csv"))


def test_the_prior_trains_on_two_processes_in_step_and_resumes(tmp_path):
    """`train prior` (the small trainers' loop) under `accelerate launch`: each process draws its own batches,
    the gradients are averaged, the weights agree at every checkpoint (checked there), one log, and a resume."""
    from infotok.shards import ShardWriter, model_identity
    from infotok.video import synthetic_video, write_video
    from tests.test_prior import SMALL

    model = tiny_model()
    settings = dict(rate=0.4, strategy="static", selection="error", window=9, overlap=1)
    record = settings | {"size": None, "max_size": None, "seed": 0, "start": 0, "max_frames": None}
    writer = ShardWriter(tmp_path / "shards", model_identity(model), record)
    for seed in range(5):
        clip = write_video(tmp_path / f"c{seed}.mp4", synthetic_video(17, 40, 48, seed=seed), fps=8)
        writer.add_tokens(str(clip), model.tokenize(clip, **settings))
    writer.close()
    run = tmp_path / "run"
    args = ["train", "prior", "--shards", str(tmp_path / "shards"), "--out", str(run), "--quiet", "--batch", "2"]
    args += ["--prior-config", json.dumps(SMALL), "--log-every", "1", "--checkpoint-every", "2"]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "infotok",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    for steps, resume in ((4, []), (6, ["--resume"])):
        done = subprocess.run(launch + args + ["--steps", str(steps), *resume], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    with open(run / "log.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]  # the main process logs
    generators = load_file(str(run / "train_state.safetensors"))["generators"]
    assert generators.shape[0] == 2 and not torch.equal(generators[0], generators[1])  # each drew its own batches
    assert json.loads((run / "model" / "config.json").read_text())["trained_steps"] == 6
