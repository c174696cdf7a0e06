"""Hugging Face conventions: from_pretrained(folder or repo id) through the local cache, offline;
save_pretrained / push_to_hub keep infotok's two-file folder; infotok without huggingface_hub."""

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest

from infotok.model import InfoTok
from tests.conftest import tiny_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(home: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder` out as the Hugging Face cache does for `repo_id` at REVISION (refs/main -> snapshot)."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def run_python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (huggingface_hub reads HF_* when imported), HF_HUB_OFFLINE=1."""
    env = dict(os.environ, OMP_NUM_THREADS="1") | {"HF_HUB_OFFLINE": "1"} | env
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_save_pretrained_keeps_the_two_file_folder_and_push_to_hub_uploads_exactly_it(tmp_path, monkeypatch):
    model = tiny_model()
    assert isinstance(model, huggingface_hub.ModelHubMixin)
    folder = model.save_pretrained(tmp_path / "saved", extra={"note": "x"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["note"] == "x"

    uploaded = {}

    class FakeApi:  # the mixin's push_to_hub: create the repo, save_pretrained into a temp folder, upload it
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return "commit-url"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    assert model.push_to_hub("owner/tiny", config={"pushed": True}) == "commit-url"
    assert sorted(uploaded) == ["config.json", "model.safetensors"]
    assert uploaded["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    config = json.loads(uploaded["config.json"])
    saved = json.loads((folder / "config.json").read_text())
    assert config == {k: v for k, v in saved.items() if k != "note"} | {"pushed": True}


def test_repo_id_loads_offline_from_the_local_hugging_face_cache(tmp_path, tiny_checkpoint, sample_video):
    hf_cache(tmp_path / "hf", "owner/tiny", tiny_checkpoint)
    elsewhere = tmp_path / "elsewhere"  # no folder called owner/tiny here
    elsewhere.mkdir()
    code = f"""
from infotok import InfoTok
a = InfoTok.from_pretrained("owner/tiny")
b = InfoTok.from_pretrained("owner/tiny", revision="{REVISION}")
c = InfoTok.from_pretrained({str(tiny_checkpoint)!r})
assert a.model_hash == b.model_hash == c.model_hash and a.config_hash == c.config_hash
from infotok.checkpoint import save_calibrated  # `infotok calibrate --checkpoint owner/tiny -o calibrated`
calibration = {{"score_mean": 0.25, "scores": {{"v.mp4": 0.25}}, "size": 64, "frames": 9}}
save_calibrated(a, "owner/tiny", "calibrated", calibration)
assert float(InfoTok.from_pretrained("calibrated").score_mean) == 0.25
print(a.name, a.model_hash)
"""
    done = run_python(code, elsewhere, HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tiny-infotok", InfoTok.from_pretrained(tiny_checkpoint).model_hash]

    # the same through the CLI, and through $HF_HUB_CACHE instead of $HF_HOME
    cli = (
        f"from infotok.cli import main; raise SystemExit(main(['encode', {str(sample_video)!r}, '-o', 'x.itok', "
        f"'--checkpoint', 'owner/tiny', '--rate', '1', '--strategy', 'static']))"
    )
    done = run_python(cli, elsewhere, HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), HF_HOME=str(tmp_path / "nowhere"))
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "x.itok").is_file()


def test_a_folder_that_looks_like_a_repo_id_is_a_folder(tmp_path, tiny_checkpoint):
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "tiny").symlink_to(tiny_checkpoint)
    done = run_python(
        "from infotok import InfoTok; print(InfoTok.from_pretrained('owner/tiny').name)",
        tmp_path,
        HF_HOME=str(tmp_path / "empty"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tiny-infotok"


@pytest.mark.parametrize("offline", ["1", "0"])  # never a download, whether the user's setting forbids one or not
def test_an_uncached_repo_id_fails_in_one_line_naming_the_cache(tmp_path, sample_video, offline):
    cli = (
        f"from infotok.cli import main; raise SystemExit(main(['encode', {str(sample_video)!r}, '-o', 'x.itok', "
        f"'--checkpoint', 'owner/missing']))"
    )
    done = run_python(cli, tmp_path, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE=offline)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "owner/missing: not a checkpoint folder, nor in the Hugging Face cache" in done.stderr
    assert str(tmp_path / "hf" / "hub") in done.stderr and "never downloads" in done.stderr
    assert not (tmp_path / "hf" / "hub" / "models--owner--missing" / "snapshots").exists()


def test_without_huggingface_hub_infotok_imports_and_loads_folders(tmp_path, tiny_checkpoint):
    code = f"""
import sys
sys.modules["huggingface_hub"] = None  # as if not installed
from infotok import InfoTok
from infotok.checkpoint import CheckpointError
model = InfoTok.from_pretrained({str(tiny_checkpoint)!r})
model.save_pretrained("copy")
assert InfoTok.from_pretrained("copy").model_hash == model.model_hash
try:
    InfoTok.from_pretrained("owner/tiny")
except CheckpointError as exc:
    print(exc)
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip() == "owner/tiny: checkpoint folder not found (to load it as a Hugging Face repo id: "
        "pip install 'infotok[hub]')"
    )
