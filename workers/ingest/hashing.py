"""Content hashes: a video's id is the hash of its bytes, so a renamed or moved file is the same video."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glscl.files import file_sha256


def content_id(path: str | Path) -> str:
    """The first 32 hex digits (128 bits) of the SHA-256 of the file's bytes."""
    return file_sha256(path)[:32]


def content_ids(paths: list[str], threads: int = 4) -> list[str | None]:
    """Hash many files in parallel threads (hashlib releases the GIL); None for a file that cannot be read."""

    def safe(path: str) -> str | None:
        try:
            return content_id(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(safe, paths))


def text_id(*parts: object) -> str:
    """A stable 32-hex id for a caption, from the fields that define it."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]
