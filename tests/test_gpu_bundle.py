"""scripts/gpu_bundle.py: what a lent GPU machine gets and gives back (the device call: docs/TRAINING.md)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file

from infotok import InfoTok
from tests.conftest import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_bundle.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def test_stage_untracks_what_the_run_does_not_read_and_restore_tracks_it_again(tmp_path, monkeypatch):
    bundle = load_script()
    root = tmp_path / "repo"
    for name in ("src/infotok/code.py", "src/infotok/weights/big.safetensors", "tests/data/frames.npz", "Makefile"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * 1000)
    git(root.parent, "init", "-q", str(root))
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(bundle, "ROOT", root)
    bundle.stage(type("Args", (), {"call": "train"}))
    sent = git(root, "ls-files", "--cached", "--others", "--exclude-standard").split()
    assert sorted(sent) == ["Makefile", "src/infotok/code.py"]  # the untracked weights are ignored, so not sent
    assert bundle.travelling("train") == 2000
    bundle.restore(None)
    assert git(root, "status", "--porcelain") == ""  # tracked again, nothing left staged, exclude block gone
    assert "gpu_bundle" not in (root / ".git" / "info" / "exclude").read_text()


def test_pack_keeps_checkpoints_in_float16_1d_exports_as_they_are_and_logs_and_unpack_rejoins_them(tmp_path):
    bundle = load_script()
    runs, out = tmp_path / "gpu", tmp_path / "out"
    model = tiny_model(adaptive=False)
    model.save_pretrained(runs / "base" / "model")
    (runs / "base" / "log.csv").write_text("step,loss\n1,0.5\n")
    (runs / "base" / "train_state.safetensors").write_bytes(b"optimizer state, left behind")
    (runs / "registers" / "model").mkdir(parents=True)  # a 1D export: float16 already, loads only beside its base
    (runs / "registers" / "model" / "config.json").write_text(json.dumps({"layout": "1d"}))
    (runs / "registers" / "model" / "model.safetensors").write_bytes(b"1D weights, copied as they are")
    (runs / "summary.json").write_text(json.dumps({"stages": {}}))
    bundle.pack(type("Args", (), {"runs": runs, "out": out}))
    assert (out / "summary.json").is_file() and (out / "runs.tar.00").is_file()
    bundle.unpack(type("Args", (), {"files_at": out, "into": tmp_path / "back"}))
    back = tmp_path / "back" / "gpu"
    assert (back / "base" / "log.csv").read_text() == "step,loss\n1,0.5\n"
    assert not (back / "base" / "train_state.safetensors").exists()
    stored = load_file(back / "base" / "model" / "model.safetensors")
    assert {t.dtype for name, t in stored.items() if "weight" in name} == {torch.float16}
    restored = InfoTok.from_pretrained(back / "base" / "model")
    for (name, a), b in zip(model.named_parameters(), restored.parameters()):
        assert torch.equal(a.detach().half().float(), b.detach()), name
    assert (back / "registers" / "model" / "model.safetensors").read_bytes() == b"1D weights, copied as they are"
