"""`TokenBatch`: tokenized windows as tensors on the model's device, what `encode` returns and
`decode` takes (the `.itok` file format, which needs no torch, is `infotok.tokens`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .fill import Carry, carry_after
from .token_header import TokenHeader, TokenWindow


@dataclass
class TokenBatch:
    """A batch of tokenized windows, tensors on the model's device.

    `indices` holds the full grid with dropped positions set to 0, so decoding a batch and decoding
    what a file stores are the same computation. `frames`, `height`, `width` are the windows' size
    before padding to the model grid; `decode` crops back to it.
    """

    indices: torch.Tensor  # long [B, t, h, w]
    mask: torch.Tensor  # bool [B, t, h, w]
    rate: torch.Tensor  # float64 [B]: the rate each window got
    score: torch.Tensor  # float64 [B]: the router's clip score (NaN where no router pass ran)
    frames: int
    height: int
    width: int
    score_map: torch.Tensor | None = None  # [B, t, h, w] router scores, for re-selecting at other rates
    nfe: int = 1  # network passes spent per window (encoder, plus the router's decode)
    latent_change: torch.Tensor | None = None  # [B, t, h, w] the temporal selection's ranking, likewise
    value: torch.Tensor | None = None  # [B, t, h, w] the value predictor's token values, likewise
    curve: torch.Tensor | None = None  # [B, 16] its predicted PSNR at rates k/16, likewise
    predicted: torch.Tensor | None = None  # [B] predicted PSNR at each window's rate, where the predictor ran
    fill: str = "mask"  # how dropped tokens decode (`infotok.fill`)
    carry: Carry | None = None  # what these windows continue from (None: each starts afresh)
    level_values: torch.Tensor | None = None  # [B, C, t, h, w] the codes before rounding, for re-selecting under
    # `hold` (its boundary codes stay steady, `fill.steady_codes`)

    def __len__(self) -> int:
        return self.indices.shape[0]

    def carry_after(self) -> Carry:
        """What the windows that continue these start from."""
        return carry_after(self.indices, self.mask, self.carry)

    def window(self, i: int, start: int, end: int) -> TokenWindow:
        """Window i as a file record covering frames [start, end) of its video."""
        mask = self.mask[i].cpu()
        return TokenWindow(
            start,
            end,
            float(self.rate[i]),
            float(self.score[i]),
            mask.numpy(),
            self.indices[i].cpu()[mask].numpy().astype(np.uint16),
        )

    @classmethod
    def from_windows(
        cls,
        windows: Sequence[TokenWindow],
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        fill: str = "mask",
        carry: Carry | None = None,
    ) -> "TokenBatch":
        """File records of equal length (+ what they continue from) -> a batch to decode."""
        masks, grids = [], []
        for w in windows:
            mask = torch.from_numpy(np.asarray(w.mask, dtype=bool))
            if int(mask.sum()) != w.indices.size:
                raise ValueError(
                    f"keep-mask has {int(mask.sum())} kept positions but {w.indices.size} indices were given"
                )
            grid = torch.zeros(mask.shape, dtype=torch.long)
            grid[mask] = torch.from_numpy(np.asarray(w.indices, dtype=np.int64))
            masks.append(mask)
            grids.append(grid)
        f64 = dict(dtype=torch.float64, device=device)
        return cls(
            torch.stack(grids).to(device),
            torch.stack(masks).to(device),
            torch.tensor([w.rate for w in windows], **f64),
            torch.tensor([w.score for w in windows], **f64),
            windows[0].end - windows[0].start,
            height,
            width,
            fill=fill,
            carry=None if carry is None else carry.to(device),
        )


def window_batches(
    header: TokenHeader,
    windows: Iterable[TokenWindow],
    device: torch.device | str = "cpu",
    wanted: Callable[[TokenWindow], bool] = lambda w: True,
) -> Iterator[tuple[TokenWindow, TokenBatch]]:
    """A file's windows in order -> (window, a batch of it to decode) for each `wanted` one. Where windows
    continue each other (`header.refresh` > 1), each batch carries what its window continues from,
    worked out from the records since the last fresh window alone (no frame is decoded for it)."""
    carry = None
    for i, w in enumerate(windows):
        if header.refresh == 1 and not wanted(w):
            continue
        batch = TokenBatch.from_windows(
            [w], header.height, header.width, device, header.fill, carry if header.continues(i) else None
        )
        if wanted(w):
            yield w, batch
        if header.refresh > 1 and header.continues(i + 1):
            carry = batch.carry_after()
