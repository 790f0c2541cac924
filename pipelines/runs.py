"""The `runs` table: every flow records its parameters when it starts and its outcome when it ends (counts,
failures by reason, timings, table versions, or the error that stopped it), so results can be reproduced. While it
runs, its process beats in `run_heartbeats` (host, pid, time), so that a reader can tell a run whose process was
killed (its row stays `running`) from one still at work."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from schemas.catalog import Catalog, sql_string
from schemas.rows import now_utc
from schemas.store import StoreConfig
from schemas.tables import RUN_HEARTBEATS, RUNS

RUNNING = "running"
ABANDONED = "abandoned"
HEARTBEAT_ENV = "GLSCL_RUN_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 30.0
# A run whose last heartbeat is older than this many of its intervals counts as abandoned.
STALE_BEATS = 4

logger = logging.getLogger(__name__)


def heartbeat_interval() -> float:
    """Seconds between a run's heartbeats: GLSCL_RUN_HEARTBEAT_S, else the default."""
    return float(os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S)


def pid_namespace() -> str:
    """This process's pid namespace (Linux; '' elsewhere): a pid means the same process only within one, and two
    containers can share a host name."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunRecorder:
    """One row in `runs` for one flow run, written at start ('running') and updated at the end, and a heartbeat
    in `run_heartbeats` from a daemon thread every `heartbeat_s` seconds until then.

    Used as a context manager: entering records the start, an exception leaving the block records the failure
    (and propagates); the block calls `finish` with the outcome.
    """

    catalog: Catalog
    flow: str
    params: dict
    run_id: str = ""
    started_at: datetime = field(default_factory=now_utc)
    heartbeat_s: float = field(default_factory=heartbeat_interval)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _beats: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or f"{self.flow}-{self.started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"

    def start(self) -> RunRecorder:
        """Record the run as running, with its parameters and the table versions it starts from, and start
        beating (the first beat is written before the row, so no `running` row lacks one)."""
        self._beat(self.catalog)
        self._write(RUNNING, finished=False)
        self._beats = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat {self.run_id}", daemon=True)
        self._beats.start()
        return self

    def __enter__(self) -> RunRecorder:
        return self.start()

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            self.fail(error)

    def finish(self, status: str, counts: dict, failures: dict, timings: dict) -> dict[str, int]:
        """Record the outcome; returns the table versions after the run (this row included)."""
        self.stop_heartbeat()
        self._write(status, True, counts=counts, failures=failures, timings=timings)
        return self.catalog.versions()

    def fail(self, error: BaseException) -> None:
        """Record that the run stopped with an error."""
        self.stop_heartbeat()
        self._write("failed", True, error=f"{type(error).__name__}: {error}")

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (a beat being written may land later: it only moves `heartbeat_at`)."""
        self._stopped.set()
        if self._beats is not None:
            self._beats.join(timeout=self.heartbeat_s)

    def _beat_until_stopped(self) -> None:
        catalog = Catalog(self.catalog.store)
        while not self._stopped.wait(self.heartbeat_s):
            try:
                self._beat(catalog)
            except Exception as error:  # a missed beat must not stop the run; the next one tries again
                logger.warning("run %s: heartbeat not recorded: %s", self.run_id, error)

    def _beat(self, catalog: Catalog) -> None:
        row = {
            "run_id": self.run_id,
            "host": self.host,
            "pid_namespace": pid_namespace(),
            "pid": self.pid,
            "interval_s": self.heartbeat_s,
            "heartbeat_at": now_utc(),
        }
        catalog.merge(RUN_HEARTBEATS, pa.Table.from_pylist([row], schema=RUN_HEARTBEATS.schema()), update=True)

    def _write(self, status: str, finished: bool, counts=None, failures=None, timings=None, error=None) -> None:
        row = {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": status,
            "started_at": self.started_at,
            "finished_at": now_utc() if finished else None,
            "params": json.dumps(self.params, default=str),
            "counts": json.dumps(counts or {}),
            "failures": json.dumps(failures or {}),
            "timings": json.dumps(timings or {}),
            "table_versions": json.dumps(self.catalog.versions()),
            "error": error,
        }
        self.catalog.merge(RUNS, pa.Table.from_pylist([row], schema=RUNS.schema()), update=True)


@dataclass
class RunView:
    """One run as `glscl runs` shows it: its recorded row, where its process ran and when it last beat, and
    `abandoned` instead of `running` (with the reason in `gone`) when that process is known to be gone."""

    run_id: str
    flow: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    counts: dict
    error: str | None
    host: str | None = None
    pid: int | None = None
    heartbeat_at: datetime | None = None
    gone: str | None = None


def gone_reason(beat: dict, now: datetime) -> str | None:
    """Why the process of a `running` run is known to be gone (None: it may be alive): its pid no longer exists
    on this host (in this pid namespace), or it has not beaten for STALE_BEATS of its intervals."""
    here = beat["host"] == socket.gethostname() and beat["pid_namespace"] == pid_namespace()
    if here and not pid_alive(beat["pid"]):
        return f"process {beat['pid']} on {beat['host']} is gone"
    silent = now - beat["heartbeat_at"]
    if silent > timedelta(seconds=STALE_BEATS * beat["interval_s"]):
        return f"no heartbeat from {beat['host']} (pid {beat['pid']}) for {silent.total_seconds():.0f} s"
    return None


def run_view(row: dict, beat: dict | None, now: datetime) -> RunView:
    """The view of one `runs` row, judging a `running` one by its heartbeat row (None: an older glscl recorded
    it without one, and it stays `running`)."""
    gone = gone_reason(beat, now) if beat and row["status"] == RUNNING else None
    end = row["finished_at"]
    if gone:
        end = beat["heartbeat_at"]
    elif row["status"] == RUNNING:
        end = now
    return RunView(
        run_id=row["run_id"],
        flow=row["flow"],
        status=ABANDONED if gone else row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_s=(end - row["started_at"]).total_seconds() if end else None,
        counts=json.loads(row["counts"]),
        error=row["error"],
        host=beat["host"] if beat else None,
        pid=beat["pid"] if beat else None,
        heartbeat_at=beat["heartbeat_at"] if beat else None,
        gone=gone,
    )


def list_runs(
    store: StoreConfig, status: str | None = None, flow: str | None = None, limit: int = 20, now: datetime | None = None
) -> list[RunView]:
    """The recorded runs, newest first (at most `limit`, 0 for all), of one flow and one status if given; a
    `running` run whose process is gone reads as `abandoned` (judged now, not written back)."""
    catalog = Catalog(store)
    now = now or now_utc()
    filters = [f"flow = {sql_string(flow)}"] if flow else []
    if status:
        filters.append(f"status = {sql_string(RUNNING if status == ABANDONED else status)}")
    columns = ["run_id", "flow", "status", "started_at", "finished_at", "counts", "error"]
    rows = catalog.scan(RUNS, columns, " AND ".join(filters) or None).to_pylist()
    beats = catalog.scan(RUN_HEARTBEATS, RUN_HEARTBEATS.schema().names).to_pylist()
    beat_of = {beat["run_id"]: beat for beat in beats}
    views = [run_view(row, beat_of.get(row["run_id"]), now) for row in rows]
    views = sorted((v for v in views if not status or v.status == status), key=lambda v: v.started_at, reverse=True)
    return views[:limit] if limit else views
