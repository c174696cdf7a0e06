"""The 1D layout's tokenizer: a video as windows of coarse-to-fine token sequences (docs/LAYOUT_1D.md).

`InfoTok1D` joins the frozen base of an InfoTok checkpoint (its codes in, its decoder out) and a
`registers.RegisterTokenizer`. A checkpoint folder of this layout holds the register weights and a
config naming the InfoTok checkpoint whose base it was trained on (`base_checkpoint`: a path relative to
the folder, or null for the installed InfoTok-Flex) with that base's tensor hash, so a different base is
refused instead of decoding noise.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from . import checkpoint
from .networks import BASE_KINDS, build_base, config_from_dict
from .registers import RegisterConfig, RegisterTokenizer
from .tokens import TokenHeader, Tokens, TokenWindow, grid_positions
from .video_windows import iter_windows

LAYOUT = "1d"
WINDOW, OVERLAP = 33, 1  # a window is 9 latent frames; neighbours share one frame, blended
LADDER = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]  # prefix lengths a window's PSNR curve is measured at
SHIPPED_1D = checkpoint.SHIPPED_CHECKPOINT.parent / "infotok-1d"


def base_checkpoint(directory: Path, named: str | None) -> Path:
    """The InfoTok checkpoint a 1D checkpoint's base comes from: None is the installed InfoTok-Flex, a
    relative path is taken from the 1D checkpoint's folder."""
    return checkpoint.SHIPPED_CHECKPOINT if named is None else (directory / named).resolve()


def load_base(directory: Path) -> nn.Module:
    """The base tokenizer of an InfoTok checkpoint folder: its config's `base` section and `base.*` tensors."""
    config = checkpoint.read_config(directory)
    try:
        base = build_base(config_from_dict(config["base"], BASE_KINDS))
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{directory}: no usable base section ({exc})") from None
    state = load_file(str(directory / checkpoint.WEIGHTS_FILE))
    missing = base.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("base.")}, strict=False)
    if missing.missing_keys:
        raise checkpoint.CheckpointError(f"{directory}: its weights lack base tensors ({missing.missing_keys[0]}, ...)")
    return base


