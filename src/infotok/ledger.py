"""The bit ledger: how many tokens were kept, and what they cost, nominally and in a real file.

The paper counts BPP16 as 16 bits per kept token plus one mask bit per position, per 16 pixels of
one frame; since a token covers spatial_factor^2 = 64 pixels of temporal_factor frames, that is
`kept / total + 1/16` for a keep-masked tokenizer and `kept / total` for a fixed-rate one (no
mask). `file_bpp16` is the same ledger from the bytes a `.itok` file really takes. For long videos
the rate hides what matters (a still hour should cost almost nothing), so a ledger that knows the
video's duration also gives tokens and real bits per second of video.
"""

from __future__ import annotations

from dataclasses import dataclass

MASK_BPP16 = 1 / 16  # one mask bit per token position, per 16 pixels


@dataclass(frozen=True)
class Ledger:
    kept: int
    total: int
    pixels: int = 0  # frame pixels the tokens stand for (frames x height x width), for file BPP16
    file_bytes: int | None = None
    masked: bool = True  # a keep-mask travels with the tokens (InfoTok); False for a fixed-rate base
    seconds: float = 0.0  # the video's duration (frames / fps); 0 where unknown

    @property
    def realized_rate(self) -> float:
        return self.kept / max(1, self.total)

    @property
    def nominal_bpp16(self) -> float:
        return self.realized_rate + (MASK_BPP16 if self.masked else 0.0)

    @property
    def file_bpp16(self) -> float | None:
        if self.file_bytes is None or not self.pixels:
            return None
        return self.file_bytes * 8 * 16 / self.pixels

    @property
    def tokens_per_second(self) -> float | None:
        return self.kept / self.seconds if self.seconds else None

    @property
    def file_bits_per_second(self) -> float | None:
        return self.file_bytes * 8 / self.seconds if self.seconds and self.file_bytes is not None else None

    def __add__(self, other: "Ledger") -> "Ledger":
        files = None if self.file_bytes is None or other.file_bytes is None else self.file_bytes + other.file_bytes
        return Ledger(
            self.kept + other.kept,
            self.total + other.total,
            self.pixels + other.pixels,
            files,
            self.masked or other.masked,
            self.seconds + other.seconds,
        )

    def to_dict(self) -> dict:
        out = {
            "tokens_kept": self.kept,
            "tokens_total": self.total,
            "realized_rate": self.realized_rate,
            "nominal_bpp16": self.nominal_bpp16,
        }
        if self.file_bytes is not None:
            out |= {"file_bytes": self.file_bytes, "file_bpp16": self.file_bpp16}
        if self.seconds:
            out |= {"seconds": self.seconds, "tokens_per_second": self.tokens_per_second}
            out |= {"file_bits_per_second": self.file_bits_per_second} if self.file_bytes is not None else {}
        return out
