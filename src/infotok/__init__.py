"""infotok: adaptive discrete video tokenization (InfoTok, Ye et al., ICLR 2026)."""

__version__ = "0.1.0"
__all__ = ["InfoTok", "__version__"]


def __getattr__(name: str):
    """`InfoTok` is imported on first use, so the command line starts without torch."""
    if name == "InfoTok":
        from .model import InfoTok

        return InfoTok
    raise AttributeError(f"module 'infotok' has no attribute {name!r}")
