"""Evaluation: rate sweeps over strategies and selections on clips, the oracle, the ElasticTok search.

Protocol (TokenBench): first `frames` frames, short side resized to `size`, centre crop; PSNR per
video from the MSE over all its frames in uint8 range, then averaged over videos; SSIM per frame
(data range 255), averaged. One clip = one window, so each clip is encoded and routed once and
then decoded once per (strategy, selection, rate); the metrics live in `metrics`. LPIPS and FVD
(module `perceptual`) only with user-supplied network weights.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batch import TokenBatch
from .fill import SPARSE_KEY_DENSITY, Carry, carry_after
from .geometry import window_spans
from .ledger import MASK_BPP16, Ledger
from .metrics import frechet_distance, psnr, ssim, vmaf
from .model import InfoTok
from .perceptual import Perceptual
from .pipeline import new_header
from .rate_policies import rate_policy_for
from .registers import guided
from .router import (
    balanced_rates,
    calibrate_continuing_thresholds,
    calibrate_margins,
    calibrate_slopes,
    calibrate_thresholds,
    check_rate,
    hold_rates,
    shared_budget_rates,
    shared_hold_rates,
)
from .selection import Inputs, drift_masks
from .spec import Windowing
from .tokens import Tokens
from .video import center_crop, from_model, read_video, resize_and_crop, resize_short_side


# ---------------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """One evaluation clip, encoded and routed once (a full-rate batch of one window with its scores)."""

    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3] after the protocol's resize and crop
    batch: TokenBatch
    fvd_reference: np.ndarray | None = None  # FVD features of the original frames, computed once

    @property
    def score(self) -> float:
        return float(self.batch.score[0])

    @property
    def scores(self) -> torch.Tensor:
        """Per-token router scores [t, h, w]."""
        return self.batch.score_map[0]


def load_clip(model: InfoTok, path: Path, size: int, frames: int, crop: bool = True) -> Clip:
    """Read, resize (short side `size`), centre-crop to `size` x `size` unless `crop` is False,
    encode and route one clip."""
    raw, _ = read_video(path, max_frames=frames)
    return make_clip(model, path.name, resize_and_crop(raw, size) if crop else resize_short_side(raw, size))


def make_clip(model: InfoTok, name: str, frames: np.ndarray) -> Clip:
    """Encode and route uint8 frames [T, H, W, 3] that are already at the evaluation size."""
    return Clip(name, frames, model.encode(frames[None], rate=1.0, strategy="static", keep_scores=True))


def clip_at(
    model: InfoTok,
    clip: Clip,
    rate: float,
    selection: str = "error",
    seed: int = 0,
    fill: str = "mask",
    key_density: float | None = None,
) -> TokenBatch:
    """The clip's tokens at `rate`, decoded with `fill` (no new encoder or router pass)."""
    return model.reselect(clip.batch, [rate], selection, seed, fill, key_density)


def clip_codes(model: InfoTok, clip: Clip) -> torch.Tensor:
    """The clip's latent codes [C, t, h, w] under `hold` (what its rates read), from its full-rate tokens."""
    return model.batch_ranked_codes(clip.batch, "hold")[0]


def decode_clip(model: InfoTok, batch: TokenBatch) -> np.ndarray:
    return from_model(model.decode(batch))


def clip_ledger(model: InfoTok, clip: Clip, batch: TokenBatch) -> Ledger:
    """The ledger of this clip at this keep-mask, with the bytes of the real `.itok` file holding it."""
    t, h, w = clip.frames.shape[:3]
    header = new_header(model, w, h, 25.0, t, 0, num_frames=t, strategy="", selection="", avg_rate=float(batch.rate[0]))
    tokens = Tokens(header, [batch.window(0, 0, t)])
    with tempfile.TemporaryDirectory() as d:
        path = tokens.save(Path(d, "clip.itok"))
        return tokens.ledger(file_bytes=os.path.getsize(path))


