"""Which networks a checkpoint's config.json can name, and how each is built: one registry per part.

`BASES` maps a base section's `kind` to (config dataclass, network); `COMPRESSOR_KINDS` the compressor
section's. `model.InfoTok` and `layout1d.InfoTok1D` both build their base here, so neither imports the other.
"""

from __future__ import annotations

import torch.nn as nn

from .base import BaseConfig, BaseTokenizer, CausalConvTokenizer
from .compressor import BlockCausalTransformer, CompressorConfig
from .cosmos import CosmosConfig, CosmosTokenizer, ReleaseCompressorConfig, release_stacks

# Base tokenizers by the `kind` their config.json section names: (config dataclass, network). The
# first is our own, whose configs carry no `kind` (see `config_from_dict`).
BASES = {"causal-conv": (BaseConfig, CausalConvTokenizer), "cosmos": (CosmosConfig, CosmosTokenizer)}


def build_base(config: BaseConfig | CosmosConfig) -> BaseTokenizer:
    """The base tokenizer a config describes: ours (causal conv) or the release's Cosmos DV4x8x8."""
    return next(network for kind, network in BASES.values() if type(config) is kind)(config)


def build_stacks(
    config: CompressorConfig | ReleaseCompressorConfig, base: BaseTokenizer
) -> tuple[nn.Module, nn.Module]:
    """(compressor, decompressor) around the quantizer: ours, or the release's (which share a time embedding)."""
    if isinstance(config, ReleaseCompressorConfig):
        return release_stacks(config)
    return BlockCausalTransformer(base.feature_dim, config), BlockCausalTransformer(
        base.decoder_dim, config.decompressor_config()
    )


def config_from_dict(section: dict, kinds: dict) -> object:
    """A config section of config.json -> its dataclass, by its `kind`. The first kind is our own,
    whose configs carry no `kind` field (they predate the choice, and their hash must not change)."""
    section = dict(section)
    ours = next(iter(kinds))
    kind = section.get("kind", ours)
    if kind not in kinds:
        raise ValueError(f"unknown kind {kind!r}; this infotok knows {', '.join(kinds)}")
    if kind == ours:
        section.pop("kind", None)
    return kinds[kind].from_dict(section)


BASE_KINDS = {kind: config for kind, (config, _) in BASES.items()}
COMPRESSOR_KINDS = {"block-causal": CompressorConfig, "release": ReleaseCompressorConfig}
