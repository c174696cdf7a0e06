"""Where the tokens went: original | reconstruction with the kept-token mask | the mask alone.

Each panel row is one video frame; under it a bar shows the fraction of tokens kept in the latent
frame that frame belongs to. `strip` lays a few such frames out as one PNG for READMEs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .tokens import Tokens

BAR_HEIGHT = 10


def per_frame_masks(tokens: Tokens) -> list[np.ndarray]:
    """The keep-mask [h, w] of the latent frame covering each output frame (later windows win)."""
    tf = tokens.header.temporal_factor
    masks: list[np.ndarray | None] = [None] * tokens.header.num_frames
    for w in tokens.windows:
        for i in range(w.end - w.start):
            latent = 0 if i == 0 else (i - 1) // tf + 1
            masks[w.start + i] = w.mask[min(latent, w.mask.shape[0] - 1)]
    return masks


def compose(original: np.ndarray, recon: np.ndarray, mask: np.ndarray, spatial: int) -> np.ndarray:
    """One visualization frame [H + bar, 3W, 3] uint8."""
    h, w = original.shape[:2]
    up = np.kron(mask.astype(np.uint8), np.ones((spatial, spatial), np.uint8))[:h, :w].astype(bool)
    overlay = recon.astype(np.float32)
    overlay[~up] *= 0.45  # dropped tokens dimmed
    overlay[up] = 0.8 * overlay[up] + 0.2 * np.array([255, 80, 40], np.float32)  # kept tokens tinted
    mask_img = np.repeat((up * 255).astype(np.uint8)[..., None], 3, axis=2)
    row = np.concatenate([original, overlay.clip(0, 255).astype(np.uint8), mask_img], axis=1)
    bar = np.full((BAR_HEIGHT, row.shape[1], 3), 32, np.uint8)
    filled = int(round(mask.mean() * row.shape[1]))
    bar[2:-2, :filled] = (255, 170, 40)
    return np.concatenate([row, bar], axis=0)


def render(originals: Iterable[np.ndarray], recons: Iterable[np.ndarray], tokens: Tokens) -> Iterator[np.ndarray]:
    masks = per_frame_masks(tokens)
    for i, (o, r) in enumerate(zip(originals, recons)):
        yield compose(o, r, masks[i], tokens.header.spatial_factor)


def strip(frames: list[np.ndarray], path: str | Path, count: int = 4, title: str | None = None) -> Path:
    """Save `count` evenly spaced visualization frames stacked vertically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    image = np.concatenate([frames[i] for i in picks], axis=0)
    fig_w = 9.0
    fig = plt.figure(figsize=(fig_w, fig_w * image.shape[0] / image.shape[1] + (0.4 if title else 0)), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1 if not title else 1 - 0.4 / fig.get_figheight()))
    ax.imshow(image)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