def measure_clip(
    model: InfoTok,
    clip: Clip,
    batch: TokenBatch,
    quality: bool = True,
    with_vmaf: bool = False,
    perceptual: Perceptual | None = None,
) -> dict:
    """Decode one clip's tokens and score them: PSNR always; SSIM and real file BPP16 with
    `quality`; VMAF on request; LPIPS, and the FVD features (key `_fvd`, reduced over a run by
    `fvd_of`), with `perceptual`."""
    recon = decode_clip(model, batch)
    mask = batch.mask[0]
    row = {
        "video": clip.name,
        "realized_rate": Ledger(int(mask.sum()), mask.numel()).realized_rate,
        "psnr": psnr(clip.frames, recon),
    }
    if quality:
        row["ssim"] = ssim(clip.frames, recon)
        row["bpp16_file"] = clip_ledger(model, clip, batch).file_bpp16
    if with_vmaf:
        row["vmaf"] = vmaf(clip.frames, recon)
    if perceptual and perceptual.lpips:
        row["lpips"] = perceptual.lpips.video_distance(clip.frames, recon)
    if perceptual and perceptual.fvd:
        if clip.fvd_reference is None:
            clip.fvd_reference = perceptual.fvd(clip.frames)
        row["_fvd"] = perceptual.fvd(recon)
    return row


def fvd_of(rows: list[dict], clips: list[Clip]) -> float | None:
    """FVD of one run: Frechet distance between original and reconstruction features of its clips.
    Pops the rows' `_fvd` features; None without them or with fewer than two clips."""
    feats = [r.pop("_fvd", None) for r in rows]
    if any(f is None for f in feats) or len(feats) < 2:
        return None
    return frechet_distance(np.stack([c.fvd_reference for c in clips]), np.stack(feats))


def clip_curves(clips: list[Clip]) -> np.ndarray:
    """The value predictor's PSNR curves of clips encoded with their scores [clips, 16]."""
    if any(c.batch.curve is None for c in clips):
        raise ValueError("rd needs a checkpoint with a value predictor")
    return np.stack([c.batch.curve[0].cpu().numpy() for c in clips])


def calibrated_rd_rate(
    model: InfoTok, clip: Clip, rate: float, fill: str = "hold", key_density: float | None = None
) -> float:
    """The rate `infotok encode --strategy rd` gives this clip alone (`rate_policies`: under hold the
    calibrated threshold on its codes' drift, under mask the calibrated slope on its predicted curve)."""
    codes = clip_codes(model, clip)[None] if fill == "hold" else None
    density = model.resolve_key_density(key_density, fill, "drift")
    return rate_policy_for(model, "rd", fill, rate).rates(
        Inputs(codes=codes, curve=clip.batch.curve, key_density=density), [None]
    )[0]


def clip_rates(
    model: InfoTok,
    strategy: str,
    avg_rate: float,
    clips: list[Clip],
    seed: int = 0,
    fill: str = "mask",
    budget: str = "run",
    key_density: float = 1.0,
) -> list[float]:
    """Per-clip rates for one run: global_elbo is balanced; rd spends a shared budget (on the
    predicted curves, or under `hold` on the codes' drift) so that the run's mean rate is avg_rate
    (`budget` "run"), or gives each clip what `infotok encode` gives it alone ("calibrated")."""
    if strategy == "rd" and budget == "calibrated":
        return [calibrated_rd_rate(model, c, avg_rate, fill, key_density) for c in clips]
    if strategy == "global_elbo":
        return balanced_rates(avg_rate, [c.score for c in clips], float(model.score_mean))
    if strategy == "rd" and fill == "hold":
        return shared_hold_rates([clip_codes(model, c) for c in clips], avg_rate, True, key_density)
    if strategy == "rd":  # like global_elbo here, the run's mean rate is exactly avg_rate: a shared budget
        largest = max(c.batch.mask[0].numel() for c in clips)  # each clip weighs alike, as in the mean rate
        return shared_budget_rates(clip_curves(clips), [largest] * len(clips), avg_rate)
    policy = rate_policy_for(model, strategy, fill, avg_rate)  # static, uniform: rates from draws alone
    if policy.reads:
        raise ValueError(f"{strategy} reads per-clip inputs: evaluate it with budget 'calibrated'")
    rng = np.random.default_rng(seed)
    return policy.rates(Inputs(), [policy.draw(rng) for _ in clips])


