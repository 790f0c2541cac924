"""Operations with a real Prefect server: `prefect server start` on loopback with its own home and SQLite database,
the process work pool, `prefect deploy` of prefect.yaml from the repository root, a `prefect worker start` that
runs the ingest deployment in its own process (decode and encode on a local Ray, commits to LanceDB), the run's
summary artifact, and a server stopped in the middle of a run and started again on the same home.

Every service runs in its own process group, and flow-run processes (the process worker starts each one in a new
session) are stopped with their own groups, so nothing outlives the tests."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from conftest import make_video, reported_port
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipelines.ingest import ingest_flow
from pipelines.maintain import maintain_flow
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import FRAMES, RUNS, VIDEOS

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
INGEST = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "ingest")
POOL = INGEST["work_pool"]["name"]
FLOW_RUN_TIMEOUT = 240
COLOURS = ["red", "blue", "green", "yellow", "white", "purple"]


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM a process group, then SIGKILL it if it has not exited within `grace` seconds."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def children(pid: int) -> list[int]:
    """The ids of the live processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@dataclass
class PrefectStack:
    """A Prefect server and a process worker on loopback, sharing one PREFECT_HOME (which holds the database)."""

    home: Path
    port: int = 0  # 0 until the first start: the server binds a port of its own choosing and reports it
    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        """The API address the CLI, the worker and the flow runs talk to."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every Prefect command: this home and server, no telemetry, a fast-polling worker."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {
            **base,
            **({"PREFECT_API_URL": self.api_url} if self.port else {}),
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "GLSCL_HOME": str(ROOT),
        }

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        with (self.home / f"{name}.log").open("a") as log:
            return subprocess.Popen(
                [PREFECT, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_server(self, timeout: float = 120) -> None:
        """`prefect server start` (the first time on port 0, then again on the port it reported, which the worker
        and the flow runs know), then wait until /api/health answers."""
        command = ["server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "INFO"]
        self.server = self._spawn("server", *command)
        if not self.port:
            self.port = reported_port(
                self.server, self.home / "server.log", r"Uvicorn running on http://127\.0\.0\.1:(\d+)", timeout
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.server.poll() is None, "the Prefect server exited:\n" + self.log_tail("server")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"the Prefect server did not answer within {timeout} s:\n{self.log_tail('server')}")

    def kill_server(self) -> None:
        """Stop the server at once (SIGKILL of its process group), as a crash or a lost machine would."""
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def start_worker(self) -> None:
        """`prefect worker start` on the deployments' process pool."""
        self.worker = self._spawn("worker", "worker", "start", "--pool", POOL)

    def stop(self) -> None:
        """Stop the worker's flow-run processes (each in its own session), the worker and the server."""
        if self.worker is not None:
            for pid in children(self.worker.pid):
                with suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stop_group(self.worker)
        if self.server is not None:
            stop_group(self.server)

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run a `prefect` command against this server from the repository root; returns its output."""
        done = subprocess.run(
            [PREFECT, "--no-prompt", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of a service's log (the worker's log holds its flow runs' output)."""
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A Prefect client bound to this server, whatever API the test process is configured with."""
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as client:
            yield client

    def run_ingest(self, videos: Path, db: Path) -> UUID:
        """`prefect deployment run` of the ingest deployment on a folder of videos into a database."""
        config = {
            "sources": [str(videos)],
            "store": {"uri": str(db)},
            "sampling": {"policy": "uniform", "num_frames": 4},
            "max_words": 16,
            "shard_size": 2,
            "ray": {"num_cpus": 2},
        }
        out = self.cli(
            "deployment", "run", f"{ingest_flow.name}/{INGEST['name']}", "--params", json.dumps({"config": config})
        )
        return UUID(re.search(r"UUID: ([0-9a-f-]{36})", out).group(1))

    def wait_final(self, run_id: UUID, timeout: float = FLOW_RUN_TIMEOUT) -> FlowRun:
        """Poll a flow run until it is in a final state; on timeout fail with its state and the worker's log."""
        deadline = time.monotonic() + timeout
        run = None
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError), self.client() as client:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    return run
            time.sleep(2)
        state = run.state if run else "unknown"
        pytest.fail(f"flow run {run_id} not final after {timeout} s: {state}\n{self.log_tail('worker')}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[PrefectStack]:
    """A server with the process pool and every prefect.yaml deployment, and one worker, for this module."""
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-home"))
    try:
        stack.start_server()
        stack.cli("work-pool", "create", POOL, "--type", "process")
        out = stack.cli("deploy", "--all")
        assert out.count("successfully created") == len(
            yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        )
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


def make_videos(folder: Path, count: int) -> Path:
    """`count` distinct two-colour clips of two seconds."""
    for index in range(count):
        make_video(folder / f"clip{index}.mp4", [COLOURS[index], COLOURS[(index + 1) % len(COLOURS)]])
    return folder


def stored_ids(db: Path) -> tuple[Counter, Counter, list[dict]]:
    """Video ids counted in `videos` (ok rows) and `frames`, and the `runs` rows."""
    catalog = Catalog(StoreConfig(str(db)))
    videos = catalog.scan(VIDEOS, ["video_id", "status"]).to_pylist()
    frames = catalog.scan(FRAMES, ["video_id"]).column("video_id").to_pylist()
    runs = catalog.scan(RUNS, ["run_id", "status", "counts"]).to_pylist()
    return Counter(v["video_id"] for v in videos if v["status"] == "ok"), Counter(frames), runs


def test_ingest_deployment_runs_on_a_worker(stack, tmp_path):
    videos, db = make_videos(tmp_path / "videos", 2), tmp_path / "db"
    run = stack.wait_final(stack.run_ingest(videos, db))
    assert run.state.is_completed(), f"{run.state}\n{stack.log_tail('worker')}"
    ok, frames, runs = stored_ids(db)
    assert len(ok) == 2 and set(ok.values()) == {1} and frames == ok
    assert [(r["status"], json.loads(r["counts"])["ok"]) for r in runs] == [("completed", 2)]
    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert [a.key for a in artifacts] == ["glscl-ingest-summary"]
    assert runs[0]["run_id"] in artifacts[0].data and "- ok: 2" in artifacts[0].data


def test_schedules_are_deployed_paused_and_resume(stack):
    maintain = f"{maintain_flow.name}/maintain"
    with stack.client() as client:
        (schedule,) = client.read_deployment_by_name(maintain).schedules
    assert schedule.schedule.cron == "30 2 * * *" and not schedule.active
    stack.cli("deployment", "schedule", "resume", maintain, str(schedule.id))
    with stack.client() as client:
        (schedule,) = client.read_deployment_by_name(maintain).schedules
    assert schedule.active
    stack.cli("deployment", "schedule", "pause", maintain, str(schedule.id))


@pytest.mark.slow(seconds=55)
def test_server_stopped_mid_run_then_restarted(stack, tmp_path):
    videos, db = make_videos(tmp_path / "videos", len(COLOURS)), tmp_path / "db"
    first = stack.run_ingest(videos, db)
    deadline = time.monotonic() + FLOW_RUN_TIMEOUT
    while sum(stored_ids(db)[1].values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    _, frames, runs = stored_ids(db)
    assert [r["status"] for r in runs] == ["running"] and len(frames) < len(COLOURS), "the kill must come mid-run"
    stack.kill_server()
    ok, frames, _ = stored_ids(db)
    assert len(frames) >= 2 and set(frames.values()) == {1}, "the first shard should be committed, once"
    assert frames == ok, "every video stored as ok has its frames, and no frames lack their video row"
    # The data plane does not need the server: the run goes on and records its outcome in `runs` meanwhile.
    while [r["status"] for r in stored_ids(db)[2]] == ["running"] and time.monotonic() < deadline:
        time.sleep(1)
    ok, frames, runs = stored_ids(db)
    assert [r["status"] for r in runs] == ["completed"] and len(ok) == len(COLOURS) and frames == ok
    stack.start_server()
    first_run = stack.wait_final(first)
    second = stack.wait_final(stack.run_ingest(videos, db))
    assert second.state.is_completed(), f"{second.state}\n{stack.log_tail('worker')}"
    ok, frames, runs = stored_ids(db)
    assert len(ok) == len(COLOURS) and set(ok.values()) == {1} and frames == ok
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert first_run.state.is_completed(), f"{first_run.state}\n{stack.log_tail('worker')}"
