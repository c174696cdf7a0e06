"""`Calibration`: what `infotok calibrate` measures on the training clips for a checkpoint's rate control.

One object, held by `InfoTok.calibration`, read from and written to the checkpoint's config.json (the keys
`rd_thresholds`, `rd_continuing_thresholds`, `rd_slopes`, `target_margins`, each present only when measured, and
`key_density`, only below 1, so older configs read unchanged; `rd_slopes` is `{"psnr": table}`, and the `"mse"`
table older calibrations also wrote is ignored). The router's mean score (`score_mean`) stays a buffer of the
network: training updates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fill import check_key_density


@dataclass
class Calibration:
    # [[average rate, drift threshold], ...]: `rd` under the hold fill
    rd_thresholds: list[list[float]] = field(default_factory=list)
    # [[average rate, slope], ...]: `rd` under the mask fill, on the value predictor's PSNR curves
    rd_slopes: list[list[float]] = field(default_factory=list)
    # dB the predicted curve overshoots at each rate k/K (`--target-psnr`)
    target_margins: list[float] = field(default_factory=list)
    # the same for the windows of a chain (each continues the one before, but for every refresh-th), measured on
    # the continuing windows (they pay no first latent frame); empty: rd_thresholds
    rd_continuing_thresholds: list[list[float]] = field(default_factory=list)
    # the sparse key frames the hold thresholds were measured with, and that `hold` + `drift` tokenize with by
    # default (`fill.key_lattice`; 1: whole first latent frames)
    key_density: float = 1.0

    @classmethod
    def from_config(cls, config: dict, curve_points: int | None) -> "Calibration":
        """Read and check the config's calibration keys; `curve_points` is the value predictor's (None: none)."""
        calibration = cls(
            [[float(r), float(v)] for r, v in config.get("rd_thresholds") or []],
            [[float(r), float(v)] for r, v in (config.get("rd_slopes") or {}).get("psnr", [])],
            [float(m) for m in config.get("target_margins") or []],
            [[float(r), float(v)] for r, v in config.get("rd_continuing_thresholds") or []],
            check_key_density(config.get("key_density", 1.0)),
        )
        if calibration.target_margins and len(calibration.target_margins) != (curve_points or -1):
            raise ValueError(
                f"{len(calibration.target_margins)} target_margins need a value predictor of as many curve points"
            )
        return calibration

    def to_config(self) -> dict:
        """The config.json keys, in the order checkpoints have always written them."""
        config = {"rd_thresholds": self.rd_thresholds} if self.rd_thresholds else {}
        config |= {"target_margins": self.target_margins} if self.target_margins else {}
        config |= {"rd_slopes": {"psnr": self.rd_slopes}} if self.rd_slopes else {}
        continuing = self.rd_continuing_thresholds
        config |= {"rd_continuing_thresholds": continuing} if continuing else {}
        return config | ({"key_density": self.key_density} if self.key_density != 1 else {})

    def hold_thresholds(self, chained: bool) -> list[list[float]]:
        """The drift thresholds `rd` under `hold` rates a window by: a chain's own, where measured, for the
        windows of a chain (one threshold for all its windows, as equal slopes want, the fresh ones among them
        paying their first latent frame on top); a window alone is rated as the one-window clips measured."""
        return self.rd_continuing_thresholds if chained and self.rd_continuing_thresholds else self.rd_thresholds