def evaluate(
    model: InfoTok,
    paths: list[Path],
    rates: list[float],
    strategies: list[str] | None = None,
    selections: list[str] | None = None,
    size: int = 256,
    frames: int = 33,
    with_vmaf: bool = False,
    seed: int = 0,
    progress=None,
    clips: list[Clip] | None = None,
    perceptual: Perceptual | None = None,
    crop: bool = True,
    fill: str | None = None,
    budget: str = "calibrated",
    key_density: float | None = None,
) -> dict:
    """Run every (strategy, selection, rate) over the clips, decoding with `fill`; returns the JSON
    report. Strategy, selection and fill left out are the checkpoint's defaults (`InfoTok.choices`),
    and `rd` gives each clip its calibrated rate (`budget` "calibrated"), so that no options measure
    what `infotok encode` writes; `budget` "run" shares one exact budget among the clips.
    `crop=False` keeps whole frames (short side `size`), where borders such as a pillarbox stay in view.
    `key_density`: sparse key frames' density (`fill.key_lattice`; None: the checkpoint's, where it applies)."""
    default_strategy, default_selection, fill = model.choices(fill=fill)
    strategies, selections = strategies or [default_strategy], selections or [default_selection]
    t0 = time.time()
    if clips is None:
        clips = []
        for p in paths:
            clips.append(load_clip(model, p, size, frames, crop=crop))
            if progress:
                progress(f"encoded {p.name}")
    encode_seconds = time.time() - t0
    results, per_video = [], []
    for strategy in strategies:
        for selection in selections:
            for avg_rate in rates:
                avg_rate = check_rate(avg_rate)
                model.check_rates(avg_rate, fill=fill)
                t1 = time.time()
                density = model.resolve_key_density(key_density, fill, selection)
                r_list = clip_rates(model, strategy, avg_rate, clips, seed, fill, budget, density)
                rows = []
                for clip, r in zip(clips, r_list):
                    rows.append(
                        {
                            "strategy": strategy,
                            "selection": selection,
                            "fill": fill,
                            "rate": avg_rate,
                            "clip_rate": r,
                            "score": clip.score,
                            "width": clip.frames.shape[2],
                            "height": clip.frames.shape[1],
                        }
                        | measure_clip(
                            model,
                            clip,
                            clip_at(model, clip, r, selection, seed, fill, density),
                            with_vmaf=with_vmaf,
                            perceptual=perceptual,
                        )
                    )
                fvd = fvd_of(rows, clips)
                realized = float(np.mean([r["realized_rate"] for r in rows]))
                summary = {
                    "strategy": strategy,
                    "selection": selection,
                    "fill": fill,
                    "key_density": density,
                    "rate": avg_rate,
                    "realized_rate": realized,
                    "bpp16": realized + (MASK_BPP16 if model.adaptive or avg_rate < 1 else 0.0),  # a base at 1: no mask
                    "bpp16_file": float(np.mean([r["bpp16_file"] for r in rows])),
                    "psnr": float(np.mean([r["psnr"] for r in rows])),
                    "ssim": float(np.mean([r["ssim"] for r in rows])),
                    "videos": len(rows),
                    "nfe": 2 if (strategy == "global_elbo" or (selection == "error" and avg_rate < 1)) else 1,
                    "seconds": time.time()
                    - t1
                    + encode_seconds / max(1, len(rates) * len(strategies) * len(selections)),
                }
                if with_vmaf:
                    summary["vmaf"] = float(np.mean([r["vmaf"] for r in rows]))
                if perceptual and perceptual.lpips:
                    summary["lpips"] = float(np.mean([r["lpips"] for r in rows]))
                if fvd is not None:
                    summary["fvd"] = fvd
                results.append(summary)
                per_video += rows
                if progress:
                    progress(f"{strategy}/{selection} rate {avg_rate:g}: PSNR {summary['psnr']:.2f} dB")
    return {
        "checkpoint": model.name,
        "size": size,
        "frames": frames,
        "crop": crop,
        "results": results,
        "per_video": per_video,
    }


