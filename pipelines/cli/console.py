"""Quiet by default, loud on request: what a `glscl` command prints on the terminal while it runs.

Why: a user reads the command's progress and its warnings, not Ray's and Prefect's internal lines or other
libraries' deprecation warnings. By default the console shows progress bars, the project's own warnings and
anyone's errors; Ray does not forward its workers' lines, and what native code writes to the process's standard
error (the C++ core worker of Ray's driver logs its errors there) goes to the log file or nowhere. `-v` brings all
of it back; `--log-file PATH` receives every record from INFO up, and those native lines, either way. Only the
command line enters `console_policy`: code called from Python, tests included, keeps every library's own output.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TextIO

from rich.console import Console

from workers.terminal import Terminal, configured, console_handlers

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CurrentStderr(io.TextIOBase):
    """A text stream that writes to whatever sys.stderr is at the time: the terminal's duplicate while native
    standard error is sent away, a progress display's proxy (which prints above the bars) while one is live."""

    @property
    def encoding(self) -> str:
        """The encoding of the current standard error."""
        return sys.stderr.encoding

    def write(self, text: str) -> int:
        """Write to the current standard error."""
        return sys.stderr.write(text)

    def flush(self) -> None:
        """Flush the current standard error."""
        sys.stderr.flush()

    def isatty(self) -> bool:
        """Whether the current standard error is a terminal."""
        return sys.stderr.isatty()


CURRENT_STDERR = _CurrentStderr()


def _retarget(old: TextIO, new: TextIO) -> None:
    """Point the console handlers that write to `old` at `new`, also those that print through a rich Console
    (Prefect's) that holds the stream."""
    for handler in console_handlers():
        if handler.stream is old:
            handler.setStream(new)
        console = getattr(handler, "console", None)
        if isinstance(console, Console) and console.file is old:
            console.file = new


def _is_descriptor_two(stream: TextIO) -> bool:
    """Whether `stream` writes to file descriptor 2 (the one native code writes to)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest's capsys) has no descriptor
        return False


@contextmanager
def native_stderr_to(path: str | None) -> Iterator[None]:
    """While the block runs, writes to file descriptor 2 from native code go to `path` (appended; None: nowhere)
    while sys.stderr writes to a duplicate of the terminal's descriptor. Does nothing unless sys.stderr is
    descriptor 2 (under pytest's capture it is not)."""
    original = sys.stderr
    if not _is_descriptor_two(original):
        yield
        return
    original.flush()
    terminal = open(os.dup(2), "w", buffering=1, encoding=original.encoding, errors=original.errors)  # noqa: SIM115
    sink = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(sink, 2)
    os.close(sink)
    sys.stderr = terminal
    try:
        yield
    finally:
        terminal.flush()
        _retarget(terminal, original)  # handlers configured during the block took sys.stderr as it was then
        sys.stderr = original
        os.dup2(terminal.fileno(), 2)
        terminal.close()


@contextmanager
def _warnings_to_logging() -> Iterator[None]:
    """Warnings become records of the `py.warnings` logger (each once per place), so the console policy and the
    log file treat them like any log line."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)


class _LogFile(logging.FileHandler):
    """The log file: every record from INFO up, in one format (`ray.init` sets its own on its loggers' handlers)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.setLevel(logging.INFO)
        super().setFormatter(logging.Formatter(LOG_FORMAT))

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """Keep the log file's own format."""


@contextmanager
def _root_console() -> Iterator[None]:
    """A console handler on the root logger while the command runs, when it has none: a library's module-level
    `logging.warning(...)` would otherwise add one itself (logging.basicConfig) after the quiet filter was applied,
    and print past it (open_clip announces random weights that way)."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    console = logging.StreamHandler(CURRENT_STDERR)
    console.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    root.addHandler(console)
    try:
        yield
    finally:
        root.removeHandler(console)


@contextmanager
def console_policy(verbose: bool, bars: bool, log_file: str | None = None) -> Iterator[None]:
    """The terminal policy of one command: quiet unless `verbose`, progress bars on standard error when `bars`,
    every record from INFO up (and, when quiet, native standard error) appended to `log_file` when given."""
    if "prefect" in sys.modules:
        # Prefect adds its console handler when `prefect` is first imported in full: add it now to adjust it.
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()
    original = sys.stderr
    _retarget(original, CURRENT_STDERR)
    handler = _LogFile(log_file) if log_file else None
    with ExitStack() as stack:
        stack.callback(_retarget, CURRENT_STDERR, original)
        if handler is not None:
            stack.callback(handler.close)
        if not verbose:
            stack.enter_context(native_stderr_to(log_file))
        stack.enter_context(_warnings_to_logging())
        stack.enter_context(_root_console())
        stack.enter_context(
            configured(Terminal(quiet=not verbose, log_file=handler, bars=Console(stderr=True) if bars else None))
        )
        yield
