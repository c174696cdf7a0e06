"""Optional dependencies: which extra of `pip install 'infotok[EXTRA]'` installs each one.

The core install (encode, decode, reconstruct, info, convert, demo, viz) needs none of them. A
feature that does imports its dependency where it is used, so infotok itself always imports, and a
missing one is reported as the extra to install.
"""

from __future__ import annotations

import importlib

EXTRAS = {
    "accelerate": "train",
    "torchmetrics": "eval",
    "matplotlib": "eval",
    "imageio_ffmpeg": "eval",
    "huggingface_hub": "hub",
    "ray": "scale",
    "pyarrow": "scale",
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency that is not installed; the message names the extra that installs it."""


def describe(exc: ModuleNotFoundError, feature: str) -> str | None:
    """One line naming the extra that provides the missing module, or None if no extra does (a broken
    install, a typo: those keep their own error)."""
    module = (exc.name or "").split(".")[0]
    if module not in EXTRAS:
        return None
    return f"{feature} needs {module}, which is not installed: pip install 'infotok[{EXTRAS[module]}]'"


def require(module: str, feature: str):
    """Import `module` for `feature`, or raise MissingExtra with `describe`'s line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        message = describe(exc, feature)
        if message is None:
            raise
        raise MissingExtra(message, name=exc.name) from None
