"""Writes the prior-coded files of this folder as older infotok wrote them. Versions 1 and 3, with the package of
commit d7ec7e9 (`PYTHONPATH=<checkout of d7ec7e9>/src python tests/data/legacy/make_legacy.py`): random tokens of
two small videos, independent windows (version 1) and continuing ones (version 3), each coded with a small random
prior (`prior/`, saved here so that the files never depend on the shipped one) and stored with zlib too.
Version 4, with the package of commit 686e346 (the same command, then the argument `4`): continuing windows that
keep every token, none, and half (version 5 codes no mask for the first two), with the same prior.
Format-1 prior folders (`infotok-prior`, the first shipped priors), with the package of commit 97a05ed and the argument
`format-1`: a small random prior of that format (`prior-format-1/`) and independent windows coded with it; then with
the package of commit a6a7c3d, whose priors did not read a window's kept fraction, and the argument `format-1-unkept`:
the same windows coded with the same prior less its `kept` table."""

import sys
from pathlib import Path

import numpy as np
import torch

from infotok.prior import PriorConfig, PriorNet, TokenPrior
from infotok.tokens import TokenHeader, Tokens, TokenWindow

HERE = Path(__file__).parent


def random_tokens(refresh: int, seed: int) -> Tokens:
    rng = np.random.default_rng(seed)
    header = TokenHeader(
        model="infotok-flex", model_hash="0" * 16, config_hash="0" * 16, levels=[8, 8, 8, 5, 5, 5],
        temporal_factor=4, spatial_factor=8, width=24, height=16, source_width=24, source_height=16, fps=8.0,
        num_frames=21, window=9, overlap=1, strategy="rd", selection="drift", avg_rate=0.5, score_mean=0.07,
        fill="hold", **({"refresh": refresh} if refresh != 1 else {}),  # older headers have no refresh
    )  # fmt: skip
    windows = []
    for start, end in ((0, 9), (8, 17), (16, 21)):
        t = 1 + -(-(end - start - 1) // 4)
        mask = rng.random((t, 2, 3)) < 0.5
        indices = rng.integers(0, 64000, int(mask.sum())).astype(np.uint16)
        windows.append(TokenWindow(start, end, 0.5, 0.25 * seed, mask, indices))
    return Tokens(header, windows)


def random_prior() -> TokenPrior:
    torch.manual_seed(0)
    net = PriorNet(PriorConfig(levels=[8, 8, 8, 5, 5, 5], channels=8, dilations=[1, 2], pass_dilations=[1]))
    for p in net.parameters():  # far from uniform, so that coding is exercised
        torch.nn.init.normal_(p, std=0.3)
    return TokenPrior.from_net(net)


def full_and_empty_tokens() -> Tokens:
    """Continuing windows that keep every token, none, then about half."""
    tokens = random_tokens(10, seed=4)
    for w, keep in zip(tokens.windows, (1.0, 0.0)):
        w.mask = np.full(w.mask.shape, bool(keep))
        w.indices = np.random.default_rng(5).integers(0, 64000, int(w.mask.sum())).astype(np.uint16)
    return tokens


def format_1_prior() -> TokenPrior:
    """A random prior of format 1 (run with the package of 97a05ed: one set of blocks, run each pass)."""
    torch.manual_seed(1)
    net = PriorNet(PriorConfig(levels=[8, 8, 8, 5, 5, 5], channels=8, dilations=[1, 2]))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return TokenPrior.from_net(net)


if __name__ == "__main__" and sys.argv[1:] == ["format-1"]:
    prior = format_1_prior()
    prior.save_pretrained(HERE / "prior-format-1")
    tokens = random_tokens(1, seed=6)
    tokens.save(HERE / "format-1-zlib.itok", overwrite=True)
    tokens.save(HERE / "format-1-prior.itok", overwrite=True, prior=prior)
elif __name__ == "__main__" and sys.argv[1:] == ["format-1-unkept"]:
    import json

    from safetensors.torch import load_file

    weights = load_file(str(HERE / "prior-format-1" / "prior.safetensors"))
    del weights["table.kept"]
    config = PriorConfig.from_dict(json.loads((HERE / "prior-format-1" / "config.json").read_text())["prior"])
    random_tokens(1, seed=6).save(
        HERE / "format-1-unkept-prior.itok", overwrite=True, prior=TokenPrior(config, weights)
    )
elif __name__ == "__main__" and sys.argv[1:] == ["4"]:
    tokens = full_and_empty_tokens()
    tokens.save(HERE / "implied-masks-zlib.itok", overwrite=True)
    tokens.save(HERE / "implied-masks-prior.itok", overwrite=True, prior=TokenPrior.from_pretrained(HERE / "prior"))
elif __name__ == "__main__":
    prior = random_prior()
    prior.save_pretrained(HERE / "prior")
    for name, refresh in (("independent", 1), ("continuing", 10)):
        tokens = random_tokens(refresh, seed=refresh)
        tokens.save(HERE / f"{name}-zlib.itok", overwrite=True)
        tokens.save(HERE / f"{name}-prior.itok", overwrite=True, prior=prior)
