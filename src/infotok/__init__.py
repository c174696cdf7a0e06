"""infotok: adaptive discrete video tokenization (InfoTok, Ye et al., ICLR 2026)."""

__version__ = "0.1.0"
__all__ = ["InfoTok", "InfoTok1D", "__version__"]


def __getattr__(name: str):
    """`InfoTok` and `InfoTok1D` are imported on first use, so the command line starts without torch."""
    if name == "InfoTok":
        from .model import InfoTok

        return InfoTok
    if name == "InfoTok1D":
        from .layout1d import InfoTok1D

        return InfoTok1D
    raise AttributeError(f"module 'infotok' has no attribute {name!r}")
