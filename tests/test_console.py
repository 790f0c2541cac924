"""Quiet by default, loud on request: the console policy of `glscl` commands (pipelines/cli/console.py) and the progress
bars (workers/terminal.py), tested directly (tests do not run on a terminal), then on the user's path: a real
`glscl ingest` that starts Ray prints nothing but its report, and `-v` brings Prefect's run lines back."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from pathlib import Path

import pytest
from conftest import make_video
from rich.console import Console
from test_first_run import glscl, user_env

from pipelines.cli.console import console_policy
from workers.terminal import Terminal, configured, progress

NOISE = ("core_worker", "raylet", "DeprecationWarning", "FutureWarning", "Progress bars disabled", "Beginning flow run")


@pytest.fixture
def console_handler(capsys, monkeypatch):
    """A console handler on the root logger that prints to (pytest's captured) standard error, with Prefect's
    loggers at INFO as Prefect configures them. The libraries' own handlers are set aside for the test: earlier
    tests in this process leave some bound to streams pytest has since closed."""
    monkeypatch.setattr(logging.getLogger("prefect"), "level", logging.INFO)
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", "ray", "ray.data", "some.library"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def log_and_warn() -> None:
    """What a command's console meets: third-party lines and warnings, a Prefect run line, the project's warning."""
    warnings.warn("old api", DeprecationWarning, stacklevel=1)
    logging.getLogger("ray.data").warning("Progress bars disabled")
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("prefect.flow_runs").warning("3 annotated videos have no file")
    logging.getLogger("some.library").error("disk full")


def test_quiet_console_keeps_own_warnings_and_errors(console_handler, capsys, tmp_path):
    """By default the console shows the project's warnings and anyone's errors; the log file gets everything."""
    log = tmp_path / "glscl.log"
    with console_policy(verbose=False, bars=False, log_file=str(log)):
        log_and_warn()
    err = capsys.readouterr().err
    assert "3 annotated videos have no file" in err and "disk full" in err
    assert "old api" not in err and "Progress bars disabled" not in err and "Finished in state" not in err
    logged = log.read_text()
    for line in ("old api", "Finished in state Completed()", "3 annotated videos have no file", "disk full"):
        assert line in logged
    assert console_handler.filters == []  # nothing stays applied after the command


def test_verbose_console_shows_everything(console_handler, capsys):
    """`-v` shows the lines the quiet console keeps off, warnings included."""
    with console_policy(verbose=True, bars=False):
        log_and_warn()
    err = capsys.readouterr().err
    for line in ("old api", "Progress bars disabled", "Finished in state Completed()", "disk full"):
        assert line in err


def test_warnings_outside_the_command_are_untouched():
    """Only the command line applies the policy: code run outside it (a test) still sees its warnings."""
    with console_policy(verbose=False, bars=False):
        pass
    with pytest.warns(DeprecationWarning, match="still seen"):
        warnings.warn("still seen", DeprecationWarning, stacklevel=1)


def test_progress_bar_shows_counts_and_rate():
    """A bar drawn on a terminal shows its count and rate in its unit; nested bars share one display."""
    out = io.StringIO()
    bars = Terminal(bars=Console(file=out, force_terminal=True, width=100))
    with configured(bars), progress("ingest shards", 2, "shards") as shards:
        for _ in range(2):
            with progress("decode + encode videos", 3, "videos") as videos:
                videos(advance=3, refresh=True)  # drawn before the shard closes
            shards(advance=1)
    text = out.getvalue()
    assert "ingest shards" in text and "2/2" in text and "shards/s" in text
    assert "3/3" in text and "videos/s" in text


def test_progress_bar_prints_nothing_without_a_terminal(capsys):
    """Without a bars console (flows called from Python, --json, standard error not a terminal) nothing is printed."""
    with progress("train", None, "steps") as update:
        update(completed=5, total=10, description="train epoch 1/2")
    assert capsys.readouterr() == ("", "")


@pytest.mark.slow(seconds=60)
def test_ingest_command_is_quiet_and_verbose_on_request(tmp_path: Path):
    """A real `glscl ingest` that starts Ray: stdout holds only the report and stderr nothing of Ray's, Prefect's
    or deprecation warnings; with `-v` Prefect's run lines come back."""
    videos = tmp_path / "videos"
    for index, colours in enumerate((["red", "blue"], ["green"], ["white", "black"])):
        make_video(videos / f"v{index}.mp4", colours)
    env = user_env(Path(os.environ["PREFECT_HOME"]))
    quiet = glscl(env, "ingest", str(videos), "--db", str(tmp_path / "quiet"), "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert '"ok": 3' in quiet.stdout
    for noise in NOISE:
        assert noise not in quiet.stdout + quiet.stderr
    loud = glscl(env, "-v", "ingest", str(videos), "--db", str(tmp_path / "loud"), "--json")
    assert loud.returncode == 0, loud.stderr
    assert "Beginning flow run" in loud.stderr and "Finished in state Completed()" in loud.stderr
