"""infotok: adaptive discrete video tokenization (InfoTok, Ye et al., ICLR 2026)."""
from .model import InfoTok

__version__ = "0.1.0"
__all__ = ["InfoTok", "__version__"]
