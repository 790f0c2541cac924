"""glscl's local Prefect server: one `prefect server start` per Prefect home, started in the background by the first
flow command that needs it and reused by every later one, and the choice of which Prefect API a flow command uses.

Why: Prefect runs every flow against an API. Without `PREFECT_API_URL` it starts a temporary server in each process,
which creates or migrates its SQLite database before the first task can run: seconds on every command, and on a
loaded 2-core machine more than Prefect's 20 s start-up timeout, which then fails the command (benchmarks/RESULTS.md
has the numbers). A server that outlives the command pays that once; every later command checks its health in
milliseconds.

The server listens on 127.0.0.1 only, on a port the OS picks (the previous one when it is still free), and keeps its
SQLite database, log and state in `$PREFECT_HOME/glscl-server/`. A file lock stops two commands from starting two
servers; a server whose process is gone, that does not answer, or that runs another Prefect version is replaced.
A watchdog (pipelines/server_watchdog.py) stops it after GLSCL_PREFECT_SERVER_IDLE_MINUTES (60) without a flow
command, and at once when its home is deleted; `glscl prefect-server start --idle-minutes 0` keeps it on.
Linux only: liveness is read from /proc.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

HOST = "127.0.0.1"
FOLDER = "glscl-server"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 15.0
MODE_VARIABLE = "GLSCL_PREFECT_SERVER"
TEMPORARY = "temporary"
IDLE_VARIABLE = "GLSCL_PREFECT_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 60.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """A Prefect API could not be started or reached; the message says which, why, and what to do."""


@dataclass(frozen=True)
class ServerState:
    """A started server as recorded in its state file."""

    pid: int
    port: int
    prefect_version: str
    started_at: str
    idle_s: float | None = None  # stopped after this long without a flow command; 0: kept on; None: not recorded
    watchdog_pid: int | None = None

    @property
    def ui_url(self) -> str:
        """The Prefect UI."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for PREFECT_API_URL."""
        return f"{self.ui_url}/api"


