"""Rate policies: each window's rate for an asked average, as small classes found by name and fill.

The algorithms live in `router`; a policy names one, declares what it reads (`selection.Inputs`) so
`InfoTok.encode` computes only that, and refuses up front a checkpoint without the calibration it
needs. One name is one algorithm under each fill:
- `static`: the asked rate for every window;
- `global_elbo` (InfoTok): rate x the window's router score / the calibrated mean score;
- `uniform`: a random rate with the asked mean (the data-agnostic peer);
- `rd` under `hold` (`DriftThresholdRates`): the share of tokens whose code drifts past a threshold
  calibrated for the rate, so a still shot costs little more than its first latent frame (the windows of
  a chain, which continue each other, share a threshold of their own: most pay no first latent frame);
- `rd` under `mask` (`CurveSlopeRates`): where each window's predicted PSNR curve has the slope
  calibrated for the rate (equal slopes maximise the mean PSNR);
- `target` (`--target-psnr`): the fewest tokens predicted, less calibrated margins, to reach the PSNR.
(`eval --budget run` shares one exact budget among a set of clips instead: `router.shared_*`.)
A new policy is a subclass registered with `@rate_policy("name")` (or `fill=` for one fill alone),
its name in `names.STRATEGIES` for the command line and token headers.
"""

from __future__ import annotations

import numpy as np

from .router import (
    check_rate,
    check_strategy,
    global_elbo_rate,
    hold_rates,
    rd_rates,
    slope_for,
    target_rates,
    threshold_for,
    uniform_rate,
    warn_unreachable,
)
from .selection import Inputs

RATE_POLICIES: dict[tuple[str, str | None], type["RatePolicy"]] = {}


def rate_policy(name: str, fill: str | None = None):
    """Class decorator: register a rate policy under `name` (for one `fill`, or for every fill)."""

    def register(cls: type[RatePolicy]) -> type[RatePolicy]:
        cls.name = name
        RATE_POLICIES[(name, fill)] = cls
        return cls

    return register


def rate_policy_for(model, strategy: str, fill: str, rate: float, target_psnr: float | None = None) -> "RatePolicy":
    """The policy a tokenization runs: `target` under a PSNR target, else `strategy`'s under `fill`."""
    if target_psnr is not None:
        return TargetRates(model, rate, target_psnr)
    check_strategy(strategy)
    cls = RATE_POLICIES.get((strategy, fill)) or RATE_POLICIES[(strategy, None)]
    return cls(model, rate)


class RatePolicy:
    name = ""
    reads: frozenset[str] = frozenset()  # the `Inputs` fields it needs besides the codes

    def __init__(self, model, rate: float, target_psnr: float | None = None):
        self.model, self.rate, self.target_psnr = model, check_rate(rate), target_psnr

    def check(self) -> None:
        """Refuse, before any video is read, a checkpoint without what this policy needs."""

    def draw(self, generator: np.random.Generator) -> float | None:
        """One window's random draw, taken in window order (before that window's selection seed)."""
        return None

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        raise NotImplementedError


@rate_policy("static")
class StaticRates(RatePolicy):
    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        return [self.rate] * len(draws)


@rate_policy("global_elbo")
class GlobalElboRates(RatePolicy):
    reads = frozenset({"scores"})

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        mean = float(self.model.score_mean)
        return [global_elbo_rate(self.rate, float(inputs.scores[i].mean()), mean) for i in range(len(draws))]


@rate_policy("uniform")
class UniformRates(RatePolicy):
    def draw(self, generator: np.random.Generator) -> float:
        return uniform_rate(self.rate, generator)

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        return list(draws)


@rate_policy("rd", fill="hold")
class DriftThresholdRates(RatePolicy):
    def check(self) -> None:
        threshold_for(self.model.calibration.rd_thresholds, self.rate)

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        threshold = threshold_for(self.model.calibration.hold_thresholds(inputs.chained), self.rate)
        return hold_rates(inputs.codes, threshold, inputs.carried, inputs.present, inputs.key_density)


@rate_policy("rd", fill="mask")
class CurveSlopeRates(RatePolicy):
    reads = frozenset({"curve"})

    def check(self) -> None:
        self.model.check_predictor("rd, --target-psnr and value selection")
        slope_for(self.model.calibration.rd_slopes, self.rate)

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        return rd_rates(inputs.curve.cpu().numpy(), slope_for(self.model.calibration.rd_slopes, self.rate))


@rate_policy("target")
class TargetRates(RatePolicy):
    reads = frozenset({"curve"})

    def check(self) -> None:
        self.model.check_predictor("rd, --target-psnr and value selection")

    def rates(self, inputs: Inputs, draws: list) -> list[float]:
        curves, margins = inputs.curve.cpu().numpy(), self.model.calibration.target_margins
        warn_unreachable(curves, self.target_psnr, margins)
        return target_rates(curves, self.target_psnr, margins)
