"""Checkpoints of other projects -> infotok checkpoint folders (`model.safetensors` + `config.json`).

- `convert_release`: the InfoTok release's trainer checkpoint (e.g. InfoTok-Flex `infotok_mse.pt`),
  a dict whose `model` entry holds `network.*` tensors (weights and buffers, usually bf16) and
  `ema.*` tensors (EMA of the parameters, fp32, named with "-" for "."). Read with
  `torch.load(weights_only=True)` only.
- `convert_cosmos_jit`: an NVIDIA Cosmos tokenizer folder (`encoder.jit`, `decoder.jit`, e.g.
  Cosmos-Tokenizer-DV4x8x8), read with `torch.jit.load` only for its state dicts; the result is a
  fixed-rate base checkpoint.

Architecture sizes are inferred from the tensor shapes (the attention head count, which no shape
shows, defaults to the release's head width of 8). Every tensor must land on one of our parameters
with the same shape, and every parameter must be filled; otherwise `ConversionError` names the key
and nothing is written. Known constant buffers of the release (FSQ tables, wavelet filters, training
loss statistics) are checked against the inferred configuration rather than copied.

The foreign key names live here only; `infotok.cosmos` knows nothing of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch

from .base import FSQ_LEVELS
from .checkpoint import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE
from .cosmos import CosmosConfig, CosmosTokenizer, ReleaseCompressorConfig, release_stacks
from .files import save_tensors, temp_beside

JIT_FILES = ("encoder.jit", "decoder.jit")
RELEASE_HEAD_WIDTH = 8  # InfoTok-Flex: width 256, 32 heads


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted; the message is one line naming the problem."""


# ----------------------------------------------------------------------------- key names
def _rules(pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    out = []
    for src, dst in pairs:
        pattern = re.escape(src)
        for name in ("i", "j", "n"):
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>\\d+)")
        out.append((re.compile(pattern), re.sub(r"\{(\w)\}", r"\\g<\1>", dst)))
    return out


# (release name fragment, our name fragment), applied in order (reverse order for the inverse)
_NAME_PAIRS = [
    ("encoder.down.{i}.downsample.conv1.conv3d.", "encoder.levels.{i}.down.spatial."),
    ("encoder.down.{i}.downsample.conv2.conv3d.", "encoder.levels.{i}.down.temporal."),
    ("encoder.down.{i}.downsample.conv3.conv3d.", "encoder.levels.{i}.down.mix."),
    ("decoder.up.{i}.upsample.conv1.conv3d.", "decoder.levels.{i}.up.temporal."),
    ("decoder.up.{i}.upsample.conv2.conv3d.", "decoder.levels.{i}.up.spatial."),
    ("decoder.up.{i}.upsample.conv3.conv3d.", "decoder.levels.{i}.up.mix."),
    ("encoder.down.{i}.block.{j}.", "encoder.levels.{i}.blocks.{j}."),
    ("decoder.up.{i}.block.{j}.", "decoder.levels.{i}.blocks.{j}."),
    ("conv_in.0.conv3d.", "stem.spatial."),
    ("conv_in.1.conv3d.", "stem.temporal."),
    ("conv_out.0.conv3d.", "head.spatial."),
    ("conv_out.1.conv3d.", "head.temporal."),
    ("norm_out.norm.", "norm_out."),
    ("mid.block_{n}.", "mid.block{n}."),
    ("mid.attn_1.0.", "mid.space_attn."),
    ("mid.attn_1.1.", "mid.time_attn."),
    (".norm1.norm.", ".norm1."),
    (".norm2.norm.", ".norm2."),
    (".conv1.0.conv3d.", ".conv1.spatial."),
    (".conv1.1.conv3d.", ".conv1.temporal."),
    (".conv2.0.conv3d.", ".conv2.spatial."),
    (".conv2.1.conv3d.", ".conv2.temporal."),
    (".nin_shortcut.conv3d.", ".skip."),
    ("_attn.norm.norm.", "_attn.norm."),
    ("_attn.q.conv3d.", "_attn.q."),
    ("_attn.k.conv3d.", "_attn.k."),
    ("_attn.v.conv3d.", "_attn.v."),
    ("_attn.proj_out.conv3d.", "_attn.out."),
    ("quant_conv.conv3d.", "quant_conv."),
    ("vit_encoder.{i}.", "compressor.layers.{i}."),
    ("vit_decoder.{i}.", "decompressor.layers.{i}."),
    ("attention_norm.", "norm_attn."),
    ("ffn_norm.", "norm_mlp."),
    ("attention.mha.in_proj_weight", "attn.in_proj.weight"),
    ("attention.mha.in_proj_bias", "attn.in_proj.bias"),
    ("attention.mha.out_proj.", "attn.out_proj."),
    ("mlp.w1.", "mlp.gate."),
    ("mlp.w3.", "mlp.up."),
    ("mlp.w2.", "mlp.down."),
]
_FORWARD = _rules(_NAME_PAIRS)
_BACKWARD = _rules([(b, a) for a, b in reversed(_NAME_PAIRS)])
_BASE_ROOTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_SHARED_EMBED = "temporal_embed"


