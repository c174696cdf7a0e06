"""Prepare the GPU runs (scripts/train_gpu.py, the CUDA tests, the 1D register network) for a lent machine.

That machine has PyTorch but neither PyAV nor vector-quantize-pytorch, and only the checkout travels, at most
64 MiB of it (../shared beside it does not). The tracked tree alone is about that size, mostly weights, and PyAV's
wheel is 34 MiB. So each call carries a folder of its own (run from the repository root, in this order):

    python scripts/gpu_bundle.py build        # .gpu/, .gpu-tests/, .gpu-1d/ (ignored); what each call would send
    python scripts/gpu_bundle.py stage train  # stop tracking what the call does not read (weights, test data, docs)
    # device run: command "bash .gpu/run.sh", carry [".gpu"], timeout_s 600
    python scripts/gpu_bundle.py restore      # track it again (it never left the disk), even after a failed call
    python scripts/gpu_bundle.py unpack DIR   # DIR: the call's files_at; the runs -> runs/gpu
    python scripts/gpu_bundle.py stage tests  # the same, keeping the shipped InfoTok-Flex and 1D weights
    # device run: command "bash .gpu-tests/run.sh", carry [".gpu-tests"], timeout_s 300; then restore
    python scripts/gpu_bundle.py stage registers  # issue #31 instead: the 1D register network, 8 min from scratch
    # device run: command "bash .gpu-1d/run.sh", carry [".gpu-1d"], timeout_s 600; then restore and unpack

`stage` runs `git rm --cached` on those files and lists them in .git/info/exclude (between marker lines), so git
and the device tool see them as ignored; `restore` undoes both. The train call installs the wheels the machine lacks
into /tmp/site, runs `train_gpu.py --stages train,eval` on the bundled clips (the training clips re-encoded small,
the evaluation clips as they are) and packs the runs (checkpoints in float16, logs, evaluations) into parts under
$OUT small enough to come back (16 MiB each). The tests and registers calls read no video: a stand-in `av` lets
infotok import without PyAV, and the CUDA tests' clip comes decoded (`INFOTOK_CUDA_CLIP`). docs/TRAINING.md has more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LIMIT = 64 * 2**20  # what travels, at most (the device tool's limit)
PART = 15 * 2**20  # each file that comes back, under the tool's 16 MiB
# what the device's image lacks of infotok's needs (the device tool's package list)
MISSING = ("av", "vector-quantize-pytorch", "einx", "frozendict", "loguru", "torch-einops-utils")
# tracked files no call reads: the shipped and benchmark weights, test fixtures, docs; the tests call keeps two
NOT_NEEDED = ("src/infotok/weights/", "checkpoints/", "benchmarks/priors/", "tests/data/", "docs/")
SHIPPED = ("src/infotok/weights/infotok-flex/", "src/infotok/weights/infotok-1d/")
BUNDLES = {"train": ".gpu", "tests": ".gpu-tests", "registers": ".gpu-1d"}  # each call carries its folder (`carry`)
MARK_BEGIN, MARK_END = "# gpu_bundle stage: begin", "# gpu_bundle stage: end"
CRF = 23  # the bundled training clips (the CPU's training cache uses 16; 23 is visually close, a third the size)
INSTALL = r"""#!/bin/bash
# written by scripts/gpu_bundle.py build; runs on the device machine from the repository root
set -eo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    {bundle}/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
"""
RUN_SH = {
    "train": INSTALL.format(bundle=".gpu")
    + r"""status=0
# 270 + 120 s of training: with the wheels, the model set-ups, both evaluations and the packing the call ends
# inside the device's 10 minutes a command
python3 scripts/train_gpu.py --out /tmp/gpu --data .gpu/train --eval .gpu/eval --stages train,eval \
    --base-seconds 270 --flex-seconds 120 "$@" || status=$?
python3 scripts/gpu_bundle.py pack /tmp/gpu "${OUT:-/tmp/gpu-out}"
exit $status
""",
    # issue #31: the 1D layout's register network from scratch on the base codes of the training clips (the shipped
    # one had 215 s of an H200 and was still improving); no video and no weights are read, only latents.npz, so
    # the stand-in `av` lets infotok import
    "registers": INSTALL.format(bundle=".gpu-1d")
    + r"""export PYTHONPATH=$PYTHONPATH:$PWD/.gpu-1d/stand-in
