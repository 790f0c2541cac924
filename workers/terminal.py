"""What the terminal shows while a command runs: whether other libraries' log lines stay off the console (quiet),
which handler (a log file) receives every record anyway, and where progress bars are drawn.

The `glscl` command line sets these (pipelines/cli/console.py); code called from Python keeps the defaults: every
library's own console output and no bars. It lives here, below the flows, because the Ray drivers in this package
start Ray (whose loggers may only exist from then on) and draw the bars.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Loggers whose warnings a quiet console still shows: the project's own and Prefect's flow and task run loggers
# (which `get_run_logger` returns). Every other logger (Ray's, Prefect's engine, third parties, py.warnings) shows
# errors only; the log file, when there is one, receives all of them from INFO up.
OWN_LOGGERS = ("glscl", "pipelines", "workers", "schemas", "prefect.flow_runs", "prefect.task_runs")
# Loggers that do not propagate to the root logger, so the log file handler is added to them too.
RAY_LOGGERS = ("ray", "ray.data")

Update = Callable[..., None]  # rich's Progress.update for one bar: advance=, completed=, total=, description=


@dataclass(frozen=True)
class Terminal:
    """Console policy: `quiet` keeps other libraries' lines below ERROR off the console; `log_file` (a handler)
    receives every record from INFO up; `bars` is the console that progress bars are drawn on (None: no bars)."""

    quiet: bool = False
    log_file: logging.Handler | None = None
    bars: Console | None = None


class QuietConsole(logging.Filter):
    """Passes warnings of the project's own loggers (OWN_LOGGERS) and errors of any logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record reaches the console."""
        own = any(record.name == name or record.name.startswith(name + ".") for name in OWN_LOGGERS)
        return record.levelno >= (logging.WARNING if own else logging.ERROR)


QUIET = QuietConsole()
_settings = Terminal()


def current() -> Terminal:
    """The settings of the command running in this process (the defaults outside the command line)."""
    return _settings


def console_handlers() -> list[logging.StreamHandler]:
    """The stream handlers (not file handlers) attached to any logger so far: the ones that print on a console."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found = {
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    }
    return sorted(found, key=id)


def _targets() -> tuple[list[logging.Handler], list[logging.Logger]]:
    """The handlers the quiet filter applies to (with the last-resort one) and the loggers that get the log file."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in RAY_LOGGERS)]
    last_resort = [logging.lastResort] if logging.lastResort else []
    return [*console_handlers(), *last_resort], loggers


def adopt_loggers() -> None:
    """Apply the current settings to the handlers and loggers that exist now: the quiet filter on every console
    handler, the log file on the root and Ray's loggers. Idempotent; `ensure_ray` calls it again once Ray's loggers
    exist."""
    handlers, loggers = _targets()
    if _settings.quiet:
        for handler in handlers:
            handler.addFilter(QUIET)
    if _settings.log_file is not None:
        for logger in loggers:
            if _settings.log_file not in logger.handlers:
                logger.addHandler(_settings.log_file)


@contextmanager
def configured(settings: Terminal) -> Iterator[None]:
    """Apply `settings` while the block runs; afterwards remove the filter and handler from wherever they went."""
    global _settings
    saved, _settings = _settings, settings
    adopt_loggers()
    try:
        yield
    finally:
        _settings = saved
        handlers, loggers = _targets()
        for handler in handlers:
            handler.removeFilter(QUIET)
        if settings.log_file is not None:
            for logger in loggers:
                logger.removeHandler(settings.log_file)


class RateColumn(ProgressColumn):
    """Items per second in the bar's own unit (from the task field `unit`)."""

    def render(self, task: Task) -> Text:
        """'12.3 videos/s' (recent, else the average so far), or '? videos/s' before there is a rate."""
        speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
        return Text(f"{speed:.1f}" if speed else "?", style="progress.data.speed").append(f" {task.fields['unit']}/s")


class _Display:
    """The bars of this process: one rich Progress, live while any bar is open. A bar closed while another stays
    open (a shard within the run) is removed; the last one to close stays printed as the record of the step."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.open = 0

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str, completed: int) -> Iterator[Update]:
        if self.progress is None:
            console = _settings.bars
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=console is None,
            )
            self.progress.start()
        progress = self.progress
        task = progress.add_task(description, total=total, completed=completed, unit=unit)
        self.open += 1
        try:
            yield functools.partial(progress.update, task)
        finally:
            self.open -= 1
            if self.open:
                progress.remove_task(task)
            else:
                progress.stop()
                self.progress = None


_DISPLAY = _Display()


def progress(description: str, total: int | None, unit: str, completed: int = 0) -> AbstractContextManager[Update]:
    """A progress bar with counts and a rate in `unit`s while the block runs, drawn on the current settings' bars
    console (nothing is printed without one). Yields `update(advance=, completed=, total=, description=)`."""
    return _DISPLAY.bar(description, total, unit, completed)
