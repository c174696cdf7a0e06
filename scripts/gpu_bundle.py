"""Make `scripts/train_gpu.py` runnable on a lent GPU machine (the `device` tool), within what travels there.

That machine has PyTorch but neither PyAV nor vector-quantize-pytorch, and only the checkout travels, at most
64 MiB of it (../shared beside it does not). The tracked tree alone is about that size, mostly weights the training
run never reads. So, from the repository root:

    python scripts/gpu_bundle.py build      # .gpu/ (ignored): the wheels the machine lacks, the training clips
                                            # re-encoded small, the evaluation clips, run.sh; prints the sizes
    python scripts/gpu_bundle.py stage      # stop tracking the weights and test data the run does not read
    # device run: command "bash .gpu/run.sh", carry [".gpu"], timeout_s 600 (about 8 min of training + eval)
    python scripts/gpu_bundle.py restore    # track them again (they never left the disk), even after a failed call
    python scripts/gpu_bundle.py unpack DIR # DIR: the call's files_at; rejoins the runs into runs/gpu

`stage` runs `git rm --cached` on those files and lists them in .git/info/exclude (between marker lines), so git
and the device tool see them as ignored; `restore` undoes both. run.sh installs the wheels into /tmp/site, runs
`train_gpu.py --stages train,eval` on the bundled clips and packs the runs (checkpoints, logs, evaluations) into
parts under $OUT small enough to come back (16 MiB each). The CUDA tests need the shipped weights and PyAV at
once, more than travels: they are not part of this call (docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BUNDLE = ROOT / ".gpu"
LIMIT = 64 * 2**20  # what travels, at most (the device tool's limit)
PART = 15 * 2**20  # each file that comes back, under the tool's 16 MiB
# what the device's image lacks of infotok's needs (its package list: .library/device/KINDS.md)
MISSING = ("av", "vector-quantize-pytorch", "einx", "frozendict", "loguru", "torch-einops-utils")
# tracked files the training run does not read: the shipped and benchmark weights, test fixtures, pictures
NOT_NEEDED = ("src/infotok/weights/", "checkpoints/", "benchmarks/priors/", "tests/data/", "docs/")
MARK_BEGIN, MARK_END = "# gpu_bundle stage: begin", "# gpu_bundle stage: end"
CRF = 23  # the bundled training clips (the CPU's training cache uses 16; 23 is visually close, a third the size)

RUN_SH = r"""#!/bin/bash
# written by scripts/gpu_bundle.py build; runs on the device machine from the repository root
set -eo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
status=0
# 270 + 120 s of training: with the wheels, the model set-ups, both evaluations and the packing the call ends
# inside the device's 10 minutes a command
python3 scripts/train_gpu.py --out /tmp/gpu --data .gpu/train --eval .gpu/eval --stages train,eval \
    --base-seconds 270 --flex-seconds 120 "$@" || status=$?
python3 scripts/gpu_bundle.py pack /tmp/gpu "${OUT:-/tmp/gpu-out}"
exit $status
"""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def constrained_version(name: str) -> str:
    """The tested version (constraints.txt) of a package, so the device runs what CI tests."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"{name} is not pinned in constraints.txt")