mkdir -p /tmp/gpu
python3 -m infotok train registers --latents .gpu-1d/latents.npz --out /tmp/gpu/registers --batch 32 --lr 5e-4 \
    --warmup 200 --log-every 100 --checkpoint-every 1000000 --steps 1000000 --time-limit 480 \
    --mixed-precision bf16 "$@" 2>&1 | tee /tmp/gpu/train-registers.log
status=${PIPESTATUS[0]}
python3 scripts/gpu_bundle.py pack /tmp/gpu "${OUT:-/tmp/gpu-out}"
exit $status
""",
    # PyAV's wheel and the shipped weights together are more than travels: a stand-in `av` lets infotok import
    # (no video is read: the clip comes decoded, clip.npz)
    "tests": INSTALL.format(bundle=".gpu-tests")
    + r"""export PYTHONPATH=$PYTHONPATH:$PWD/.gpu-tests/stand-in INFOTOK_CUDA_CLIP=$PWD/.gpu-tests/clip.npz
mkdir -p "${OUT:=/tmp/gpu-out}"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_distributed.py -k cuda "$@" 2>&1 \
    | tee "$OUT/cuda-tests.log"
""",
}
STAND_IN = '"""A stand-in for PyAV on the lent GPU machine (scripts/gpu_bundle.py): no video is read there."""\n'


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


def travelling(call: str) -> int:
    """Bytes the device tool would send now: tracked and untracked-not-ignored files, plus the call's folder."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return size_of(ROOT / name for name in listed if name) + size_of((ROOT / BUNDLES[call]).rglob("*"))