def our_names(release_key: str) -> list[str]:
    """A release network key -> our key(s) (the shared temporal embedding fills both stacks)."""
    if release_key == _SHARED_EMBED:
        return ["compressor.time_embed", "decompressor.time_embed"]
    key = release_key
    for pattern, repl in _FORWARD:
        key = pattern.sub(repl, key)
    return ["base." + key if key.startswith(_BASE_ROOTS) else key]


def release_name(our_key: str) -> str:
    """Inverse of `our_names` (used to name missing keys in the release's terms)."""
    if our_key.endswith(".time_embed"):
        return _SHARED_EMBED
    key = our_key[len("base.") :] if our_key.startswith("base.") else our_key
    for pattern, repl in _BACKWARD:
        key = pattern.sub(repl, key)
    return key


# ------------------------------------------------------------------- constants of the release
def _fsq_tables(levels: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lv = torch.tensor(levels, dtype=torch.int32)
    basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0).to(torch.int32)
    idx = torch.arange(math.prod(levels))[:, None]
    half = lv // 2
    codebook = ((idx // basis) % lv - half) / half
    return lv, basis, codebook


def _constant_checks(levels: tuple[int, ...]) -> dict[str, torch.Tensor | None]:
    """Buffers that carry no learned weights: expected values (None = any value, recorded only)."""
    lv, basis, codebook = _fsq_tables(levels)
    haar = torch.full((2,), 2**-0.5)
    checks: dict[str, torch.Tensor | None] = {}
    for prefix in ("quantizer.", "inv_quant.quantizer."):
        checks |= {prefix + "_levels": lv, prefix + "_basis": basis, prefix + "implicit_codebook": codebook}
    for prefix in ("encoder.patcher3d.", "decoder.unpatcher3d."):
        checks |= {prefix + "wavelets": haar, prefix + "_arange": torch.arange(2)}
    checks |= {"encoder.patcher3d.patch_size_buffer": torch.tensor([2]), "save_loss": None, "ema_loss": None}
    return checks


def _check_constant(key: str, value: torch.Tensor, expected: torch.Tensor | None, where: str) -> None:
    if expected is None:
        return
    if tuple(value.shape) != tuple(expected.shape):
        raise ConversionError(f"{where}: key {key} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}")
    if not torch.allclose(value.double(), expected.double(), atol=1e-2 if value.dtype == torch.bfloat16 else 1e-6):
        what = (
            "the 2x2x2 Haar wavelet with patch size 2 is the only patching supported"
            if "patch" in key
            else "it does not match the inferred FSQ levels / structure"
        )
        raise ConversionError(f"{where}: key {key} holds unexpected values ({what})")


# ------------------------------------------------------------------ architecture from shapes
def _need(state: dict, key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"{where}: missing key {key} (needed to infer the architecture)")
    return state[key]


def _indices(state: dict, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pat.match(k))})