class InfoTok1D(nn.Module):
    layout = LAYOUT

    def __init__(self, base: nn.Module, registers: RegisterTokenizer, name: str = "infotok-1d", weights_hash: str = ""):
        super().__init__()
        self.base, self.registers, self.name, self.weights_hash = base, registers, name, weights_hash
        self.align = base.spatial_factor * registers.config.region  # frame sides are multiples of this

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        directory = Path(source or SHIPPED_1D)
        config = checkpoint.read_config(directory)
        if config.get("layout") != LAYOUT:
            raise checkpoint.CheckpointError(f'{directory}: not a 1D-layout checkpoint (no "layout": "1d")')
        base_dir = base_checkpoint(directory, config.get("base_checkpoint"))
        base = load_base(base_dir)
        found = checkpoint.tensor_hash(base.state_dict())
        if found != config["base_hash"]:
            raise checkpoint.CheckpointError(
                f"{directory}: trained on a base with hash {config['base_hash']}, but {base_dir} holds {found}"
            )
        registers = RegisterTokenizer(RegisterConfig.from_dict(config["registers"]))
        weights_hash = checkpoint.load_weights(registers, directory)
        model = cls(base, registers.float(), str(config.get("name", directory.name)), weights_hash)
        return model.to(device).eval()

    # ------------------------------------------------------------------ windows
    @torch.no_grad()
    def encode_window(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T <= 33, H, W, 3] -> the window's whole token sequence [N] (coarse to fine). A shorter window
        (a video's last) is padded with its last frame held."""
        if len(frames) < WINDOW:
            frames = np.concatenate([frames, np.repeat(frames[-1:], WINDOW - len(frames), axis=0)])
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].to(self.device)
        codes, _ = self.base.quantize(self.base.encode_features(x))
        return self.registers.encode(codes)[0]

    @torch.no_grad()
    def decode_window(
        self, tokens: torch.Tensor, height: int, width: int, steps: int = 0, seed: int = 0, guidance: float = 1.0
    ):
        """A prefix [k] of a window's sequence -> float frames [1, 3, 33, height, width] in [-1, 1]: the
        regression with steps=0, else the flow decoder in `steps` steps from noise seeded by `seed`, with
        classifier-free `guidance` (`RegisterTokenizer.sample`)."""
        f = self.base.spatial_factor
        tokens = tokens.to(self.device)[None]
        if steps:
            codes = self.registers.sample(tokens, height // f, width // f, steps, seed, guidance)
        else:
            codes = self.registers.decode(tokens, height // f, width // f)
        return self.base.decode_features(self.base.features_from_codes(codes))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokens_per_window(self, height: int, width: int) -> int:
        return self.registers.tokens_for(height // self.base.spatial_factor, width // self.base.spatial_factor)

    # ------------------------------------------------------------------ videos
    def tokenize(
        self,
        frames: np.ndarray,
        tokens: int | None = None,
        rate: float | None = None,
        target_psnr: float | None = None,
        fps: float = 30.0,
        **source,
    ) -> Tokens:
        """uint8 frames [T, H, W, 3] (H, W multiples of `align`) -> `Tokens`. At most one of: `tokens`, every
        window's first `tokens`; `rate`, tokens in all = rate x the grid's positions, shared among the windows
        where they gain most PSNR (`share_tokens`); `target_psnr`, each window the fewest tokens of the
        ladder whose decode reaches it. None of them: every window's whole sequence. `source` may give
        source_width, source_height and resize for the header."""
        _, h, w, _ = frames.shape
        windows = iter_windows(frames, WINDOW, OVERLAP)
        return self.tokenize_windows(windows, h, w, tokens, rate, target_psnr, fps, **source)

    def tokenize_windows(
        self,
        windows: Iterable[tuple[int, int, np.ndarray]],
        height: int,
        width: int,
        tokens: int | None = None,
        rate: float | None = None,
        target_psnr: float | None = None,
        fps: float = 30.0,
        **source,
    ) -> Tokens:
        """`tokenize` on a stream of windows (start, end, frames) of `height` x `width`, as `iter_windows` cuts
        them: one window's frames are held at a time, and each window's sequence (and, to share a rate or
        reach a target, its PSNR curve) until every window is in."""
        h, w = height, width
        header = self.header(1, h, w, fps, **source)  # its frame count once the windows are in
        total, grid = self.window_sizes(h, w, tokens, rate, target_psnr)
        ladder = ladder_for(total)
        spans, sequences, curves = [], [], []
        for start, end, clip in windows:
            spans.append((start, end))
            sequences.append(self.encode_window(clip))
            if rate is not None or target_psnr is not None:
                curves.append(self.psnr_curve(clip, sequences[-1], ladder))
        if not spans:
            raise ValueError("no frames to tokenize")
        header.num_frames = spans[-1][1]
        if rate is not None:
            keeps = share_tokens(ladder, curves, round(rate * grid * len(spans)))
        elif target_psnr is not None:
            keeps = [target_keep(ladder, c, target_psnr) for c in curves]
            short = [max(c) for c in curves if max(c) < target_psnr]
            if short:
                warnings.warn(
                    f"target {target_psnr:g} dB is out of reach for {len(short)} of {len(curves)} windows "
                    f"({max(short):.1f} dB at best with every token); they keep every token"
                )
        else:
            keeps = [tokens or total] * len(spans)
        out = Tokens(header)
        for (start, end), sequence, keep in zip(spans, sequences, keeps):
            kept = sequence[:keep].cpu().numpy().astype(np.uint16)
            out.windows.append(prefix_window(start, end, kept, total, grid))
        header.avg_rate = float(np.mean([win.rate for win in out.windows]))
        header.strategy = "target" if target_psnr is not None else "rate" if rate is not None else "tokens"
        if target_psnr is not None:
            header.target_psnr = float(target_psnr)
        return out

    def window_sizes(
        self, height: int, width: int, tokens: int | None, rate: float | None, target_psnr: float | None
    ) -> tuple[int, int]:
        """(tokens a window of `height` x `width` holds, positions of the grid layout's window there), once the
        frame size and the choice of at most one of tokens, rate and target_psnr are checked against them."""
        h, w = height, width
        if h % self.align or w % self.align:
            raise ValueError(f"the 1D layout takes frames whose sides are multiples of {self.align}, got {w}x{h}")
        if sum(x is not None for x in (tokens, rate, target_psnr)) > 1:
            raise ValueError("give at most one of tokens, rate and target_psnr")
        total, grid = self.tokens_per_window(h, w), grid_positions(self.header(1, h, w, 30.0))
        if tokens is not None and not 1 <= tokens <= total:
            raise ValueError(f"tokens must be in 1..{total} for {w}x{h} windows, got {tokens}")
        if rate is not None and not 0 < rate * grid <= total:
            raise ValueError(f"rate must be in (0, {total / grid:.4f}] (1D windows of {w}x{h} hold {total} tokens)")
        return total, grid

    def dataset_window(self, frames: np.ndarray, start: int, end: int, settings: dict) -> tuple:
        """One window of a dataset run (`dataset.encode_dataset_1d`; frames cropped to the layout's multiple) ->
        (its TokenWindow, its PSNR curve over `ladder_for`, its grid positions): cut to the settings' tokens or
        target here; under a rate the whole sequence with its curve, which `share_video_rows` cuts once the
        video's windows are in (no curve is measured where nothing needs one)."""
        tokens, rate, target = settings["tokens"], settings["rate"], settings["target_psnr"]
        total, grid = self.window_sizes(frames.shape[1], frames.shape[2], tokens, rate, target)
        sequence = self.encode_window(frames)
        ladder = ladder_for(total)
        curve = self.psnr_curve(frames, sequence, ladder) if rate is not None or target is not None else []
        if target is not None:
            keep = target_keep(ladder, curve, target)
        else:
            keep = total if rate is not None else tokens or total  # under a rate the driver cuts it
        kept = sequence[:keep].cpu().numpy().astype(np.uint16)
        return prefix_window(start, end, kept, total, grid), curve, grid

    def psnr_curve(self, frames: np.ndarray, sequence: torch.Tensor, ladder: list[int]) -> list[float]:
        """PSNR of a window's regression decode from each prefix length of `ladder` (its frames only)."""
        from .metrics import psnr
        from .video import from_model

        h, w = frames.shape[1:3]
        return [psnr(frames, from_model(self.decode_window(sequence[:k], h, w))[: len(frames)]) for k in ladder]

    @property
    def config_hash(self) -> str:
        """Identifies the register network's architecture in token files and shard manifests."""
        config = json.dumps(self.registers.config.to_dict(), sort_keys=True)
        return hashlib.sha256(config.encode()).hexdigest()[:16]

    def header(self, num_frames: int, height: int, width: int, fps: float, **source) -> TokenHeader:
        c = self.registers.config
        return TokenHeader(
            model=self.name,
            model_hash=self.weights_hash,
            config_hash=self.config_hash,
            levels=list(c.levels),
            temporal_factor=self.base.temporal_factor,
            spatial_factor=self.base.spatial_factor,
            width=width,
            height=height,
            source_width=source.get("source_width", width),
            source_height=source.get("source_height", height),
            resize=source.get("resize"),
            fps=float(fps),
            num_frames=num_frames,
            window=WINDOW,
            overlap=OVERLAP,
            strategy="tokens",
            selection="prefix",
            avg_rate=0.0,
            score_mean=0.0,
            layout=LAYOUT,
            registers=c.registers,
            region=c.region,
        )

    def detokenize(
        self,
        tokens: Tokens,
        steps: int = 0,
        seed: int = 0,
        start: int = 0,
        stop: int | None = None,
        guidance: float = 1.0,
    ) -> np.ndarray:
        """`Tokens` of this layout -> uint8 frames [T, H, W, 3] (frames [start, stop) of the video, decoded
        from the windows that hold them alone; `steps`, `seed`, `guidance`: `decode_window`'s)."""
        from .pipeline import segment_windows
        from .video import WindowBlender, from_model

        h = tokens.header
        if h.layout != LAYOUT:
            raise ValueError(f"these tokens are of the {h.layout!r} layout; decode them with InfoTok")
        windows = list(segment_windows(tokens.windows, start, stop))
        if not windows:
            raise ValueError(f"no frame of [{start}, {stop}) in a video of {h.num_frames} frames")
        first = windows[0].start
        blender, out = WindowBlender(first), []
        for i, window in enumerate(windows):
            video = self.decode_window(
                torch.from_numpy(window.indices.astype(np.int64)), h.height, h.width, steps, seed, guidance
            )
            frames = from_model(video)[: window.end - window.start]
            following = windows[i + 1].start if i + 1 < len(windows) else None
            out.extend(blender.add(window.start, frames, following))
        return np.stack(out)[start - first : None if stop is None else stop - first]


def ladder_for(total: int) -> list[int]:
    """The prefix lengths a window of `total` tokens is measured at (`LADDER` below it, then all of it)."""
    return [k for k in LADDER if k < total] + [total]


def target_keep(ladder: list[int], curve: list[float], target_psnr: float) -> int:
    """The fewest tokens of the ladder whose decode reaches `target_psnr` (all of them where none does)."""
    return next((k for k, p in zip(ladder, curve) if p >= target_psnr), ladder[-1])


def share_tokens(ladder: list[int], curves: list[list[float]], budget: int) -> list[int]:
    """Tokens per window, `budget` in all (at least 1 each): every window starts at its first ladder point,
    then the tokens go, a segment at a time, to the window whose next segment on the upper concave hull of
    its PSNR curve gains most per token; the last segment is cut to spend the budget exactly (any prefix
    of a 1D sequence decodes, so any count is a valid token set)."""
    n = len(curves)
    budget = max(budget, n)
    hulls = []
    for curve in curves:
        hull = [0]
        for i in range(1, len(ladder)):
            while len(hull) >= 2 and (
                (curve[i] - curve[hull[-2]]) * (ladder[hull[-1]] - ladder[hull[-2]])
                >= (curve[hull[-1]] - curve[hull[-2]]) * (ladder[i] - ladder[hull[-2]])
            ):
                hull.pop()
            hull.append(i)
        hulls.append(hull)
    keeps = [min(ladder[0], budget // n)] * n
    position = [0] * n
    left = budget - sum(keeps)
    while left > 0:
        slopes = [
            (curves[w][hulls[w][position[w] + 1]] - curves[w][hulls[w][position[w]]])
            / (ladder[hulls[w][position[w] + 1]] - ladder[hulls[w][position[w]]])
            if position[w] + 1 < len(hulls[w])
            else -np.inf
            for w in range(n)
        ]
        w = int(np.argmax(slopes))
        if slopes[w] == -np.inf:
            break
        step = min(left, ladder[hulls[w][position[w] + 1]] - keeps[w])
        keeps[w] += step
        left -= step
        position[w] += 1
    return keeps


def prefix_window(start: int, end: int, sequence: np.ndarray, total: int, grid_tokens: int) -> TokenWindow:
    """A 1D window record: the mask is the kept prefix of the window's `total` token positions."""
    mask = np.zeros((1, 1, total), dtype=bool)
    mask[..., : sequence.size] = True
    return TokenWindow(start, end, sequence.size / grid_tokens, 0.0, mask, sequence)


def encode_file(model: InfoTok1D, src: Path, dst: Path, overwrite: bool = False, **options) -> Tokens:
    """A video file -> a 1D `.itok` file (`options` as `tokenize_file` takes them)."""
    out = tokenize_file(model, src, **options)
    out.save(dst, overwrite=overwrite)
    return out


def centre_crop(height: int, width: int, align: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred crop whose sides are multiples of `align`."""
    h, w = height // align * align, width // align * align
    if not h or not w:
        raise ValueError(f"frames of {width}x{height} are smaller than the 1D layout's {align}")
    return (height - h) // 2, (width - w) // 2, h, w


def source_stream(
    model: InfoTok1D,
    src: Path,
    size: int | None = None,
    max_size: int | None = 256,
    start: int = 0,
    max_frames: int | None = None,
) -> tuple[Iterator[np.ndarray], int, int, dict]:
    """A video file's frames as the 1D layout tokenizes them, streamed: (frames, their height and width, what
    the header records of the source). `size` resizes the short side to it; else a short side over
    `max_size` is shrunk to it, as `infotok encode` does for grid files; frames are centre-cropped to
    multiples of the layout's `align`."""
    from .pipeline import video_source
    from .spec import Windowing

    stream, info, resize = video_source(src, Windowing(WINDOW, OVERLAP, size, max_size, start, max_frames))
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{src}: no frames from frame {start}")
    top, left, h, w = centre_crop(first.shape[0], first.shape[1], model.align)
    frames = (f[top : top + h, left : left + w] for f in itertools.chain([first], stream))
    source = {"fps": info.fps, "source_width": info.width, "source_height": info.height}
    source["resize"] = resize if resize and resize != min(info.width, info.height) else None
    return frames, h, w, source


def tokenize_file(
    model: InfoTok1D,
    src: Path,
    tokens: int | None = None,
    rate: float | None = None,
    target_psnr: float | None = None,
    **source,
) -> Tokens:
    """A video file -> its 1D `Tokens`, one window in memory at a time; `source` (size, max_size, start,
    max_frames) as `source_stream` takes it."""
    frames, h, w, fields = source_stream(model, src, **source)
    return model.tokenize_windows(iter_windows(frames, WINDOW, OVERLAP), h, w, tokens, rate, target_psnr, **fields)


def reconstruct_file(
    model: InfoTok1D,
    src: Path,
    dst: Path,
    steps: int = 0,
    seed: int = 0,
    lossless: bool = False,
    tokens: int | None = None,
    rate: float | None = None,
    target_psnr: float | None = None,
    guidance: float = 1.0,
    **source,
) -> tuple[Tokens, float]:
    """A video file -> 1D tokens -> a video (regression decoder, or the flow decoder in `steps` steps) and
    its PSNR against the frames that were tokenized (read again as a stream)."""
    from .metrics import PSNRMeter
    from .video import write_video

    out = tokenize_file(model, src, tokens, rate, target_psnr, **source)
    decoded = model.detokenize(out, steps, seed, guidance=guidance)
    write_video(dst, decoded, fps=out.header.fps, lossless=lossless)
    meter = PSNRMeter()
    for reference, frame in zip(source_stream(model, src, **source)[0], decoded):
        meter.add(reference, frame)
    return out, meter.value


def decode_file(
    model: InfoTok1D,
    src: Path,
    dst: Path,
    tokens: int | None = None,
    steps: int = 0,
    seed: int = 0,
    lossless: bool = False,
    start: int = 0,
    max_frames: int | None = None,
    guidance: float = 1.0,
) -> Tokens:
    """A 1D `.itok` file -> a video, from each window's first `tokens` (default: all it holds); `start` /
    `max_frames` decode a segment, from the windows that hold it alone."""
    from .pipeline import segment_stop
    from .tokens import TokenFormatError
    from .video import write_video

    stored = Tokens.load(src)
    if stored.header.model_hash != model.weights_hash:
        raise TokenFormatError(
            f"{src}: written by model {stored.header.model!r} ({stored.header.model_hash}), not by the 1D checkpoint "
            f"loaded ({model.name}, {model.weights_hash}); pass that model's --checkpoint"
        )
    cut = stored.truncate(tokens) if tokens else stored
    stop = segment_stop(stored.header.num_frames, start, max_frames)
    write_video(
        dst, model.detokenize(cut, steps, seed, start, stop, guidance), fps=stored.header.fps, lossless=lossless
    )
    return cut


def shard_identity(model: InfoTok1D) -> dict:
    """What a shard folder's manifest records of a 1D model (`shards.model_identity`'s fields, and the layout)."""
    c = model.registers.config
    return {
        "name": model.name,
        "model_hash": model.weights_hash,
        "weights_hash": model.weights_hash,
        "config_hash": model.config_hash,
        "levels": list(c.levels),
        "temporal_factor": model.base.temporal_factor,
        "spatial_factor": model.base.spatial_factor,
        "score_mean": 0.0,
        "config": {"layout": LAYOUT, "registers": c.to_dict()},
        "layout": LAYOUT,
        "registers": c.registers,
        "region": c.region,
    }


def dataset_settings(
    tokens: int | None = None,
    rate: float | None = None,
    target_psnr: float | None = None,
    size: int | None = None,
    max_size: int | None = 256,
    start: int = 0,
    max_frames: int | None = None,
) -> dict:
    """What a 1D dataset run (`dataset.encode_dataset_1d`) records in its manifest; a resumed run must give the
    same."""
    if sum(x is not None for x in (tokens, rate, target_psnr)) > 1:
        raise ValueError("give at most one of tokens, rate and target_psnr")
    if tokens is not None and not (isinstance(tokens, int) and tokens >= 1):
        raise ValueError(f"tokens must be a positive integer, got {tokens!r}")
    if rate is not None and not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    return {
        "layout": LAYOUT,
        "tokens": tokens,
        "rate": rate,
        "target_psnr": target_psnr,
        "size": size,
        "max_size": max_size,
        "window": WINDOW,
        "overlap": OVERLAP,
        "start": start,
        "max_frames": max_frames,
        "strategy": "target" if target_psnr is not None else "rate" if rate is not None else "tokens",
        "selection": "prefix",
    }


def share_video_rows(table, rate: float):
    """A video's shard rows of whole sequences, with each window's PSNR curve and grid positions (`_curve`,
    `_grid`: a 1D dataset run under a rate) -> the rows `tokenize(rate=...)` would give: rate x the grid's
    positions shared among the windows (`share_tokens`)."""
    from .shard_format import VIDEO_FIELDS, records_table, table_windows, window_record

    table = table.sort_by([("window", "ascending")])
    windows, curves = table_windows(table), table.column("_curve").to_pylist()
    grid, total = int(table.column("_grid")[0].as_py()), windows[0].mask.size
    keeps = share_tokens(ladder_for(total), curves, round(rate * grid * len(windows)))
    video = {k: table.column(k)[0].as_py() for k in VIDEO_FIELDS}
    return records_table(
        [
            window_record(prefix_window(w.start, w.end, w.indices[:keep], total, grid), i, video)
            for i, (w, keep) in enumerate(zip(windows, keeps))
        ]
    )