def write_report(report: dict, json_path: str | os.PathLike) -> None:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    rows = report["per_video"]
    if rows:
        with open(json_path.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def evaluate_1d(
    model,
    paths: list[Path],
    counts: list[int],
    size: int = 256,
    frames: int = 33,
    crop: bool = True,
    steps: int = 0,
    seed: int = 0,
    with_vmaf: bool = False,
    progress=None,
    guidance: float = 1.0,
) -> dict:
    """`infotok eval --layout 1d`: each clip (its first `frames` frames, short side `size`, centre-cropped to
    `size` x `size`, or with `crop=False` to the largest multiples of the layout's `align`) tokenized once,
    then decoded from each window's first `counts` tokens. Returns the report: per count the mean PSNR,
    SSIM (and VMAF) over the clips and the share of the grid's positions those tokens are; per clip its rows."""
    from .layout1d import LAYOUT

    per_video = []
    for path in paths:
        raw = read_video(path, max_frames=frames)[0]
        clip = resize_and_crop(raw, size) if crop else resize_short_side(raw, size)
        clip = center_crop(clip, clip.shape[1] // model.align * model.align, clip.shape[2] // model.align * model.align)
        whole = model.tokenize(clip)
        total = whole.windows[0].kept  # every window's whole sequence
        if max(counts) > total:
            size_text = f"{clip.shape[2]}x{clip.shape[1]}"
            raise ValueError(f"{max(counts)} tokens is more than a {size_text} window holds ({total})")
        for k in counts:
            cut = whole.truncate(k)
            decoded = model.detokenize(cut, steps, seed, guidance=guidance)
            row = {"video": Path(path).name, "tokens": k, "rate": cut.ledger().realized_rate}
            row |= {"psnr": psnr(clip, decoded), "ssim": ssim(clip, decoded)}
            if with_vmaf:
                row["vmaf"] = vmaf(clip, decoded)
            per_video.append(row)
        if progress:
            progress(f"evaluated {Path(path).name}")
    results = []
    for k in counts:
        rows = [r for r in per_video if r["tokens"] == k]
        metrics = [m for m in ("rate", "psnr", "ssim", "vmaf") if m in rows[0]]
        results.append({"tokens": k, **{m: float(np.mean([r[m] for r in rows])) for m in metrics}, "videos": len(rows)})
    decoder = f"flow, {steps} steps, seed {seed}{guided(guidance)}" if steps else "regression"
    return {"checkpoint": model.name, "layout": LAYOUT, "decoder": decoder, "size": size, "frames": frames,
            "crop": crop, "results": results, "per_video": per_video}  # fmt: skip


# ------------------------------------------------------------------------- windows that continue each other
CHAIN_WINDOWS = 5  # a fresh window and up to four continuing it a clip: 24 of the 40 training clips hold five, and
# longer chains would weigh the few long clips alone


@dataclass
class Chains:
    """Clips cut into windows that continue each other (overlapping as `infotok encode`'s do), as the encoder's codes:
    position j holds the j-th window of every clip that has one, clips ordered longest first, so the
    windows at position j continue the first ones at position j - 1."""

    codes: list[torch.Tensor]  # [n_j, C, t, h, w] per position
    values: list[torch.Tensor]  # what FSQ rounded to them (`steady_codes` reads them)
    indices: list[torch.Tensor]  # long [n_j, t, h, w]


def load_chains(model: InfoTok, paths: list[Path], size: int, window: int, windows: int = CHAIN_WINDOWS) -> Chains:
    """The first `windows` whole windows of `window` frames (overlapping as `infotok encode`'s do) of each
    clip (short side `size`, centre crop), encoded once."""
    overlap = Windowing().overlap
    per_clip = []
    for p in paths:
        raw, _ = read_video(p, max_frames=window + (windows - 1) * (window - overlap))
        frames = resize_and_crop(raw, size)
        spans = [(a, b) for a, b in window_spans(len(frames), window, overlap) if b - a == window]
        per_clip.append([model.encoder_codes(frames[a:b][None]) for a, b in spans])
    per_clip.sort(key=len, reverse=True)
    positions = [[c[j] for c in per_clip if len(c) > j] for j in range(len(per_clip[0]) if per_clip else 0)]
    return Chains(*([torch.cat([w[i] for w in at]) for at in positions] for i in (0, 2, 1)))


def continuing_rates(model: InfoTok, chains: Chains, threshold: float, key_density: float = 1.0) -> list[float]:
    """The rates `rd` under `hold` gives the continuing windows of `chains` when every window is rated at
    `threshold` (with sparse key frames of `key_density`): each window is selected (`drift`) and carried into
    the next as `infotok encode` does it, from the codes alone."""
    rates, carry = [], None
    for codes, values, indices in zip(chains.codes, chains.values, chains.indices):
        carried = present = None
        if carry is not None:
            carry = Carry(carry.indices[: len(codes)], carry.present[: len(codes)])
            carried, present = model.carried_codes(carry), carry.present
        ranked = model.ranked_codes(codes, values, "hold", carried, present)
        window_rates = hold_rates(ranked, threshold, carried, present, key_density)
        rates += window_rates if carry is not None else []
        mask = drift_masks(ranked, window_rates, carried=carried, present=present, key_density=key_density)
        carry = carry_after(indices.masked_fill(~mask, 0), mask, carry)
    return rates


def calibrate(
    model: InfoTok,
    paths: list[Path],
    size: int = 256,
    frames: int = 33,
    progress=None,
    chain_windows: int = CHAIN_WINDOWS,
    key_density: float | None = None,
) -> dict:
    """The mean clip score `global_elbo` divides by, the drift thresholds `rd` uses under the
    `hold` fill (for a window alone, and, from each clip's first `chain_windows` windows of `frames` frames,
    for windows that continue each other; with sparse key frames of `key_density`, by default
    `fill.SPARSE_KEY_DENSITY` where the checkpoint can fill in dropped positions, else 1) and (with a value
    predictor) the slopes it uses under `mask` for each average rate, and the margins `--target-psnr` takes off
    the predicted curves (from decodes at every rate k/16 with value selection, as target mode tokenizes),
    measured on `paths` under the evaluation protocol."""
    if key_density is None:
        key_density = SPARSE_KEY_DENSITY if model.fills_in_dropped else 1.0
    key_density = model.resolve_key_density(key_density, "hold", "drift")
    scores, curves, measured, codes = {}, [], [], []
    for p in paths:
        clip = load_clip(model, p, size, frames)
        scores[p.name] = clip.score
        codes.append(clip_codes(model, clip))
        if clip.batch.curve is not None:
            curve = clip.batch.curve[0].cpu().numpy()
            curves.append(curve)
            measured.append(
                [
                    psnr(clip.frames, decode_clip(model, clip_at(model, clip, (k + 1) / len(curve), "value")))
                    for k in range(len(curve))
                ]
            )
        if progress:
            progress(f"{p.name}: score {scores[p.name]:.5f}")
    result = {
        "score_mean": float(np.mean(list(scores.values()))),
        "previous": float(model.score_mean),
        "videos": len(scores),
        "scores": scores,
        "size": size,
        "frames": frames,
        "rd_thresholds": calibrate_thresholds(codes, key_density=key_density),
        "key_density": key_density,
    }
    chains = load_chains(model, paths, size, frames, chain_windows)
    if len(chains.codes) > 1:  # some clip is long enough for a window that continues another
        result["rd_continuing_thresholds"] = calibrate_continuing_thresholds(
            lambda t: float(np.mean(continuing_rates(model, chains, t, key_density))), result["rd_thresholds"]
        )
        result["continuing_windows"] = sum(len(c) for c in chains.codes[1:])
    if curves:
        result["rd_slopes"] = calibrate_slopes(np.stack(curves))
        result["target_margins"] = calibrate_margins(np.stack(curves), np.array(measured))
    return result
