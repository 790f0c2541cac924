"""One line per failure: how the `glscl` command line turns an error into an exit code and one line on standard
error that names the problem and what to do, and where the traceback goes instead (a log file, or the terminal with
`--verbose`).

Why: a user reads the last line of a failed command, and a script reads its exit code. A traceback belongs to whoever
debugs it: Prefect logs the exception of a failed flow or task with its traceback, so while a command runs the
console log handlers print those records without it (Prefect's API log handler, and so the UI, keep it).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipelines.errors import is_bad_input
from pipelines.local_server import ServerError
from workers.terminal import console_handlers

EXIT_ERROR = 1  # unexpected: a bug; the traceback is in a log file
EXIT_BAD_INPUT = 2  # the input or an option is wrong: a missing file, a malformed manifest, an unknown split...
EXIT_ENVIRONMENT = 4  # the environment: the Prefect API or local server, the Ray cluster, the file system
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


@dataclass(frozen=True)
class Failure:
    """What a command prints and returns for an error."""

    exit_code: int
    message: str
    keep_traceback: bool  # write the traceback to a log file and name it in the line


def classify(error: BaseException) -> Failure:
    """The exit code and message of an error raised by a command."""
    if isinstance(error, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "interrupted; committed work is kept, run the command again to finish", False)
    if is_bad_input(error):
        return Failure(EXIT_BAD_INPUT, str(error), False)
    if isinstance(error, ServerError):
        return Failure(EXIT_ENVIRONMENT, str(error), True)
    if (lost := lost_connection(error)) is not None:
        return Failure(
            EXIT_ENVIRONMENT,
            f"cannot connect ({type(lost).__name__}: {lost}{'' if lost is error else f'; {error}'}): check that the "
            "service it names runs (the Prefect API; with --ray-address, the Ray cluster; leave the option out to "
            "start Ray locally) and run the command again: what was committed is kept",
            True,
        )
    if isinstance(error, OSError):
        return Failure(
            EXIT_ENVIRONMENT,
            f"{type(error).__name__}: {error}: fix the file system problem it names (permissions, free space) and "
            "run the command again",
            True,
        )
    return Failure(EXIT_ERROR, f"unexpected {type(error).__name__}: {error}; this is a bug, please report it", True)


def lost_connection(error: BaseException) -> BaseException | None:
    """The connection failure behind `error` (itself or one of its causes), or None. Prefect's client raises httpx
    errors, or a RuntimeError caused by one when the API is gone at a flow's start."""
    import httpx

    while error is not None:
        if isinstance(error, ConnectionError | httpx.TransportError):
            return error
        error = error.__cause__
    return None


def one_line(text: str) -> str:
    """`text` with its line breaks folded, so that an error is exactly one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def write_traceback(command: str, error: BaseException) -> str:
    """Write the error's traceback to a new log file in the temporary folder; returns its path."""
    with tempfile.NamedTemporaryFile("w", prefix=f"glscl-{command}-", suffix=".log", delete=False) as log:
        log.write("".join(traceback.format_exception(error)))
    return log.name


def report(command: str, error: BaseException, verbose: bool) -> int:
    """Print the error as one line on standard error, the traceback before it with `verbose` or else into a log
    file the line names (for the errors where it helps); returns the exit code."""
    failure = classify(error)
    line = one_line(failure.message)
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    elif failure.keep_traceback:
        line += f" (traceback: {write_traceback(command, error)}; --verbose prints it)"
    print(f"glscl {command}: error: {line}", file=sys.stderr, flush=True)
    return failure.exit_code


class _WithoutTraceback(logging.Formatter):
    """Formats a record with another formatter, leaving out its exception and stack (the record is unchanged)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _NoRunFailures(logging.Filter):
    """Drops Prefect's records of a failing flow or task run (the command's own line says what failed, once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(RUN_LOGGERS))


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


@contextmanager
def console_without_tracebacks() -> Iterator[None]:
    """While the block runs, the console log handlers configured so far (Prefect's, Ray's) print no tracebacks, and
    no record of a failing flow or task run: the error then reaches the terminal once, as the command's last line.
    Prefect's API handler (the UI) and `--verbose` keep them whole."""
    if "prefect" in sys.modules:
        # Prefect adds its console handler when `prefect` is first imported in full; the flow modules are not yet.
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()
    saved = {handler: handler.formatter for handler in console_handlers()}
    quiet = _NoRunFailures()
    for handler, formatter in saved.items():
        handler.setFormatter(_WithoutTraceback(formatter or logging.Formatter()))
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler, formatter in saved.items():
            handler.setFormatter(formatter)
            handler.removeFilter(quiet)
