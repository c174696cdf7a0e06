"""The value predictor: what each token is worth and what each window's rate-distortion curve is,
from the compressor's output features in one pass (no decoder pass).

- token value: the log of the distortion that dropping the token adds over keeping it, given what
  the decompressor can fill in from the kept tokens of this and earlier latent frames. The head sees
  each position's features, their change since the previous latent frame, and a 3x3 neighbourhood, so
  a textured patch that has not moved since frame 1 can be worth little while a smooth region that
  nothing else describes is worth a lot.
- window curve: PSNR (dB, uint8 scale) at every rate k/16 under value selection, monotone by
  construction (a start value plus positive steps), from the pooled features and the quantiles of
  the window's token values.

Both are trained on the model's own decodes (`value_targets`, `curve_targets`) by
`infotok train infotok --train-selection value`; the features are detached, so the heads never
change what the tokenizer does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .geometry import Geometry
from .router import token_errors


@dataclass
class PredictorConfig:
    hidden: int = 64
    curve_points: int = 16  # PSNR at rates k / curve_points, k = 1 .. curve_points
    quantiles: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PredictorConfig":
        return cls(**d)

    @property
    def rates(self) -> list[float]:
        return [k / self.curve_points for k in range(1, self.curve_points + 1)]


class ValuePredictor(nn.Module):
    """features [B, C, t, h, w] -> (token values [B, t, h, w], PSNR curve [B, curve_points])."""

    def __init__(self, channels: int, config: PredictorConfig):
        super().__init__()
        self.config = config
        hid = config.hidden
        self.norm = nn.LayerNorm(2 * channels + 1)
        self.embed = nn.Linear(2 * channels + 1, hid)
        self.spatial = nn.Conv2d(hid, hid, 3, padding=1)
        self.value_out = nn.Linear(hid, 1)
        self.curve = nn.Sequential(
            nn.Linear(hid + config.quantiles, 2 * hid), nn.GELU(), nn.Linear(2 * hid, config.curve_points)
        )
        with torch.no_grad():  # start near a plausible curve: 20 dB at 1/16, about +0.6 dB a step
            self.curve[-1].bias.copy_(torch.tensor([20.0] + [0.0] * (config.curve_points - 1)))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(feats.device.type, enabled=False):  # small, and its quantiles need fp32
            return self._predict(feats.float())

    def _predict(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = feats.shape
        previous = torch.cat([feats[:, :, :1], feats[:, :, :-1]], dim=2)
        first = torch.zeros(b, 1, t, h, w, device=feats.device)
        first[:, :, 0] = 1.0
        x = rearrange(torch.cat([feats, feats - previous, first], dim=1), "b c t h w -> (b t) h w c")
        x = F.gelu(self.embed(self.norm(x)))
        x = x + F.gelu(self.spatial(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        value = rearrange(self.value_out(x), "(b t) h w 1 -> b t h w", b=b)
        pooled = rearrange(x, "(b t) h w c -> b (t h w) c", b=b).mean(dim=1)
        levels = torch.linspace(0, 1, self.config.quantiles, device=feats.device)
        quantiles = torch.quantile(value.detach().flatten(1), levels, dim=1).T
        raw = self.curve(torch.cat([pooled, quantiles], dim=1))
        curve = torch.cat([raw[:, :1], raw[:, :1] + torch.cumsum(F.softplus(raw[:, 1:] - 0.5), dim=1)], dim=1)
        return value, curve


def curve_index(rates, points: int, device=None) -> torch.Tensor:
    """Index into a curve of `points` rates k/points of each rate's nearest point [B] (long)."""
    return torch.tensor([round(float(r) * points) - 1 for r in rates], device=device).clamp(0, points - 1)


def value_targets(x: torch.Tensor, full: torch.Tensor, dropped: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """log(extra squared error of each token's block when it is dropped, over the full-rate decode)
    [B, t, h, w], from a decode `dropped` with a mask and the full-rate decode `full` of x."""
    extra = token_errors(x, dropped, geometry, power=2) - token_errors(x, full, geometry, power=2)
    return torch.log(extra.clamp_min(0) + 1e-5)


def curve_targets(x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """Each window's PSNR [B] (uint8 scale: [-1, 1] with peak 2)."""
    mse = ((decoded.float().clamp(-1, 1) - x.float()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def predictor_loss(
    value: torch.Tensor,
    curve: torch.Tensor,
    value_target: torch.Tensor,
    mask: torch.Tensor,
    psnr: torch.Tensor,
    points: torch.Tensor,
    on_curve: torch.Tensor,
) -> torch.Tensor:
    """Squared error of the values at dropped positions (what dropping them cost) plus a Huber loss
    on the curve at the rate each window was decoded at (`points`: index k-1), for the windows whose
    mask came from value selection (`on_curve`): the curve describes that selection."""
    dropped = ~mask
    value_loss = ((value - value_target) ** 2)[dropped].mean() if bool(dropped.any()) else value.sum() * 0
    picked = curve.gather(1, points[:, None])[:, 0]
    curve_loss = F.smooth_l1_loss(picked[on_curve], psnr[on_curve]) if bool(on_curve.any()) else curve.sum() * 0
    return value_loss + curve_loss