def download_wheels(folder: Path, names) -> None:
    """constraints.txt's versions, built for the device's Python (3.12, x86-64 Linux)."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    pins = [f"{name}=={constrained_version(name)}" for name in names]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *platforms, "-d", str(folder), *pins],
        check=True,
    )  # fmt: skip


def build(args) -> None:
    from infotok.data import prepare_cache
    from infotok.files import list_videos
    from infotok.video import read_video, resize_and_crop

    train, tests = ROOT / BUNDLES["train"], ROOT / BUNDLES["tests"]
    download_wheels(train / "wheels", MISSING)
    made = prepare_cache(list_videos([str(args.train)]), train / "train", short_side=256, crf=CRF)
    for stale in set((train / "train").glob("*.mp4")) - set(made):  # clips of an earlier build's sources
        stale.unlink()
    (train / "eval").mkdir(exist_ok=True)
    clips = list_videos([str(args.eval)])
    for clip in clips:
        shutil.copy2(clip, train / "eval" / clip.name)
    one_d = ROOT / BUNDLES["registers"]
    for folder in (tests, one_d):  # calls that read no video: no PyAV, a stand-in to import
        (folder / "wheels").mkdir(parents=True, exist_ok=True)
        for wheel in (train / "wheels").glob("*.whl"):  # the train call's, PyAV's aside
            if not wheel.name.startswith("av-"):
                shutil.copy2(wheel, folder / "wheels" / wheel.name)
        (folder / "stand-in" / "av").mkdir(parents=True, exist_ok=True)
        (folder / "stand-in" / "av" / "__init__.py").write_text(STAND_IN)
    # what tests/test_cuda.py's clip fixture makes of the first evaluation clip
    np.savez_compressed(tests / "clip.npz", clip=resize_and_crop(read_video(clips[0], max_frames=33)[0], 256))
    if not (one_d / "latents.npz").exists():  # the installed InfoTok-Flex's base codes of every training clip
        subprocess.run(
            [sys.executable, "-m", "infotok", "train", "latents", "--data", str(args.train), "--out",
             str(one_d / "latents.npz")],
            check=True,
        )  # fmt: skip
    for call, folder in (("train", train), ("tests", tests), ("registers", one_d)):
        (folder / "run.sh").write_text(RUN_SH[call])
        parts = ", ".join(f"{p.name} {size_of(p.rglob('*')) / 2**20:.1f} MiB" for p in folder.iterdir() if p.is_dir())
        print(f"{BUNDLES[call]}: {parts}")
        report(call)


def staged_paths(call: str) -> list[str]:
    keep = SHIPPED if call == "tests" else ()
    return [p for p in git("ls-files", "-z", "--", *NOT_NEEDED).split("\0") if p and not p.startswith(keep)]


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


def stage(args) -> None:
    exclude = exclude_file()
    if exclude.exists() and MARK_BEGIN in exclude.read_text():
        raise SystemExit("already staged: python scripts/gpu_bundle.py restore first")
    paths = staged_paths(args.call)
    exclude.parent.mkdir(parents=True, exist_ok=True)
    block = "\n".join([MARK_BEGIN, *(f"/{p}" for p in paths), MARK_END])
    exclude.write_text(without_stage_block(exclude.read_text() if exclude.exists() else "") + block + "\n")
    subprocess.run(["git", "rm", "-q", "--cached", "--", *paths], cwd=ROOT, check=True)
    print(f"untracked {len(paths)} files ({size_of(ROOT / p for p in paths) / 2**20:.1f} MiB); restore afterwards")
    report(args.call)


def restore(_args) -> None:
    exclude = exclude_file()
    if not exclude.exists() or MARK_BEGIN not in exclude.read_text():
        raise SystemExit("nothing staged")
    text = exclude.read_text()
    paths = [line[1:] for line in text.split(MARK_BEGIN, 1)[1].split(MARK_END, 1)[0].split()]
    exclude.write_text(without_stage_block(text))
    subprocess.run(["git", "reset", "-q", "--", *paths], cwd=ROOT, check=True)
    print(f"tracked again: {len(paths)} files")


def report(call: str) -> None:
    size = travelling(call)
    verdict = "fits" if size <= LIMIT else f"too large: python scripts/gpu_bundle.py stage {call}"
    print(f"the {call} call would send {size / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} ({verdict})")


def pack(args) -> None:
    """On the device: the runs' checkpoints (floating weights in float16, as the shipped ones), logs and evaluations
    into one archive, cut into parts that come back; summary.json beside them. Optimizer states stay behind."""
    import torch

    from infotok import checkpoint
    from infotok.model import InfoTok

    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        packed = Path(scratch) / "gpu"
        packed.mkdir()  # a run that failed early still sends back what it wrote
        for f in runs.rglob("*"):
            if f.is_file() and not f.name.startswith("train_state") and f.parent.name != "model":
                (packed / f.relative_to(runs)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, packed / f.relative_to(runs))
        for model in runs.glob("*/model"):
            config = json.loads((model / checkpoint.CONFIG_FILE).read_text())
            target = packed / model.relative_to(runs)
            if config.get("layout") == "1d":  # exported in float16 already; it loads only beside its base's weights
                shutil.copytree(model, target)
            else:
                checkpoint.save(InfoTok.from_pretrained(model), config, target, torch.float16)
        archive = Path(scratch) / "runs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(packed, arcname="gpu")
        with open(archive, "rb") as f:
            for i, chunk in enumerate(iter(lambda: f.read(PART), b"")):
                (out / f"runs.tar.{i:02d}").write_bytes(chunk)
        print(json.dumps({"parts": i + 1, "bytes": archive.stat().st_size}))
    if (runs / "summary.json").exists():
        shutil.copy2(runs / "summary.json", out / "summary.json")


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
    b = sub.add_parser("build", help="write each call's folder and print what it would send")
    b.add_argument("--train", type=Path, default=SHARED / "train_videos")
    b.add_argument("--eval", type=Path, default=SHARED / "videos")
    for verb, what in (("stage", "untrack what the call does not read"), ("size", "print what the call would send")):
        sub.add_parser(verb, help=what).add_argument("call", choices=sorted(BUNDLES))
    sub.add_parser("restore", help="track it again")
    k = sub.add_parser("pack", help="(on the device) runs -> parts under OUT")
    k.add_argument("runs")
    k.add_argument("out")
    u = sub.add_parser("unpack", help="the returned parts -> runs/gpu")
    u.add_argument("files_at")
    u.add_argument("--into", help="folder to unpack gpu/ into (default: runs)")
    args = p.parse_args(argv)
    verbs = {"build": build, "stage": stage, "restore": restore, "pack": pack, "unpack": unpack}
    verbs["size"] = lambda a: report(a.call)
    verbs[args.verb](args)


if __name__ == "__main__":
    main()
