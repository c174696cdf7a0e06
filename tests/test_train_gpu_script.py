"""scripts/train_gpu.py: its CPU dry run goes through every stage (the GPU run itself is in docs/TRAINING.md)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from infotok import InfoTok

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_gpu.py"


def test_the_dry_run_trains_the_large_base_and_its_flex_stack_evaluates_both_and_reports(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--out", tmp_path, "--dry-run"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {name: stage["exit"] for name, stage in summary["stages"].items()} == dict.fromkeys(
        ("train-base", "train-flex", "eval-base", "eval-flex"), 0
    )
    assert summary["base"]["steps"] == summary["flex"]["steps"] == 2
    assert set(summary["flex"]["eval_psnr"]) == {"1.0", "0.5", "0.25"}
    flex = InfoTok.from_pretrained(tmp_path / "flex" / "model")
    assert flex.adaptive and flex.base.config.dec_lo == summary["large_base"]["dec_lo"]
    for run in ("base", "flex"):
        assert (tmp_path / run / "log.csv").is_file()


def test_without_a_gpu_it_says_so_and_points_to_the_dry_run(tmp_path):
    if torch.cuda.is_available():
        return  # the real run is what this machine is for
    done = subprocess.run([sys.executable, SCRIPT, "--out", tmp_path], capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA device here; --dry-run" in done.stderr
