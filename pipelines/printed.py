"""Command lines that glscl prints for the user to run next. They must work pasted as printed into a fresh shell in
any folder: a new user's shell has no virtual environment active, so `glscl` alone would not be found there."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def program() -> str:
    """How a fresh shell runs this installation of glscl: `glscl` when that name on PATH is this installation's own
    script, else the script's absolute path (`/…/.venv/bin/glscl`), else this Python running the module."""
    script = Path(sys.executable).parent / "glscl"
    found = shutil.which("glscl")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "glscl"
    if script.exists():
        return str(script.absolute())
    return f"{shlex.quote(sys.executable)} -m pipelines.cli"


def command_line(*args: str) -> str:
    """`glscl ARGS` as one shell line, quoted, with the program as `program` finds it."""
    return f"{program()} {shlex.join(args)}"


def absolute(path: str) -> str:
    """A local path made absolute, so that a printed line works from any folder; a URI (s3://...) unchanged."""
    return path if "://" in path else str(Path(path).absolute())
