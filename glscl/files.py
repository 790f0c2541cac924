"""File helpers the model layer shares: content hashes of weights and checkpoint files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks so a large video or checkpoint is never in memory whole."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
