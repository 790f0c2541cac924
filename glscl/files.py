"""File helpers the model layer shares: content hashes of weights and checkpoint files."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks so a large video or checkpoint is never in memory whole.
    Remembered per `file_version`: a model id names a 600 MB weight file, and is asked for often."""
    return _sha256(*file_version(path))


def file_version(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, modification time in ns): a key under which what is read from a file can be remembered
    until the file changes. Raises OSError for a file that cannot be read."""
    file = Path(path).resolve()
    stat = file.stat()
    return str(file), stat.st_size, stat.st_mtime_ns


def check_checkpoint_folder(path: str | Path) -> None:
    """Fail with the fix when `path` is no checkpoint folder: a training run's folder points at its `best/`, a
    missing folder says so. Cheap (no torch), so the command line can check before any flow starts."""
    folder = Path(path)
    if (folder / "config.json").is_file():
        return
    best = folder / "best"
    if (best / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is a training run's folder, not a checkpoint: use --checkpoint {best}")
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint {folder}: no such folder (a checkpoint is a folder with config.json)")
    raise FileNotFoundError(f"checkpoint {folder}: no config.json in it (a checkpoint is a folder that glscl wrote)")


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