def size_of(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def travelling() -> int:
    """Bytes the device tool would send now: tracked and untracked-not-ignored files, plus .gpu (carried)."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return size_of(ROOT / name for name in listed if name) + size_of(BUNDLE.rglob("*"))


def build(args) -> None:
    from infotok.data import prepare_cache
    from infotok.files import list_videos

    wheels = BUNDLE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for name in MISSING:
        pin = f"{name}=={constrained_version(name)}"
        platforms = [
            f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
        ]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), pin],
            check=True,
        )  # fmt: skip
    train = list_videos([str(args.train)])
    made = prepare_cache(train, BUNDLE / "train", short_side=256, crf=CRF)
    for stale in set((BUNDLE / "train").glob("*.mp4")) - set(made):  # clips of an earlier build's sources
        stale.unlink()
    (BUNDLE / "eval").mkdir(exist_ok=True)
    for clip in list_videos([str(args.eval)]):
        shutil.copy2(clip, BUNDLE / "eval" / clip.name)
    (BUNDLE / "run.sh").write_text(RUN_SH)
    for part in ("wheels", "train", "eval"):
        print(f".gpu/{part}: {size_of((BUNDLE / part).rglob('*')) / 2**20:.1f} MiB")
    report()


def staged_paths() -> list[str]:
    return [p for p in git("ls-files", "-z", "--", *NOT_NEEDED).split("\0") if p]


def exclude_file() -> Path:
    return ROOT / git("rev-parse", "--git-path", "info/exclude").strip()


def without_stage_block(text: str) -> str:
    lines, inside = [], False
    for line in text.splitlines():
        if line == MARK_BEGIN:
            inside = True
        elif line == MARK_END:
            inside = False
        elif not inside:
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def stage(_args) -> None:
    paths = staged_paths()
    if not paths:
        raise SystemExit("nothing to stage: already staged? (python scripts/gpu_bundle.py restore undoes it)")
    exclude = exclude_file()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    block = "\n".join([MARK_BEGIN, *(f"/{p}" for p in paths), MARK_END])
    exclude.write_text(without_stage_block(exclude.read_text() if exclude.exists() else "") + block + "\n")
    subprocess.run(["git", "rm", "-q", "--cached", "--", *paths], cwd=ROOT, check=True)
    print(f"untracked {len(paths)} files ({size_of(ROOT / p for p in paths) / 2**20:.1f} MiB); restore afterwards")
    report()


def restore(_args) -> None:
    exclude = exclude_file()
    if not exclude.exists() or MARK_BEGIN not in exclude.read_text():
        raise SystemExit("nothing staged")
    text = exclude.read_text()
    paths = [line[1:] for line in text.split(MARK_BEGIN, 1)[1].split(MARK_END, 1)[0].split()]
    exclude.write_text(without_stage_block(text))
    subprocess.run(["git", "reset", "-q", "--", *paths], cwd=ROOT, check=True)
    print(f"tracked again: {len(paths)} files")


def report() -> None:
    size = travelling()
    verdict = "fits" if size <= LIMIT else "too large: run `stage` first" if staged_paths() else "too large"
    print(f"would travel: {size / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} ({verdict})")


def pack(args) -> None:
    """On the device: the runs' checkpoints (floating weights in float16, as the shipped ones), logs and evaluations
    into one archive, cut into parts that come back; summary.json beside them. Optimizer states stay behind."""
    import torch

    from infotok import checkpoint
    from infotok.model import InfoTok

    runs, out, packed = Path(args.runs), Path(args.out), Path("/tmp/gpu-pack/gpu")
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(packed.parent, ignore_errors=True)
    for f in runs.rglob("*"):
        if f.is_file() and not f.name.startswith("train_state") and f.parent.name != "model":
            (packed / f.relative_to(runs)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, packed / f.relative_to(runs))
    for model in runs.glob("*/model"):
        config = json.loads((model / checkpoint.CONFIG_FILE).read_text())
        checkpoint.save(InfoTok.from_pretrained(model), config, packed / model.relative_to(runs), torch.float16)
    if (runs / "summary.json").exists():
        shutil.copy2(runs / "summary.json", out / "summary.json")
    archive = packed.parent / "runs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(packed, arcname="gpu")
    with open(archive, "rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(PART), b"")):
            (out / f"runs.tar.{i:02d}").write_bytes(chunk)
    print(json.dumps({"parts": i + 1, "bytes": archive.stat().st_size}))


def unpack(args) -> None:
    parts = sorted(Path(args.files_at).rglob("runs.tar.*"))
    if not parts:
        raise SystemExit(f"no runs.tar.* under {args.files_at}")
    into = Path(args.into or ROOT / "runs")
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "gpu-runs.tar"
    archive.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    print(f"{into / 'gpu'}: {', '.join(sorted(p.name for p in (into / 'gpu').iterdir()))}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="write .gpu/ and print what would travel")
    b.add_argument("--train", type=Path, default=SHARED / "train_videos")
    b.add_argument("--eval", type=Path, default=SHARED / "videos")
    sub.add_parser("stage", help="untrack what the run does not read")
    sub.add_parser("restore", help="track it again")
    sub.add_parser("size", help="print what would travel now")
    k = sub.add_parser("pack", help="(on the device) runs -> parts under OUT")
    k.add_argument("runs")
    k.add_argument("out")
    u = sub.add_parser("unpack", help="the returned parts -> runs/gpu")
    u.add_argument("files_at")
    u.add_argument("--into", help="folder to unpack gpu/ into (default: runs)")
    args = p.parse_args(argv)
    {"build": build, "stage": stage, "restore": restore, "size": lambda _: report(), "pack": pack, "unpack": unpack}[
        args.verb
    ](args)


if __name__ == "__main__":
    main()
