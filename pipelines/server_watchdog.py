"""The watchdog of glscl's local Prefect server (pipelines/local_server.py): a small process started beside the
server that stops it once no flow command has used it for the server's idle limit, or at once when its Prefect
home is deleted, so that one `glscl demo` does not leave a daemon running for good (measured idle: 1.8% of a core
and 240 MB). Flow commands hold a shared lock on `in-use.lock` while they run; the watchdog stops the server only
while it holds that lock exclusively, so no command loses its server mid-run, and a command arriving then waits
and starts a new one.

A server that dies while a command uses it (killed, out of memory) is started again on its port and database: the
running flows' Prefect clients retry for minutes, so they carry on instead of failing the command (the soak
benchmark found a killed server failing the command after about four minutes of retries).

Run as `python -m pipelines.server_watchdog FOLDER PID`; it exits when the server it watches is gone or replaced.
Standard library only: it stays small.
"""

from __future__ import annotations

import fcntl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipelines.local_server import LocalServer, ServerError, ServerState, process_alive, stop_process_group

MAX_CHECK_S = 5.0


def check_interval(idle_s: float) -> float:
    """Seconds between checks: a tenth of the idle limit, between 0.5 s and 5 s (a deleted home is noticed within
    5 s)."""
    return min(MAX_CHECK_S, max(0.5, idle_s / 10)) if idle_s > 0 else MAX_CHECK_S


def watch(server: LocalServer, pid: int) -> str:
    """Watch the server process `pid` of `server` until it is gone, replaced, or stopped here; returns why."""
    while True:
        if not server.folder.exists():
            stop_process_group(pid)
            return "its Prefect home was deleted"
        state = server.state()
        if state is None or state.pid != pid:
            return "the server stopped or was replaced"
        if not process_alive(state):
            return _restart_if_used(server, state)
        limit = state.idle_s or 0.0
        if limit > 0 and server.idle_seconds() >= limit and _stop_if_unused(server, limit, state):
            return f"unused for {limit / 60:g} min"
        time.sleep(check_interval(limit))


@contextmanager
def _held_alone(server: LocalServer) -> Iterator[bool]:
    """Whether no flow command holds the server (the watchdog then holds the in-use lock alone for the block; a
    command's shared lock keeps this exclusive try out)."""
    with server.in_use_lock().open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _restart_if_used(server: LocalServer, state: ServerState) -> str:
    """Start a server that died on its port again when a command is using it (the command's next request reaches the
    new one, which gets its own watchdog); a server nobody uses is left for the next command to start."""
    with _held_alone(server) as unused:
        if unused:
            return "the server stopped"
    try:
        restarted = server.ensure(idle_s=state.idle_s)
    except ServerError as error:
        return f"the server died while a command used it, and could not be started again: {error}"
    return f"the server died while a command used it; started again as {restarted.pid} on port {restarted.port}"


def _stop_if_unused(server: LocalServer, limit: float, state: ServerState) -> bool:
    """Stop the server when no command holds it (the in-use lock is free) and none used it since the last look."""
    with _held_alone(server) as unused:
        if not unused or server.idle_seconds() < limit:
            return False
        server.forget(state)
        stop_process_group(state.pid)
        return True


def main(argv: list[str]) -> int:
    """Entry point: FOLDER (the server's glscl-server folder) and PID (the server process)."""
    folder, pid = Path(argv[0]), int(argv[1])
    server = LocalServer(folder.parent)
    reason = watch(server, pid)
    if folder.exists():
        with server.log.open("a") as log:
            log.write(f"--- {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} glscl's watchdog: server {pid} ended: {reason}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
