"""Cutting a stream of frames into overlapping windows, and blending decoded windows back into frames."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .geometry import check_windowing


def blend_weights(length: int, overlap_before: int, overlap_after: int) -> np.ndarray:
    """Per-frame weights of one window: linear ramps over the overlaps, 1 elsewhere.

    Two neighbouring windows' ramps sum to 1 over their shared frames.
    """
    w = np.ones(length, dtype=np.float32)
    if overlap_before:
        w[:overlap_before] = np.arange(1, overlap_before + 1, dtype=np.float32) / (overlap_before + 1)
    if overlap_after:
        w[length - overlap_after :] = np.arange(overlap_after, 0, -1, dtype=np.float32) / (overlap_after + 1)
    return w


def iter_windows(
    frames: Iterable[np.ndarray], window: int, overlap: int, mark_last: bool = False
) -> Iterator[tuple[int, int, np.ndarray]] | Iterator[tuple[int, int, np.ndarray, bool]]:
    """Stream (start, end, frames[start:end]) with the spans of `geometry.window_spans`, holding one
    window: frames are read straight into the window's array (no list of frames beside a stacked
    copy), and each window is a new array, so a caller may keep the ones it was given. `mark_last` adds
    a fourth item, whether the window is the last (the stream reads one frame ahead, so it knows)."""
    check_windowing(window, overlap)
    step = window - overlap
    it = iter(frames)
    nxt = next(it, None)
    win, n, start, emitted_end = None, 0, 0, 0
    while nxt is not None:
        if win is None:
            win = np.empty((window, *np.shape(nxt)), np.asarray(nxt).dtype)
        win[n] = nxt
        n += 1
        nxt = next(it, None)
        if n == window or nxt is None:
            if start + n > emitted_end:
                yield (start, start + n, win[:n], nxt is None) if mark_last else (start, start + n, win[:n])
                emitted_end = start + n
            if nxt is None:
                return
            fresh = np.empty_like(win)  # the overlap is copied over: no view keeps the old array alive
            fresh[: n - step] = win[step:n]
            win, n, start = fresh, n - step, start + step


class WindowBlender:
    """Blends decoded windows linearly over their overlaps and emits finished frames in order.

    Holds at most one window of frames. `add` gets the start of the next window (None for the last)
    so it knows which frames are final. `first` is the frame the first window added starts at (a
    segment decoded from the middle of a video).
    """

    def __init__(self, first: int = 0):
        self._acc: dict[int, np.ndarray] = {}
        self._next = first
        self._prev_end = first

    def add(self, start: int, frames: np.ndarray, next_start: int | None) -> list[np.ndarray]:
        end = start + len(frames)
        before = max(0, self._prev_end - start)
        after = max(0, end - next_start) if next_start is not None else 0
        weights = blend_weights(end - start, before, after)
        for i, f in enumerate(frames):
            self._acc[start + i] = self._acc.get(start + i, 0) + weights[i] * f.astype(np.float32)
        self._prev_end = end
        done_until = end if next_start is None else next_start
        out = []
        while self._next < done_until:
            out.append(np.clip(np.rint(self._acc.pop(self._next)), 0, 255).astype(np.uint8))
            self._next += 1
        return out
