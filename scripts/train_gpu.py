"""Train a larger base tokenizer and its InfoTok-Flex stack on one GPU in bf16, evaluate both, run the CUDA tests.

    python scripts/train_gpu.py --out runs/gpu             # about 8 minutes of training on one H200
    python scripts/train_gpu.py --out runs/gpu --dry-run   # the same commands for a few CPU steps (make test)

Every stage is the project's own command (`infotok train base`, `infotok train infotok`, `infotok eval`,
pytest), so the folders it writes are ordinary checkpoint runs: OUT/base/model and OUT/flex/model (weights +
config), OUT/base/log.csv and OUT/flex/log.csv (loss and PSNR), OUT/eval-base.json and OUT/eval-flex.json, and
OUT/summary.json with each stage's wall time and exit status and the rate-1 PSNR on the evaluation clips.
A stage that fails is reported there and the stages that do not need it still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# 12.7M parameters: the shipped base's stages (3.8M) made wider and deeper where the CPU could not afford it
LARGE_BASE = {"enc_hi": 96, "enc_lo": 256, "dec_lo": 320, "dec_hi": 160, "dec_lo_blocks": 4, "dec_hi_blocks": 3}
# on a GPU: clips of 17 frames at 128x128 like the CPU base, a larger batch, data decoded by many processes
GPU = {"batch": 32, "frames": 17, "crop": 128, "workers": 14, "precision": "bf16", "eval_frames": 33, "eval_size": 256}
DRY = {"batch": 2, "frames": 5, "crop": 32, "workers": 0, "precision": "no", "eval_frames": 5, "eval_size": 32}


def train_args(kind: str, out: Path, data: list[str], seconds: float, settings: dict, dry: bool) -> list[str]:
    args = ["train", kind, "--out", str(out), "--data", *data, "--cache", "", "--quiet", "--overwrite"]
    args += ["--batch", str(settings["batch"]), "--frames", str(settings["frames"]), "--crop", str(settings["crop"])]
    args += ["--workers", str(settings["workers"]), "--mixed-precision", settings["precision"]]
    if dry:
        return args + ["--steps", "2", "--warmup", "1", "--log-every", "1", "--checkpoint-every", "2"]
    # steps far past what the time allows: the time limit ends the run and the cosine schedule follows it
    return args + ["--steps", "1000000", "--time-limit", str(seconds), "--log-every", "50", "--checkpoint-every", "500"]


def run_stage(name: str, command: list[str], summary: dict, out: Path) -> bool:
    """Run one stage, its output into OUT/<name>.log; record its wall time and exit status."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.time()
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    summary["stages"][name] = {"seconds": round(time.time() - start, 1), "exit": code}
    print(f"== {name}: exit {code} after {time.time() - start:.0f} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return code == 0


def last_log_row(run: Path) -> dict:
    lines = (run / "log.csv").read_text().splitlines()
    return dict(zip(lines[0].split(","), lines[-1].split(",")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs, evaluations and summary.json")
    p.add_argument("--data", nargs="+", default=[str(SHARED / "train_videos")], help="training videos or folders")
    p.add_argument("--eval", default=str(SHARED / "videos"), help="evaluation videos (never trained on)")
    p.add_argument("--base-seconds", type=float, default=300, help="training time of the base (default 300)")
    p.add_argument("--flex-seconds", type=float, default=150, help="training time of the Flex stack (default 150)")
    p.add_argument("--dry-run", action="store_true", help="a few CPU steps of every stage, tiny clips, no tests")
    p.add_argument(
        "--stages",
        default="train,eval,tests",
        help="which of train, eval, tests to run (eval and tests use OUT's runs from an earlier train)",
    )
    args = p.parse_args(argv)

    import torch

    dry = args.dry_run
    stages = set(args.stages.split(","))
    if not stages <= {"train", "eval", "tests"}:
        p.error(f"--stages takes train, eval and tests, got {args.stages!r}")
    if not dry and not torch.cuda.is_available():
        p.error("no CUDA device here; --dry-run runs the same stages for a few CPU steps")
    settings = DRY if dry else GPU
    device = "cpu" if dry else "cuda"
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    infotok = [sys.executable, "-m", "infotok"]
    summary = {
        "device": torch.cuda.get_device_name() if not dry else "cpu (dry run)",
        "torch": torch.__version__,
        "large_base": LARGE_BASE,
        "settings": settings,
        "stages": {},
    }
    base, flex = out / "base", out / "flex"
    trained = {}  # the runs to evaluate: this call's, or (without train) those an earlier call left in OUT
    if "train" not in stages:
        trained = {name: run for name, run in (("base", base), ("flex", flex)) if (run / "model").is_dir()}
        if (out / "summary.json").exists():  # keep the training stages' record
            summary = json.loads((out / "summary.json").read_text()) | {"device": summary["device"]}
    base_args = train_args("base", base, args.data, args.base_seconds, settings, dry)
    if "train" in stages and run_stage(
        "train-base", infotok + base_args + ["--base-config", json.dumps(LARGE_BASE)], summary, out
    ):
        trained["base"] = base
        flex_args = train_args("infotok", flex, args.data, args.flex_seconds, settings, dry)
        if run_stage("train-flex", infotok + flex_args + ["--init", str(base / "model")], summary, out):
            trained["flex"] = flex
    for name, run in trained.items():
        row = last_log_row(run)
        summary[name] = {
            "steps": int(row["step"]),
            "train_psnr": float(row["psnr"]),
            "frames_per_s": row["frames_per_s"],
        }
        evaluation = out / f"eval-{name}.json"
        # rate 1 for both; the Flex stack also at lower rates, with fixed rates (it is not calibrated)
        rates = (
            ["--rates", "1"]
            if name == "base"
            else ["--rates", "1,0.5,0.25", "--strategy", "static", "--selection", "error", "--fill", "mask"]
        )
        command = infotok + ["eval", args.eval, "--checkpoint", str(run / "model"), "--device", device, *rates]
        command += [
            "--frames",
            str(settings["eval_frames"]),
            "--size",
            str(settings["eval_size"]),
            "--json",
            str(evaluation),
        ]
        if "eval" in stages and run_stage(f"eval-{name}", command, summary, out):
            results = json.loads(evaluation.read_text())["results"]
            summary[name]["eval_psnr"] = {str(r["rate"]): round(r["psnr"], 3) for r in results}
    if "tests" in stages and not dry:
        run_stage("cuda-tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
                                 "tests/test_distributed.py", "-k", "cuda"], summary, out)  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if all(stage["exit"] == 0 for stage in summary["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
