"""Where the tables live, as a config the command line and every flow share, and where local databases are found on
disk (no LanceDB import needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StoreConfig:
    """Where the tables live: any LanceDB URI (local folder, s3://...) and its object-store options."""

    uri: str = "./data/lancedb"
    storage_options: dict[str, str] = field(default_factory=dict)


_NOT_DATA = frozenset({"node_modules", "__pycache__", "site-packages", "venv"})  # never holds a user's database


def is_local(uri: str) -> bool:
    """Whether the database is a folder on this machine (not s3://, gs://, az://, memory://...)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    """The folder of a local database URI."""
    return Path(uri.removeprefix("file://"))


def missing_locally(uri: str) -> bool:
    """Whether the database is a local folder that does not exist: a reader must not connect (LanceDB would create
    it) but say so. A database elsewhere is taken to exist."""
    return is_local(uri) and not local_path(uri).is_dir()


def holds_table(database: Path, name: str) -> bool:
    """Whether the local LanceDB folder has a table called `name` (its `name.lance` folder), without opening it."""
    return (database / f"{name}.lance").is_dir()


def databases_near(places: list[Path], depth: int = 3) -> list[Path]:
    """Local LanceDB folders (folders holding a `*.lance` table folder) at or below each place, at most `depth`
    levels down, skipping hidden folders and virtual environments: where a user's databases are likely to be, for
    an error that must say which `--db` to give."""
    found: set[Path] = set()
    for place in places:
        level = [place] if place.is_dir() else []
        for _ in range(depth + 1):
            below = []
            for folder in level:
                try:
                    children = [c for c in folder.iterdir() if c.is_dir()]
                except OSError:
                    continue
                if any(c.suffix == ".lance" for c in children):
                    found.add(folder.resolve())
                    continue
                below += [c for c in children if not c.name.startswith(".") and c.name not in _NOT_DATA]
            level = below
    return sorted(found)
