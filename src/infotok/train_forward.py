"""The training passes `InfoTok.forward` runs (Algorithm 1 and the value predictor's own stage).

Masks come from the same rankings as inference (`selection.RANKINGS`), rates from Algorithm 1's draws
(or global_elbo with the router in the loop); `train` calls them through the model's forward, so that a
distributed wrapper synchronises the gradients.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .predictor import curve_index, curve_targets, predictor_loss, value_targets
from .router import global_elbo_rate, score_map
from .selection import Inputs, keep_masks, latent_change, ranking_for


def training_pass(
    model,
    x: torch.Tensor,
    rates: Sequence[float] | Sequence[Sequence[float]] | None = None,
    selection: str | Sequence[str] = "error",
    score_mean: float | None = None,
    train_predictor: bool = False,
) -> tuple[torch.Tensor, list[float], torch.Tensor | None, torch.Tensor | None]:
    """Algorithm 1 on windows on the grid: encode once, route (no gradient), decode the kept tokens.

    `rates` (one per window, None = full rate) are averages turned into global_elbo rates when
    `score_mean` is given (Algorithm 1 with the router in the loop), else the windows' rates.
    `selection` is one method or one per window; `drift` windows decode under the hold fill, the
    others under mask. With `train_predictor`, this decode also trains
    the value predictor (on detached features: it never changes the tokens): token values on
    every window, the curve on windows selected by `value` (it describes that selection); it runs
    on every step, so that distributed runs use every parameter. Returns (reconstruction, the rates
    used, the score map or None where no router pass ran, the predictor's loss or None).
    """
    b = x.shape[0]
    feats = model.features(x)
    codes, indices, values = model.quantize_values(feats)
    if rates is None:
        return model.decode_codes(codes), [1.0] * b, None, None
    selections = [selection] * b if isinstance(selection, str) else list(selection)
    predicting = train_predictor and model.predictor_config is not None
    full = None
    if "error" in selections or predicting or score_mean is not None:
        with torch.no_grad():
            full = model.decode_codes(codes.detach())
        smap = score_map(x, full, model.geometry)
    else:
        smap = torch.zeros(indices.shape, device=x.device)
    if score_mean is not None:
        scores = [float(smap[i].mean()) for i in range(b)]
        rates = [global_elbo_rate(r, s, score_mean) for r, s in zip(rates, scores)]
    value, curve = model.predictor(feats.detach()) if predicting else (None, None)
    if value is None and "value" in selections:
        model.check_predictor("value selection")
        with torch.no_grad():
            value = model.predictor(feats.detach())[0]
    change = latent_change(codes.detach()) if any("change" in ranking_for(s).reads for s in selections) else None
    # drift windows are ranked as `infotok encode` ranks them: steady codes, the checkpoint's sparse key frames
    drift = "drift" in selections
    ranked = model.ranked_codes(codes.detach(), values.detach(), "hold") if drift else codes.detach()
    inputs = Inputs(
        ranked,
        smap,
        value.detach() if value is not None else None,
        None,
        change,
        key_density=model.resolve_key_density(None, "hold", "drift") if drift else 1.0,
    )
    masks = torch.cat([ranking_for(s).masks(inputs.window(i), [r]) for i, (s, r) in enumerate(zip(selections, rates))])
    y = model.decode_codes(codes, masks, ["hold" if s == "drift" else "mask" for s in selections])
    loss = None
    if predicting:
        on_curve = torch.tensor([s == "value" for s in selections], device=x.device)
        loss = predictor_loss(
            value,
            curve,
            value_targets(x, full, y.detach(), model.geometry),
            masks,
            curve_targets(x, y.detach()),
            curve_index(rates, curve.shape[1], x.device),
            on_curve,
        )
    return y, list(rates), smap if full is not None else None, loss


def predictor_pass(
    model, x: torch.Tensor, rates: Sequence[Sequence[float]]
) -> tuple[torch.Tensor, list[float], None, torch.Tensor]:
    """`infotok train predictor`: the value predictor learns from this model's own decodes while
    the model stays as it is (no gradient through it). Window i is decoded once per rate in
    `rates[i]` with value selection (the predictor's current ranking); each decode gives the
    window's PSNR at that rate and what dropping each token cost. Returns (the last decode, the
    rates, None, the predictor's loss averaged over the decodes)."""
    model.check_predictor("predictor training")
    with torch.no_grad():
        feats = model.features(x)
        codes, _ = model.base.quantize(feats)
        full = model.decode_codes(codes)
    value, curve = model.predictor(feats)
    losses, y = [], full
    for j in range(len(rates[0])):
        chosen = [float(r[j]) for r in rates]
        with torch.no_grad():
            masks = keep_masks(value.detach(), chosen, "value")
            y = model.decode_codes(codes, masks)
        losses.append(
            predictor_loss(
                value,
                curve,
                value_targets(x, full, y, model.geometry),
                masks,
                curve_targets(x, y),
                curve_index(chosen, curve.shape[1], x.device),
                torch.ones(len(chosen), dtype=torch.bool, device=x.device),
            )
        )
    return y, [float(np.mean(r)) for r in rates], None, torch.stack(losses).mean()
