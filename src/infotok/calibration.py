"""`Calibration`: what `infotok calibrate` measures on the training clips for a checkpoint's rate control.

One object, held by `InfoTok.calibration`, read from and written to the checkpoint's config.json (the keys
`rd_thresholds`, `rd_slopes`, `target_margins`, each present only when measured, so older configs read
unchanged). The router's mean score (`score_mean`) stays a buffer of the network: training updates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .names import OBJECTIVES


@dataclass
class Calibration:
    # [[average rate, drift threshold], ...]: `rd` under the hold fill
    rd_thresholds: list[list[float]] = field(default_factory=list)
    # objective -> [[average rate, slope], ...]: `rd` under the mask fill, on the value predictor's curves
    rd_slopes: dict[str, list[list[float]]] = field(default_factory=dict)
    # dB the predicted curve overshoots at each rate k/K (`--target-psnr`)
    target_margins: list[float] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict, curve_points: int | None) -> "Calibration":
        """Read and check the config's calibration keys; `curve_points` is the value predictor's (None: none)."""
        calibration = cls(
            [[float(r), float(v)] for r, v in config.get("rd_thresholds") or []],
            {
                _objective(k): [[float(r), float(v)] for r, v in table]
                for k, table in (config.get("rd_slopes") or {}).items()
            },
            [float(m) for m in config.get("target_margins") or []],
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
        return config | ({"rd_slopes": self.rd_slopes} if self.rd_slopes else {})


def _objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return name
