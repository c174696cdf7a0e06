"""Rate policies and rankings: one small class per name (and fill) in a registry; `encode` computes only what
the chosen ones read."""

import numpy as np
import pytest
import torch

from infotok.names import FILLS, SELECTIONS, STRATEGIES
from infotok.rate_policies import CurveSlopeRates, DriftThresholdRates, rate_policy_for
from infotok.selection import RANKINGS, Ranking, ranking, ranking_for
from infotok.video import synthetic_video
from tests.conftest import tiny_model


def test_every_name_offered_is_one_registered_class_under_each_fill():
    model = tiny_model(predictor=True)
    for name in STRATEGIES:
        for fill in FILLS:
            assert rate_policy_for(model, name, fill, 0.5).name == name
    assert type(rate_policy_for(model, "rd", "hold", 0.5)) is DriftThresholdRates  # rd's two algorithms, named
    assert type(rate_policy_for(model, "rd", "mask", 0.5)) is CurveSlopeRates
    assert rate_policy_for(model, "static", "mask", 0.5, target_psnr=30.0).name == "target"
    assert set(RANKINGS) == set(SELECTIONS) and all(ranking_for(name).name == name for name in SELECTIONS)


@pytest.fixture
def counted(monkeypatch):
    """A tiny model with a predictor whose router pass and predictor count their calls."""
    model = tiny_model(predictor=True)
    calls = {"router": 0, "predictor": 0}
    router, predictor = model.router_scores, model.predictor.forward

    def count(name, f):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return f(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(model, "router_scores", count("router", router))
    monkeypatch.setattr(model.predictor, "forward", count("predictor", predictor))
    return model, calls


@pytest.mark.parametrize(
    "rate, strategy, selection, fill, router, predictor",
    [
        (0.5, "static", "drift", "hold", 0, 0),
        (0.5, "rd", "drift", "hold", 0, 0),  # rd under hold reads the codes' drift
        (0.5, "static", "error", "mask", 1, 0),
        (1.0, "static", "error", "mask", 0, 0),  # a window kept whole needs no ranking
        (0.5, "rd", "value", "mask", 0, 1),
        (0.5, "global_elbo", "value", "mask", 1, 1),
        (0.5, "uniform", "random", "mask", 0, 0),
    ],
)
def test_encode_computes_only_what_the_rate_policy_and_the_ranking_read(
    counted, rate, strategy, selection, fill, router, predictor
):
    model, calls = counted
    clip = torch.from_numpy(synthetic_video(9, 32, 32, seed=0))[None]
    batch = model.encode(clip, rate, strategy, selection, fill=fill)
    assert calls == {"router": router, "predictor": predictor}
    assert batch.nfe == 1 + router and np.isnan(float(batch.score[0])) == (router == 0)


def test_a_ranking_added_in_one_place_tokenizes_by_its_own_rule():
    @ranking("centre_first")
    class CentreFirst(Ranking):
        def priority(self, inputs, i, generator):
            t, h, w = inputs.grid.shape[1:]
            y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
            return -(y**2 + x**2).expand(t, h, w).to(inputs.grid.device)

    try:
        model = tiny_model()
        clip = torch.from_numpy(synthetic_video(9, 64, 64, seed=1))[None]
        mask = model.encode(clip, 0.25, "static", "centre_first").mask[0]
        assert mask[:, 3:5, 3:5].all() and not mask[:, 0, 0].any()
    finally:
        del RANKINGS["centre_first"]


def test_the_old_choose_rate_still_works_for_one_release_with_a_warning():
    from infotok.router import choose_rate

    with pytest.warns(DeprecationWarning, match="rate_policy_for"):
        assert choose_rate("static", 0.3) == 0.3
    with pytest.warns(DeprecationWarning):
        assert choose_rate("global_elbo", 0.5, score=0.2, score_mean=0.1) == 1.0
