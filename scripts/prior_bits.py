"""Where a prior-coded file's bits go: the keep-mask against the kept codes, and each of a code's six FSQ digits, at
each asked rate; what a better prior would have to win (issue #34's size goal, docs/PRIOR.md).

`python scripts/prior_bits.py [VIDEOS [PRIOR]]` (default: the evaluation clips and the shipped prior folder)
tokenizes each clip's first 97 frames (short side 256, centre crop 256x256, the defaults, windows as `infotok
encode --entropy prior` writes them) at asked 0.125, 0.25, 0.5 and 1, codes them with the prior, and prints per
rate the ideal code length (-log2 p, summed over every symbol the coder codes) of the masks (a window's first
latent frame apart) and of each digit, per kept token, and how many bytes of the prior-coded files are something
else (the file's header, the window records, the range coder's words). It also says how many kept tokens have no
code held at their position (a fresh window's first latent frame: only the frame itself to go by), and of the
others, how many of their six digits differ from the held code's; and the bits of a kept code by its phase (the
prior's coding order, `prior.CodingOrder`), with and without a held code.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from infotok.entropy import PriorCoder, load_prior
from infotok.files import list_videos
from infotok.model import InfoTok
from infotok.prior import code_digits, video_window_states
from infotok.video import read_video, resize_and_crop

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
RATES = (0.125, 0.25, 0.5, 1.0)


def code_passes(order, mask: torch.Tensor, helds: torch.Tensor) -> list[tuple[int, np.ndarray]]:
    """The code passes the coder makes over a window, in order: (phase, whether each coded code has no held code at
    its position)."""
    passes = []
    for m, held in zip(mask, helds):
        phase = order.phase_map(*m.shape)
        for p in range(order.phases):
            here = m & (phase == p)
            if here.any():  # the coder skips a phase that keeps no code
                passes.append((p, (held[here] < 0).numpy()))
    return passes


def count_bits(coder: PriorCoder, w, passes: list, bits: dict, by_phase: dict) -> None:
    """Walk window `w` as the encoder does (`coder` continues the video's earlier windows) and add up -log2 p of
    each true symbol, by kind; and each kept code's bits in `by_phase[(phase, no held code)]` = [bits, codes], the
    code passes as `code_passes` lists them."""
    digits, order = len(coder.prior.config.levels), coder.prior.config.order
    mask_passes = sum(order.is_mask(s) for s in range(order.passes))  # mask groups a latent frame (when coded)
    code_calls = mask_calls = 0

    def cost(probs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        nonlocal code_calls, mask_calls
        p = -np.log2(probs[np.arange(len(symbols)), np.asarray(symbols, dtype=np.int64)])
        if probs.shape[1] == 2:  # a window's first latent frame (a fresh one's key frame) apart from the rest
            kind = "mask, first latent frame" if mask_calls < mask_passes else "mask, later frames"
            mask_calls += 1
        else:  # each code pass asks for its codes' digits 0 to 5 in turn
            kind = f"digit {code_calls % digits}"
            phase, fresh = passes[code_calls // digits]
            for no_held in (False, True):
                entry = by_phase.setdefault((phase, no_held), [0.0, 0])
                entry[0] += float(p[fresh == no_held].sum())
                entry[1] += int((fresh == no_held).sum()) if code_calls % digits == 0 else 0
            code_calls += 1
        bits[kind] = bits.get(kind, 0.0) + float(p.sum())
        return symbols

    coder.walk_known(w.mask, w.indices, cost)
    if code_calls != len(passes) * digits:
        raise RuntimeError("the coder's passes differ from code_passes': the by-phase figures would be wrong")


def held_changes(mask: torch.Tensor, codes: torch.Tensor, helds: torch.Tensor, levels: list[int]) -> np.ndarray:
    """A window's kept tokens by how many digits differ from the code held at their position: [no held code, 0, 1,
    ..., 6]."""
    before, now = helds[mask], codes[mask]
    moved = code_digits(now[before >= 0], levels) != code_digits(before[before >= 0], levels)
    return np.concatenate([[int((before < 0).sum())], np.bincount(moved.sum(1).numpy(), minlength=len(levels) + 1)])


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else VIDEOS
    model, prior = InfoTok.from_pretrained(), load_prior(argv[1] if len(argv) > 1 else None)
    clips = [resize_and_crop(read_video(p, max_frames=97)[0], 256) for p in list_videos([folder])]
    for rate in RATES:
        bits: dict[str, float] = {}
        by_phase: dict[tuple[int, bool], list] = {}
        kept = file_bytes = windows = 0
        changes = np.zeros(len(prior.config.levels) + 2, np.int64)
        for frames in clips:
            tokens = model.tokenize(frames, rate=rate, refresh=None if prior.config.continuing else 1)
            coder = PriorCoder.for_file(prior, tokens.header)
            for w, mask, codes, helds, _ in video_window_states(tokens.windows):
                count_bits(coder, w, code_passes(prior.config.order, mask, helds), bits, by_phase)
                changes += held_changes(mask, codes, helds, prior.config.levels)
                kept += w.kept
            windows += len(tokens.windows)
            with tempfile.TemporaryDirectory() as tmp:
                file_bytes += tokens.save(Path(tmp) / "clip.itok", prior=prior).stat().st_size
        ideal = sum(bits.values())
        parts = ", ".join(f"{k} {v / kept:.2f}" for k, v in sorted(bits.items(), key=lambda kv: "mask" not in kv[0]))
        print(
            f"asked {rate}: {kept} kept tokens in {windows} windows of {len(clips)} files; -log2 p: {ideal / kept:.2f} "
            f"bits a kept token ({parts}); the files: {file_bytes * 8 / kept:.2f} bits a kept token, of which "
            f"{(file_bytes - ideal / 8) / len(clips):.0f} bytes a file are not -log2 p (header, window records, coder)"
        )
        moved = ", ".join(f"{j}: {n / max(changes[1:].sum(), 1):.2f}" for j, n in enumerate(changes[1:]))
        print(f"  kept tokens with no held code: {changes[0] / kept:.2f}; the others by digits changed: {moved}")
        for no_held in (True, False):
            phases = ", ".join(
                f"{p}: {b / n:.2f} ({n})" for (p, h), (b, n) in sorted(by_phase.items()) if h == no_held and n
            )
            print(f"  bits a kept code {'with no' if no_held else 'with a'} held code, by phase (codes): {phases}")


if __name__ == "__main__":
    main(sys.argv[1:])