def infer_configs(
    state: dict[str, torch.Tensor], where: str, heads: int | None = None
) -> tuple[CosmosConfig, ReleaseCompressorConfig | None]:
    """Sizes from the shapes of a release-named state dict (network keys, no prefix)."""
    stem = _need(state, "encoder.conv_in.0.conv3d.weight", where)
    channels, in8 = int(stem.shape[0]), int(stem.shape[1])
    if in8 % 8:
        raise ConversionError(
            f"{where}: key encoder.conv_in.0.conv3d.weight has {in8} input channels; "
            "a 2x2x2 wavelet patch gives a multiple of 8"
        )
    levels_idx = _indices(state, "encoder.down.")
    if not levels_idx:
        raise ConversionError(f"{where}: missing key encoder.down.0.* (no encoder levels)")
    mult = []
    for i in levels_idx:
        w = _need(state, f"encoder.down.{i}.block.0.conv1.0.conv3d.weight", where)
        if w.shape[0] % channels:
            raise ConversionError(
                f"{where}: key encoder.down.{i}.block.0.conv1.0.conv3d.weight has "
                f"{w.shape[0]} channels, not a multiple of {channels}"
            )
        mult.append(int(w.shape[0]) // channels)
    z = _need(state, "encoder.conv_out.1.conv3d.weight", where)
    qc = _need(state, "quant_conv.conv3d.weight", where)
    if "quantizer._levels" in state:
        levels = tuple(int(v) for v in state["quantizer._levels"].tolist())
    elif "inv_quant.quantizer._levels" in state:
        levels = tuple(int(v) for v in state["inv_quant.quantizer._levels"].tolist())
    else:
        levels = FSQ_LEVELS
    if qc.shape[0] != len(levels):
        raise ConversionError(
            f"{where}: key quant_conv.conv3d.weight has {qc.shape[0]} outputs, "
            f"the FSQ levels {list(levels)} need {len(levels)}"
        )
    try:
        base = CosmosConfig(
            channels=channels,
            channels_mult=tuple(mult),
            encoder_res_blocks=len(_indices(state, f"encoder.down.{levels_idx[0]}.block.")),
            decoder_res_blocks=len(_indices(state, "decoder.up.0.block.")) or 1,
            z_channels=int(z.shape[0]),
            in_channels=in8 // 8,
            levels=levels,
        )
    except ValueError as exc:
        raise ConversionError(f"{where}: unsupported architecture ({exc})") from None

    enc_layers, dec_layers = _indices(state, "vit_encoder."), _indices(state, "vit_decoder.")
    if not enc_layers and not dec_layers and _SHARED_EMBED not in state:
        return base, None
    embed = _need(state, _SHARED_EMBED, where)
    w1 = _need(state, f"vit_encoder.{enc_layers[0] if enc_layers else 0}.mlp.w1.weight", where)
    width = int(embed.shape[1])
    heads = heads or max(1, width // RELEASE_HEAD_WIDTH)
    if width % heads:
        raise ConversionError(f"{where}: transformer width {width} is not a multiple of {heads} heads")
    comp = ReleaseCompressorConfig(
        width=width,
        encoder_layers=len(enc_layers),
        decoder_layers=len(dec_layers),
        heads=heads,
        mlp_hidden=int(w1.shape[0]),
        max_latent_frames=int(embed.shape[0]),
    )
    if width != base.z_channels:
        raise ConversionError(
            f"{where}: transformer width {width} differs from z_channels {base.z_channels} "
            "(the release's vit_conv projections are not supported)"
        )
    return base, comp


def expected_shapes(base: CosmosConfig, comp: ReleaseCompressorConfig | None) -> dict[str, tuple[int, ...]]:
    """Our parameter names and shapes for a configuration (built on the meta device: no memory)."""
    with torch.device("meta"):
        modules = {"base": CosmosTokenizer(base)}
        if comp is not None:
            modules["compressor"], modules["decompressor"] = release_stacks(comp)
    return {f"{prefix}.{k}": tuple(v.shape) for prefix, m in modules.items() for k, v in m.state_dict().items()}


# -------------------------------------------------------------------------------- mapping
def map_state(
    state: dict[str, torch.Tensor],
    base: CosmosConfig,
    comp: ReleaseCompressorConfig | None,
    where: str,
    label=lambda k: k,
) -> dict[str, torch.Tensor]:
    """Release-named tensors -> our names, all checked; `label` turns a key into the name to report."""
    expected = expected_shapes(base, comp)
    constants = _constant_checks(tuple(base.levels))
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        value = state[key]
        if key in constants:
            _check_constant(label(key), value, constants[key], where)
            continue
        for ours in our_names(key):
            if ours not in expected:
                raise ConversionError(
                    f"{where}: unexpected key {label(key)} (no parameter {ours} in the inferred architecture)"
                )
            if ours in out:
                raise ConversionError(f"{where}: key {label(key)} maps onto {ours} twice")
            if tuple(value.shape) != expected[ours]:
                raise ConversionError(
                    f"{where}: key {label(key)} has shape {tuple(value.shape)}, expected {expected[ours]} for {ours}"
                )
            if not value.is_floating_point():
                raise ConversionError(f"{where}: key {label(key)} holds {value.dtype} values, expected floats")
            out[ours] = value.detach().to(torch.float32).clone().contiguous()
    missing = [k for k in expected if k not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(f"{where}: missing key {label(release_name(missing[0]))} for {missing[0]}{more}")
    return out


# ------------------------------------------------------------------------------- reading
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_plain(src: Path) -> dict:
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "unsupported global" not in str(exc).lower():
            raise ConversionError(f"{src}: not a readable torch checkpoint (corrupt pickle data)") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise ConversionError(
            f"{src}: loading it would run pickled code{what}; only checkpoints of plain "
            "tensors are converted (torch.load weights_only=True)"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError ... for files it cannot parse
        first = str(exc).strip().splitlines()[0].split(". ")[0][:160] if str(exc).strip() else "no detail"
        raise ConversionError(f"{src}: not a readable torch checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{src}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _split_release(obj: dict, src: Path) -> tuple[dict, dict]:
    model = obj.get("model", obj)
    if not isinstance(model, dict):
        raise ConversionError(f"{src}: its 'model' entry is a {type(model).__name__}, expected a dict of tensors")
    network, ema = {}, {}
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConversionError(f"{src}: unexpected key {key!r} in 'model' (not a named tensor)")
        if key.startswith("network."):
            network[key[len("network.") :]] = value
        elif key.startswith("ema.network-"):
            ema[key[len("ema.network-") :].replace("-", ".")] = value
        else:
            raise ConversionError(f"{src}: unexpected key {key} (expected network.* or ema.network-*)")
    if not network:
        raise ConversionError(f"{src}: no network.* tensors; not an InfoTok / Cosmos trainer checkpoint")
    return network, ema


# ------------------------------------------------------------------------------- writing
def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConversionError(f"{out_dir}: already exists and is not an empty folder; choose a new output folder")


def _write(out_dir: Path, weights: dict[str, torch.Tensor], config: dict) -> Path:
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(out_dir, folder=True)
    try:
        save_tensors(tmp / WEIGHTS_FILE, weights, {"format": CHECKPOINT_FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _config(name: str, base: CosmosConfig, comp: ReleaseCompressorConfig | None, source: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "name": name,
        "base": base.to_dict(),
        "compressor": comp.to_dict() if comp is not None else None,
        "dropped": "zero_code" if comp is not None else None,
        "score_mean": 0.0,
        "source": source,
    }


# --------------------------------------------------------------------------------- public
def convert_release(
    src_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    ema: bool = False,
    name: str | None = None,
    heads: int | None = None,
) -> Path:
    """The release's trainer checkpoint -> an infotok checkpoint folder (base + release stacks).

    ema: take the EMA weights (`ema.*`) instead of the trained network's (`network.*`); buffers
    come from `network.*` either way. heads: attention heads of the stacks (not stored in the file;
    default width / 8, i.e. 32 for InfoTok-Flex).
    """
    src, out = Path(src_file), Path(out_dir)
    if not src.is_file():
        raise ConversionError(f"{src}: file not found")
    _prepare_out(out)
    network, ema_state = _split_release(_load_plain(src), src)
    base, comp = infer_configs(network, str(src), heads)
    weights = map_state(network, base, comp, str(src), label=lambda k: f"network.{k}")
    constants = _constant_checks(tuple(base.levels))
    params = {k for k in network if k not in constants}
    if ema_state or ema:  # the EMA half must name exactly the network's parameters, with their shapes
        for key in sorted(set(ema_state) - params):
            raise ConversionError(
                f"{src}: unexpected key ema.network-{key.replace('.', '-')} (no such network parameter)"
            )
        for key in sorted(params - set(ema_state)):
            raise ConversionError(f"{src}: missing key ema.network-{key.replace('.', '-')}")
        ema_weights = map_state(
            {**ema_state, **{k: v for k, v in network.items() if k in constants}},
            base,
            comp,
            str(src),
            label=lambda k: f"ema.network-{k.replace('.', '-')}",
        )
        if ema:
            weights = ema_weights
    weights["score_mean"] = torch.tensor(0.0)
    source = {
        "kind": "infotok-release",
        "file": src.name,
        "sha256": _sha256(src),
        "weights": "ema" if ema else "network",
        "dtype": str(next(iter(network.values())).dtype).replace("torch.", ""),
    }
    if comp is not None:
        source["heads"] = comp.heads if heads else f"{comp.heads} (assumed: head width {RELEASE_HEAD_WIDTH})"
    if "ema_loss" in network:
        source["release_ema_loss"] = float(network["ema_loss"].float().reshape(-1)[0])
    return _write(out, weights, _config(name or out.name, base, comp, source))


def convert_cosmos_jit(src_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None) -> Path:
    """A Cosmos tokenizer folder (encoder.jit + decoder.jit) -> a fixed-rate infotok base checkpoint."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise ConversionError(f"{src}: folder not found")
    for file in JIT_FILES:
        if not (src / file).is_file():
            raise ConversionError(f"{src}: missing {file}; a Cosmos tokenizer folder holds {' and '.join(JIT_FILES)}")
    _prepare_out(out)
    state: dict[str, torch.Tensor] = {}
    allowed = {
        "encoder.jit": ("encoder.", "quant_conv.", "quantizer."),
        "decoder.jit": ("decoder.", "post_quant_conv.", "inv_quant.quantizer."),
    }
    for file in JIT_FILES:
        try:
            with warnings.catch_warnings():  # torch 2.x marks TorchScript deprecated; reading is still fine
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(src / file), map_location="cpu")
        except Exception as exc:  # TorchScript reports unreadable files with assorted exception types
            first = str(exc).strip().splitlines()[0].split(". ")[0][:160] if str(exc).strip() else "no detail"
            raise ConversionError(f"{src / file}: not a readable TorchScript file ({first})") from None
        for key, value in module.state_dict().items():
            if not key.startswith(allowed[file]):
                raise ConversionError(f"{src / file}: unexpected key {key}")
            state[key] = value
    base, comp = infer_configs(state, str(src))
    if comp is not None:
        raise ConversionError(f"{src}: TorchScript files with transformer stacks are not supported")
    weights = map_state(state, base, None, str(src))
    weights["score_mean"] = torch.tensor(0.0)
    source = {"kind": "cosmos-jit", "folder": src.name, "sha256": {file: _sha256(src / file) for file in JIT_FILES}}
    return _write(out, weights, _config(name or out.name, base, None, source))
