"""Checkpoint folders: `model.safetensors` (weights) + `config.json` (architecture, calibrated score
mean, provenance), written atomically and checked key by key when read.

Where the default checkpoint lives is decided here and nowhere else: `$INFOTOK_CHECKPOINT` if set,
else InfoTok-Flex, which ships inside the package (`infotok/weights/infotok-flex`, package data of the
wheel), so an installed infotok finds it from any directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .calibration import Calibration
from .extras import EXTRAS
from .files import atomic_write, save_tensors

CHECKPOINT_FORMAT = "infotok-checkpoint"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "infotok-flex"
CHECKPOINT_ENV = "INFOTOK_CHECKPOINT"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing files or does not match its config."""


def default_checkpoint() -> Path:
    return Path(os.environ.get(CHECKPOINT_ENV) or SHIPPED_CHECKPOINT)


# "owner/name" as the Hugging Face Hub spells repo ids; only a str that is no existing path is taken for one
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def locate(
    source: str | os.PathLike | None = None, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The checkpoint folder `source` names.

    A folder is itself; a string shaped "owner/name" that is no path here is a Hugging Face repo id,
    looked up in the user's Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, or `cache_dir`)
    at `revision` (default: the cached main). Nothing is ever downloaded: the user fetches weights
    and points infotok at them. None is the default checkpoint; a missing one is reported with where
    it was looked for.
    """
    if source is None:
        directory = default_checkpoint()
        if not (directory / WEIGHTS_FILE).is_file():
            where = (
                f"${CHECKPOINT_ENV} = {directory}"
                if os.environ.get(CHECKPOINT_ENV)
                else f"{directory} (the weights installed with the package; ${CHECKPOINT_ENV} is not set)"
            )
            raise CheckpointError(
                f"no default checkpoint: looked in {where}; pass a checkpoint folder or set {CHECKPOINT_ENV} to one"
            )
        return directory
    if isinstance(source, str) and REPO_ID.fullmatch(source) and not os.path.lexists(source):
        return from_hub_cache(source, revision, cache_dir)
    return Path(source)


def from_hub_cache(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached snapshot folder of Hugging Face repo `repo_id` holding its config and weights."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise CheckpointError(
            f"{repo_id}: checkpoint folder not found (to load it as a Hugging Face repo id: "
            f"pip install 'infotok[{EXTRAS['huggingface_hub']}]')"
        ) from None
    try:
        cached = dict(revision=revision, cache_dir=cache_dir, local_files_only=True)
        config = hf_hub_download(repo_id, CONFIG_FILE, **cached)
        hf_hub_download(repo_id, WEIGHTS_FILE, **cached)
    except (LocalEntryNotFoundError, HFValidationError):
        cache = cache_dir or constants.HF_HUB_CACHE
        raise CheckpointError(
            f"{repo_id}: not a checkpoint folder, nor in the Hugging Face cache {cache}; infotok "
            f"never downloads: fetch it first (`hf download {repo_id}`) or pass a folder"
        ) from None
    return Path(config).parent


def read_config(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint folder not found")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory}: missing {name}; a checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory / CONFIG_FILE}: not an infotok checkpoint config")
    if "base" not in config and config.get("layout") != "1d":  # a 1D checkpoint names its base checkpoint
        raise CheckpointError(f"{directory / CONFIG_FILE}: not an infotok checkpoint config")
    return config


def save(model: torch.nn.Module, config: dict, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write the model's weights and `config` (temporary names, then rename). With `dtype`, floating
    parameters are stored in it (float16 halves a folder's size; loading casts back to the model's);
    buffers such as the calibrated score mean stay exact."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for k, v in model.state_dict().items():  # a tensor two modules share (the release's time embedding)
        v = v.detach().cpu().contiguous()  # is stored under each name, as its own copy
        state[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
        if dtype is not None and v.is_floating_point() and k in parameters:
            state[k] = state[k].to(dtype)
    save_tensors(directory / WEIGHTS_FILE, state, {"format": CHECKPOINT_FORMAT})
    atomic_write(directory / CONFIG_FILE, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
    return directory


def load_weights(model: torch.nn.Module, directory: Path) -> str:
    """Load `directory`'s weights into `model`, refusing any missing, extra or mis-shaped tensor.
    Returns the weights' hash, which identifies them in token files."""
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(
            f"{directory}: weights do not match {CONFIG_FILE} ({detail}); "
            "was the config edited or copied from another checkpoint?"
        )
    model.load_state_dict(state)
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors (names, dtypes, shapes and values), whatever file they came from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_sizes(fields: dict, section: str) -> None:
    """Every architecture size is a positive integer (levels and ratios have their own rules; an attention
    tile may be 0, the whole latent frame)."""

    def positive_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    for key, value in fields.items():
        if key == "kind" or (key.endswith("window") and value == 0 and not isinstance(value, bool)):
            continue
        if key == "levels":
            if not all(isinstance(v, int) and 2 < v <= 256 for v in value):
                raise ValueError(f"{section}.levels must be integers in 3..256")
        elif isinstance(value, float):  # ratios, theta, eps
            if not value > 0:
                raise ValueError(f"{section}.{key} must be positive, got {value!r}")
        elif isinstance(value, (list, tuple)):
            if not value or not all(positive_int(v) for v in value):
                raise ValueError(f"{section}.{key} must be a list of positive integers, got {value!r}")
        elif not positive_int(value):
            raise ValueError(f"{section}.{key} must be a positive integer, got {value!r}")


def save_calibrated(
    model, source: str | os.PathLike, out: str | os.PathLike, calibration: dict, overwrite: bool = False
) -> Path:
    """A copy of checkpoint `source` (model already loaded from it) with a new calibrated score
    mean, rd thresholds (and rd slopes and target margins, where the model has a value predictor);
    the source's other config fields (provenance, training config) and the precision its weights are
    stored in travel along."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    directory = locate(source)
    previous = read_config(directory)
    with safe_open(str(directory / WEIGHTS_FILE), "pt") as stored:
        half = any(stored.get_slice(k).get_dtype() == "F16" for k in stored.keys())
    model.score_mean.fill_(calibration["score_mean"])
    model.calibration = Calibration(
        calibration.get("rd_thresholds", []),
        calibration.get("rd_slopes", []),
        calibration.get("target_margins", []),
        calibration.get("rd_continuing_thresholds", []),
        calibration.get("key_density", 1.0),
    )
    extra = {k: v for k, v in previous.items() if k not in model.config_dict()}
    extra["calibration"] = {
        "videos": sorted(calibration["scores"]),
        "size": calibration["size"],
        "frames": calibration["frames"],
    }
    return model.save_pretrained(out, extra=extra, dtype=torch.float16 if half else None)