@dataclass(frozen=True)
class LocalServer:
    """The background Prefect server of one Prefect home; its files live in `home/glscl-server/`."""

    home: Path

    @classmethod
    def default(cls) -> LocalServer:
        """The server of the Prefect home in effect (PREFECT_HOME, default ~/.prefect)."""
        from prefect.settings import get_current_settings

        return cls(Path(get_current_settings().home).expanduser().resolve())

    @property
    def folder(self) -> Path:
        """Where the database, log, lock and state file live."""
        return self.home / FOLDER

    @property
    def database(self) -> Path:
        """The server's SQLite database (flow runs, task runs, logs, artifacts)."""
        return self.folder / "prefect.db"

    @property
    def log(self) -> Path:
        """The server's standard output and error."""
        return self.folder / "server.log"

    def in_use_lock(self) -> Path:
        """The lock flow commands hold (shared) while they use the server, and the watchdog (exclusive) to stop it."""
        return self.folder / "in-use.lock"

    @property
    def _last_used(self) -> Path:
        return self.folder / "last-used"

    def idle_seconds(self) -> float:
        """Seconds since a flow command last started or finished using the server (or since it started)."""
        for path in (self._last_used, self.folder / "server.json"):
            with suppress(OSError):
                return max(0.0, time.time() - path.stat().st_mtime)
        return 0.0

    def stops_at(self, state: ServerState) -> datetime | None:
        """When the watchdog stops the server if nothing uses it before; None when it is kept on."""
        if not state.idle_s:
            return None
        return datetime.fromtimestamp(time.time() - self.idle_seconds() + state.idle_s, UTC)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark the server as used while the block runs (a shared lock the watchdog must wait for), and as last used
        when it starts and ends."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.in_use_lock().open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            self._last_used.touch()
            try:
                yield
            finally:
                self._last_used.touch()

    def forget(self, state: ServerState) -> None:
        """Remove the state file when it still records `state`'s server."""
        current = self.state()
        if current is not None and current.pid == state.pid:
            (self.folder / "server.json").unlink(missing_ok=True)

    def state(self) -> ServerState | None:
        """The last started server's record, or None."""
        try:
            return ServerState(**json.loads((self.folder / "server.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> ServerState | None:
        """The server, when its process is alive and its API answers."""
        state = self.state()
        return state if state is not None and process_alive(state) and _healthy(state) else None

    def ensure(self, timeout: float = START_TIMEOUT_S, idle_s: float | None = None) -> ServerState:
        """The running server, started (or replaced) first when needed, with its watchdog; raises ServerError when it
        cannot start. `idle_s` sets its idle limit (None: a new server takes GLSCL_PREFECT_SERVER_IDLE_MINUTES, a
        running one keeps its own)."""
        prefect_version = version("prefect")
        state = self.running()
        if (
            state is not None
            and state.prefect_version == prefect_version
            and state.idle_s is not None
            and idle_s in (None, state.idle_s)
            and _watched(state)
        ):
            return state
        with self._lock():
            state = self.state()
            current = state is not None and process_alive(state) and state.prefect_version == prefect_version
            # A live server that does not answer yet was started by a command stopped while it waited, or is busy:
            # it gets the time a start gets.
            if idle_s is None:  # a running server keeps its own limit; one started by an older glscl has none
                idle_s = state.idle_s if current and state and state.idle_s is not None else idle_limit_s()
            if current and _wait_healthy(state, timeout):
                return self._watch(replace(state, idle_s=idle_s))
            self._stop(state)
            return self._watch(self._start(state.port if state else None, prefect_version, timeout, idle_s))

    def stop(self) -> ServerState | None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); returns what was stopped, or None."""
        with self._lock():
            state = self.state()
            return state if self._stop(state) else None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "server.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _watch(self, state: ServerState) -> ServerState:
        """Record `state`, with a watchdog (started when its own is not running)."""
        if not _watched(state):
            # This checkout first on its path, so that the watchdog is this code even where glscl is not installed.
            paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
            watchdog = subprocess.Popen(
                [sys.executable, "-m", "pipelines.server_watchdog", str(self.folder), str(state.pid)],
                cwd=self.folder,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            state = replace(state, watchdog_pid=watchdog.pid)
        self._write_state(state)
        return state

    def _start(self, previous_port: int | None, prefect_version: str, timeout: float, idle_s: float) -> ServerState:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env |= {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        deadline = time.monotonic() + timeout
        port = previous_port if previous_port and _port_free(previous_port) else _free_port()
        for _ in range(3):  # a port taken between the probe and the server's bind is retried with another
            with self.log.open("a") as log:
                log.write(f"--- {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} glscl starts the server on {HOST}:{port}\n")
                log.flush()
                process = subprocess.Popen(
                    [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
                    cwd=self.folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a Ctrl-C or a killed command leaves it running
                )
            state = ServerState(process.pid, port, prefect_version, datetime.now(UTC).isoformat(), idle_s)
            self._write_state(state)
            while time.monotonic() < deadline and process.poll() is None:
                if _healthy(state):
                    return state
                time.sleep(0.2)
            if process.poll() is None:
                self._stop(state)
                raise ServerError(
                    f"the local Prefect server did not answer within {timeout:.0f} s (log: {self.log}): "
                    "run the command again, or set PREFECT_API_URL to a running Prefect server"
                )
            if "already in use" not in _tail(self.log):
                raise ServerError(
                    f"the local Prefect server exited with code {process.returncode} at start ({_tail(self.log)!r}; "
                    f"log: {self.log}): fix what the log says, or set PREFECT_API_URL to a running Prefect server"
                )
            port = _free_port()
        raise ServerError(f"no free port on {HOST} for the local Prefect server (log: {self.log})")

    def _stop(self, state: ServerState | None) -> bool:
        """Stop the state's server if it runs; remove the state file. Returns whether a process was stopped."""
        (self.folder / "server.json").unlink(missing_ok=True)
        if state is None or not process_alive(state):
            return False
        stop_process_group(state.pid)
        return True

    def _write_state(self, state: ServerState) -> None:
        scratch = self.folder / "server.json.tmp"
        scratch.write_text(json.dumps(asdict(state)))
        scratch.replace(self.folder / "server.json")


def idle_limit_s() -> float:
    """The idle limit of a server a flow command starts: GLSCL_PREFECT_SERVER_IDLE_MINUTES (default 60; 0 keeps it
    on), in seconds."""
    text = os.environ.get(IDLE_VARIABLE, "").strip() or str(DEFAULT_IDLE_MINUTES)
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:
        raise ServerError(f"{IDLE_VARIABLE}={text!r} is not a number of minutes (0 keeps the server on)")
    return 60.0 * minutes


def stop_process_group(pid: int) -> None:
    """Stop a process group (SIGTERM, then SIGKILL after a grace period) and wait until its leader is gone."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _running(pid):
            return


def _running(pid: int, *words: bytes) -> bool:
    """Whether process `pid` runs (not a zombie, reaped if it is ours) and its command line holds `words`."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
    return not zombie and all(word in command for word in words)


def process_alive(state: ServerState) -> bool:
    """Whether the state's process still runs and is that server (a reused pid is not)."""
    return _running(state.pid, b"server", str(state.port).encode())


def _watched(state: ServerState) -> bool:
    """Whether the state's watchdog runs."""
    return state.watchdog_pid is not None and _running(state.watchdog_pid, b"pipelines.server_watchdog")


def _healthy(state: ServerState, timeout: float = 2.0) -> bool:
    """Whether the API answers its health check."""
    try:
        with _NO_PROXY.open(f"{state.api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(state: ServerState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(state) and time.monotonic() < deadline:
        if _healthy(state):
            return True
        time.sleep(0.2)
    return False


def _port_free(port: int) -> bool:
    """Whether the server could listen on `port` now. As uvicorn, the probe reuses the address: a server just killed
    leaves its connections in TIME_WAIT, and its port is free again for a new server (which running commands'
    Prefect clients, still pointed at it, then reach)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line (the server's console wraps its messages)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return " ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@contextmanager
def prefect_api(warn: Callable[[str], None]) -> Iterator[str]:
    """Point Prefect at the API a flow command uses while the block runs; yields its URL.

    A PREFECT_API_URL the user set (environment, profile, settings) wins and must answer. Otherwise the local
    server is used, started when needed; GLSCL_PREFECT_SERVER=temporary asks for Prefect's temporary per-process
    server instead, which is also the fallback (after `warn`) when the local server cannot start.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        _check_configured(configured)
        yield configured
        return
    if os.environ.get(MODE_VARIABLE, "") != TEMPORARY:
        server = LocalServer.default()
        with server.in_use():
            try:
                state = server.ensure()
            except ServerError as error:
                warn(f"{error}; this command uses a temporary Prefect server instead")
            else:
                with temporary_settings(updates={PREFECT_API_URL: state.api_url}):
                    yield state.api_url
                return
    yield _start_temporary()


def _check_configured(url: str) -> None:
    """Fail fast when the configured API does not answer at all (any HTTP answer will do: Prefect Cloud's wants a
    key); Prefect's own client would retry for a while and then fail the flow with a traceback."""
    try:
        _NO_PROXY.open(f"{url.rstrip('/')}/health", timeout=10).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServerError(
            f"the Prefect API at {url} (PREFECT_API_URL) does not answer ({reason}): start that server, or unset "
            "PREFECT_API_URL to use glscl's local server"
        ) from error


def _start_temporary() -> str:
    """Start Prefect's temporary server of this process now (the flow's client reuses it), so that a start-up
    failure is ours to report; it waits PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (glscl sets 180)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    try:
        server.start()
    except RuntimeError as error:
        raise ServerError(
            f"Prefect's temporary server did not start ({str(error).splitlines()[0][:200]}): run the command "
            "again, or start glscl's local server (`glscl prefect-server start`) or set PREFECT_API_URL to a running "
            "server"
        ) from error
    return server.api_url
