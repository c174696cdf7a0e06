"""What a dataset run is given and what it reports: its sources, its settings (checked; a resumed run
must repeat them), its progress and its result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .extras import require
from .spec import TokenizeSpec, Windowing, with_keywords

LIST_SUFFIXES = {".txt", ".lst", ".list"}  # a SRC with one of these is a text file of paths
# what `rate` means: each window on its own at the checkpoint's calibrated threshold (or slope), or
# exactly `rate` over all the inputs of the run (`budget_rates`)
BUDGETS = ("calibrated", "run")
# what the allocation adds to the settings the manifest records: the shared drift threshold (hold)
# or slope (mask) that it found
SHARED_KEYS = {"hold": "shared_threshold", "mask": "shared_slope"}


def require_scale() -> None:
    """Raise extras.MissingExtra (one line naming `infotok[scale]`) unless Ray Data and pyarrow import."""
    for module in ("pyarrow", "ray", "ray.data"):
        require(module, "`infotok encode-dataset`")


def list_sources(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Folders, glob patterns, video files, and text files of paths (.txt/.lst/.list, one per line,
    blank lines and lines starting with # skipped, relative ones taken from the list's folder) ->
    absolute video paths, each once, in order."""
    from .video import list_videos

    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            lines = [line.strip() for line in p.read_text().splitlines()]
            entries = [
                line if os.path.isabs(line) else str(p.parent / line)
                for line in lines
                if line and not line.startswith("#")
            ]
            found += list_videos(entries)
        else:
            found += list_videos([item])
    return list(dict.fromkeys(Path(os.path.abspath(f)) for f in found))


def tokenize_settings(
    spec: TokenizeSpec = TokenizeSpec(), windowing: Windowing = Windowing(), budget: str = "calibrated", **keywords
) -> dict:
    """The settings of a dataset run (`spec` and `windowing`, whose fields `keywords` may also give), as the
    manifest records them; a resumed run must give the same. `budget` is recorded only when it is "run" and
    `key_density` only where given (`dataset` records the checkpoint's where it is below 1), so that folders
    begun before they existed resume."""
    spec, w = with_keywords(spec, windowing, keywords)
    if spec.rates is not None or spec.target_psnr is not None or w.fps is not None:
        raise ValueError("a dataset run takes a rate (per-window rates, a target PSNR and fps are not offered)")
    if (spec.refresh or 1) > 1:
        raise ValueError("a dataset's windows start afresh, each a row that decodes alone (refresh 1)")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    return (
        {
            "rate": spec.rate,
            "strategy": spec.strategy,
            "selection": spec.selection,  # None: the checkpoint's default
            "fill": spec.fill,  # likewise
            "window": w.window,
            "overlap": w.overlap,
            "size": w.size,
            "max_size": w.max_size,
            "seed": spec.seed,
            "start": w.start,
            "max_frames": w.max_frames,
        }
        | ({"budget": budget} if budget == "run" else {})
        | ({"key_density": spec.key_density} if spec.key_density is not None else {})
    )


def _resume_view(settings: dict) -> dict:
    """The settings a resumed run must repeat before any pass: all but the allocation's result, the
    budget named even where it is not recorded (calibrated)."""
    return {k: v for k, v in settings.items() if k not in SHARED_KEYS.values()} | {
        "budget": settings.get("budget", "calibrated")
    }


def _check_resumable(root: Path, settings: dict) -> None:
    """Refuse a folder begun with other settings before any pass (ShardWriter refuses it too, but under
    `--budget run` only once the first pass has given the allocation), naming the budget either way."""
    from .shards import MANIFEST, ShardError, read_manifest

    if not (root / MANIFEST).is_file():
        return
    theirs, ours = _resume_view(read_manifest(root).get("settings", {})), _resume_view(settings)
    if theirs != ours:
        diff = ", ".join(
            f"{k} {theirs.get(k)!r} (now {ours.get(k)!r})"
            for k in dict.fromkeys([*ours, *theirs])
            if theirs.get(k) != ours.get(k)
        )
        raise ShardError(
            f"{root} was begun with other settings {diff}; use the same ones to resume, another output "
            "folder, or --overwrite"
        )


@dataclass
class DatasetProgress:
    """Where a run stands (handed to `progress` after each batch of windows the driver receives)."""

    videos: int  # videos to tokenize in this run (inputs less those complete before it)
    done: int = 0
    failed: int = 0
    windows: int = 0
    frames: int = 0  # frames of the tokenized videos (overlaps counted once)
    elapsed: float = 0.0
    # "tokenize", or "measure": the first pass of --budget run (videos: those without stored statistics;
    # frames stay 0)
    stage: str = "tokenize"

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class DatasetRun:
    """What `encode_dataset` did."""

    out: Path
    inputs: int
    skipped: int  # complete before this run
    completed: int  # completed by this run
    failures: list[dict]
    windows: int
    frames: int
    tokens_kept: int
    tokens_total: int
    shards: list[dict]  # written by this run
    elapsed: float  # seconds, end to end (Ray start and model loads included)
    pipeline_s: float = 0.0  # seconds from the dataset's execution start to the last shard
    first_rows_s: float = 0.0  # seconds from the execution start to the first tokens received
    ready_s: float = 0.0  # seconds from the execution start until the first model worker had loaded its model
    # per worker process id: peak resident bytes ("tokenizer", "decoder"), peak GPU bytes ("gpu"), and
    # the model workers' seconds spent in their calls ("busy")
    workers: dict = field(default_factory=dict)
    rate: float = 0.0  # the rate asked for
    budget: str = "calibrated"  # what it meant (BUDGETS)
    measure_s: float = 0.0  # seconds of the first pass of --budget run (0 where every video's statistics were stored)
    # kept and total tokens of every complete video in `out`, this run's and earlier ones' (the manifest's counts)
    folder_kept: int = 0
    folder_tokens: int = 0

    @property
    def shard_bytes(self) -> int:
        return sum(s["bytes"] for s in self.shards)

    @property
    def realized_rate(self) -> float:
        """The rate the folder's complete videos have: under --budget run, `rate` once every input is
        done (as close as [1/16, 1] per window allows)."""
        return self.folder_kept / self.folder_tokens if self.folder_tokens else 0.0
