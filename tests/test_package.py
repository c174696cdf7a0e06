"""The package as users install it: dependency ranges and their pins, the default checkpoint's
location, and the wheel in a fresh virtual environment with nothing but its core dependencies."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import infotok
from infotok import checkpoint
from infotok.checkpoint import CheckpointError
from infotok.model import InfoTok

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "av", "numpy", "safetensors", "einops", "vector-quantize-pytorch", "tqdm", "pillow", "constriction"}
OPTIONAL = {"accelerate", "torchmetrics", "matplotlib", "imageio-ffmpeg", "huggingface-hub"}


def requirement(text: str) -> tuple[str, str]:
    name, op, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(>=|==)?\s*([^,;\s]*).*", text).groups()
    return name.lower().replace("_", "-"), f"{op or ''}{version}"


def test_dependencies_are_ranges_whose_lower_bounds_are_the_pinned_tested_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        requirement(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert {requirement(r)[0] for r in project["dependencies"]} == CORE
    extras = project["optional-dependencies"]
    assert {"train", "eval", "hub", "test"} <= set(extras)
    wanted = [r for group in ("dependencies",) for r in project[group]] + [
        r for name, group in extras.items() for r in group if not r.startswith("infotok")
    ]
    for text in wanted:
        name, spec = requirement(text)
        assert spec.startswith(">="), f"{text}: a range, not a pin"
        assert pins[name] == "==" + spec[2:], f"{text}: constraints.txt pins {pins.get(name)}"
    assert OPTIONAL <= {requirement(r)[0] for group in extras.values() for r in group}


def test_a_missing_default_checkpoint_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOTOK_CHECKPOINT", str(tmp_path / "gone"))
    with pytest.raises(CheckpointError, match=r"no default checkpoint: looked in \$INFOTOK_CHECKPOINT = .*gone"):
        InfoTok.from_pretrained()
    monkeypatch.delenv("INFOTOK_CHECKPOINT")
    monkeypatch.setattr(checkpoint, "SHIPPED_CHECKPOINT", tmp_path / "weights")
    with pytest.raises(
        CheckpointError,
        match=r"looked in .*weights \(the weights installed with the package; "
        r"\$INFOTOK_CHECKPOINT is not set\)",
    ):
        InfoTok.from_pretrained()


# ------------------------------------------------------------------- the wheel in a fresh venv
def clean_env(**extra) -> dict:
    """The environment without anything that would point Python at this checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("INFOTOK_")
    }
    return env | {"OMP_NUM_THREADS": "1"} | extra


def check(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package's files, installed (not editable) with its core
    dependencies at the tested versions into a fresh venv; pip caches nothing."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = ["--no-cache-dir", "--quiet"]
    check([sys.executable, "-m", "pip", "wheel", *pip, "--no-deps", "-w", work / "dist", source], env=clean_env())
    (wheel,) = (work / "dist").glob("infotok-*.whl")
    check([sys.executable, "-m", "venv", work / "venv"], env=clean_env())
    bin_ = work / "venv" / "bin"
    check([bin_ / "pip", "install", *pip, "torch==2.13.0"], env=clean_env())
    check([bin_ / "pip", "install", *pip, "-c", ROOT / "constraints.txt", wheel], env=clean_env())
    return bin_


@pytest.fixture(scope="module")
def demo(venv, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`infotok demo` as a user runs it, in a folder that is not this checkout."""
    cwd = tmp_path_factory.mktemp("user")
    return cwd, check([venv / "infotok", "demo"], cwd=cwd, env=clean_env())


def test_the_wheel_alone_runs_the_demo_and_loads_the_default_from_any_directory(venv, demo):
    installed = {
        line.split("==")[0].lower().replace("_", "-")
        for line in check([venv / "pip", "freeze"], env=clean_env()).stdout.split()
    }
    assert CORE <= installed and not installed & OPTIONAL, installed & OPTIONAL  # the core alone

    cwd, done = demo
    report = json.loads((cwd / "demo_out" / "report.json").read_text())
    assert report["checkpoint"] == "infotok-flex" and "wrote demo_out/" in done.stdout
    assert [run["rate"] for run in report["runs"]] == [0.5, 0.25]
    assert (cwd / "demo_out" / "viz_rate0.5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code = "import infotok; from infotok import InfoTok; m = InfoTok.from_pretrained(); print(m.name, infotok.__file__)"
    name, where = check([venv / "python", "-c", code], cwd=cwd, env=clean_env()).stdout.split()
    assert name == "infotok-flex" and Path(where).is_relative_to(venv.parent) and "site-packages" in where


def test_the_wheel_carries_the_license_and_says_its_version(venv):
    (wheel,) = (venv.parent.parent / "dist").glob("infotok-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert "Apache License" in zipfile.ZipFile(wheel).read(license_file).decode()
    version = check([venv / "infotok", "--version"], env=clean_env()).stdout.strip()
    assert version == f"infotok {infotok.__version__}"


# several commands in one interpreter of the venv (the console script itself is run by `demo`)
COMMANDS = """
import contextlib, io, json, sys
from infotok.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    print(json.dumps([status, err.getvalue()]))
"""


def test_the_wheel_alone_encodes_and_decodes_and_names_the_extra_a_command_needs(venv, demo, tmp_path):
    sample = str(demo[0] / "demo_out" / "sample.mp4")
    commands = [
        ["encode", sample, "-o", "s.itok", "--max-frames", "9"],
        ["decode", "s.itok", "-o", "s.mp4"],
        ["info", "s.itok"],
        ["eval", sample],
        ["train", "base", "--out", "run"],
        ["encode", sample, "-o", "h.itok", "--checkpoint", "owner/name"],
    ]
    done = check([venv / "python", "-c", COMMANDS, json.dumps(commands)], cwd=tmp_path, env=clean_env())
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert [status for status, _ in results[:3]] == [0, 0, 0], results
    assert (tmp_path / "s.mp4").stat().st_size > 0
    for (status, err), extra in zip(results[3:], ("eval", "train", "hub")):
        assert status == 2 and err.count("\n") == 1, err
        assert f"pip install 'infotok[{extra}]'" in err, err
