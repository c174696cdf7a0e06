"""Files: which inputs a command was given, where an output may be written, and temporary files
beside it for atomic writes.

Shared by the token writer, the video writer and every safetensors writer, so they refuse the same paths
the same way and their results get the same permissions; free of torch and PyAV, so `infotok info` starts quickly.
"""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path
from typing import Iterable


def output_path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot name one output file (a folder, a trailing separator, a file as a folder), or None.

    Checked before any work so `-o newdir/` fails at once instead of after encoding (or writing a file
    called `newdir`). Shared by `tokens.check_token_output` and `video.check_video_output`.
    """
    text = os.fspath(path)
    if text.endswith(tuple(s for s in ("/", os.sep, os.altsep) if s)):
        return "ends with a separator, so it names a folder; give a file name"
    p = Path(text)
    if p.is_dir():
        return "is an existing folder; give a file name"
    for parent in p.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a folder"
    return None


def temp_beside(path: Path, folder: bool = False) -> Path:
    """Create an empty, unique temporary file (or `folder`) next to `path` for an atomic write (rename on
    completion).

    Its mode is what a plain open() or mkdir() gives (0666 / 0777 less the umask), so the renamed result is
    too; `tempfile.mkstemp` / `mkdtemp` would make it 0600 / 0700. Used by `tokens.TokenWriter`,
    `video.write_video` and `convert` (a folder).
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: Path, write, sync: bool = True) -> None:
    """Write `path` through `write(file)` into a temporary file beside it, flushed to disk, then renamed
    into place: a reader (or a run killed midway) only ever sees the old file or the whole new one."""
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically, readable as any file the user writes (safetensors' own
    `save_file` leaves it 0600, which hides a checkpoint from the rest of a shared machine)."""
    from safetensors.torch import save

    atomic_write(Path(path), lambda f: f.write(save(tensors, metadata=metadata)))


VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".flv"}


def list_videos(inputs: Iterable[str | os.PathLike], suffixes: Iterable[str] = VIDEO_SUFFIXES) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted list; a folder gives its files (not
    recursively) with one of `suffixes` (the video ones unless told, e.g. {".itok"} for token files).
    Files and glob matches pass through whatever their suffix."""
    wanted = {"." + s.lower().lstrip(".") for s in suffixes}
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in wanted and q.is_file())
        elif any(ch in str(item) for ch in "*?["):
            found += sorted(Path(q) for q in glob.glob(str(item)) if Path(q).is_file())
        else:
            found.append(p)
    return found
