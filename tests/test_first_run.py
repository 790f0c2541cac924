"""The user's path: `glscl` flow commands run as subprocesses with a fresh PREFECT_HOME and no Prefect settings at all
(no test harness, no PREFECT_API_URL). The first command starts glscl's local Prefect server, every later one reuses
it; one command of each kind completes on it; a first run completes with both cores busy; the server answers on
loopback only, comes back after being killed, and stops; every failure ends in one line and its exit code.

Each test home's server is stopped by its fixture; the data (a tiny synthetic dataset, ingested and trained by `glscl
demo`) is made once and shared."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lancedb
import pytest
from conftest import make_video

from pipelines.cli.failures import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_ERROR, report
from pipelines.local_server import LocalServer, ServerState
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import VIDEOS

ROOT = Path(__file__).resolve().parent.parent
# Waits until the time in argv[2], then asks for the local server of the home in argv[1] and prints its pid.
RACE = (
    "import sys, time; from pathlib import Path; from pipelines.local_server import LocalServer; "
    "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); print(LocalServer(Path(sys.argv[1])).ensure().pid)"
)
TEMPORARY_SERVER = "temporary server on http://127.0.0.1:"  # Prefect logs it when it stops that server


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: no PREFECT_* or GLSCL_PREFECT_SERVER setting but a fresh Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "GLSCL_PREFECT_SERVER"}
    return {**env, "PREFECT_HOME": str(home), **extra}


def glscl(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `glscl ARGS` as a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(done: subprocess.CompletedProcess) -> str:
    """The last non-empty line of a command's standard error."""
    return [line for line in done.stderr.splitlines() if line.strip()][-1]


def completed_flows(state: ServerState) -> Counter:
    """How many completed flow runs the server holds, by flow name."""
    runs = httpx.post(f"{state.api_url}/flow_runs/filter", json={}, timeout=30).raise_for_status().json()
    names = {f["id"]: f["name"] for f in httpx.post(f"{state.api_url}/flows/filter", json={}, timeout=30).json()}
    return Counter(names[r["flow_id"]] for r in runs if r["state_type"] == "COMPLETED")


def listening_addresses(pid: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) of the TCP sockets `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1].rsplit(":", 1)[0])
    return found


def servers_of(home: Path) -> list[int]:
    """The ids of the live `prefect server start` processes whose PREFECT_HOME is `home`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in command and b"start" in command and f"PREFECT_HOME={home}".encode() in environ:
            found.append(int(proc.name))
    return found


@dataclass
class FreshHome:
    """A new user's Prefect home and environment; stopping it stops the server its commands started."""

    home: Path

    @property
    def env(self) -> dict[str, str]:
        return user_env(self.home)

    @property
    def server(self) -> LocalServer:
        return LocalServer(self.home)

    def stop(self) -> None:
        self.server.stop()
        assert servers_of(self.home) == [], "the home's server process outlived its stop"


@contextmanager
def fresh_home(path: Path) -> Iterator[FreshHome]:
    """A FreshHome whose server is stopped afterwards, whatever the test did."""
    home = FreshHome(path)
    try:
        yield home
    finally:
        home.stop()


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Iterator[FreshHome]:
    """One new user for this module: the flow commands below share its home, as one person's commands would."""
    with fresh_home(tmp_path_factory.mktemp("home")) as home:
        yield home


@dataclass
class Demo:
    """What the first command, `glscl demo`, left: its run, the server it started, the database and checkpoint."""

    done: subprocess.CompletedProcess
    state: ServerState
    out: Path

    @property
    def db(self) -> str:
        return str(self.out / "lancedb")

    @property
    def checkpoint(self) -> str:
        return str(self.out / "train" / "best")


@pytest.fixture(scope="module")
def demo(user, tmp_path_factory) -> Demo:
    """The new user's first command: a small `glscl demo` (generate, ingest, train, order test; 32 training videos
    make one batch)."""
    out = tmp_path_factory.mktemp("demo")
    args = ["demo", "--out", str(out), "--train-videos", "32", "--val-videos", "4", "--epochs", "1"]
    done = glscl(user.env, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    state = user.server.running()
    assert state is not None, "the first flow command left no local server running"
    return Demo(done, state, out)


def assert_ran_on_the_local_server(done: subprocess.CompletedProcess, state: ServerState, flows: Counter) -> None:
    """The command succeeded without a warning, and the local server holds exactly these completed flow runs."""
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning:" not in done.stderr, done.stderr[-3000:]
    assert completed_flows(state) == flows


def test_first_command_starts_the_local_server(user, demo):
    flows = Counter({"glscl-demo": 1, "glscl-ingest": 1, "glscl-train": 1, "glscl-index": 1})
    assert_ran_on_the_local_server(demo.done, demo.state, flows)
    assert "| GLSCL trained (best, step" in demo.done.stdout
    assert servers_of(user.home) == [demo.state.pid]
    assert (user.home / "glscl-server" / "prefect.db").exists()


def test_the_first_command_is_quiet(demo):
    """The terminal shows the report and nothing of Ray's or Prefect's internals (`-v` brings those back)."""
    noise = ("core_worker", "raylet", "DeprecationWarning", "FutureWarning", "Progress bars", "Beginning flow run")
    assert [word for word in noise if word in demo.done.stdout + demo.done.stderr] == []


@pytest.mark.parametrize(
    "command",
    [
        "ingest {out}/train.json {out}/val_1.json --video-root {out}/videos --dataset synthetic --db {db} --frames 8",
        "train --db {db} --head tiny --epochs 1 --batch-size 8 --val-split= --output {tmp}/train",
        "evaluate --checkpoint {checkpoint} --db {db} --output {tmp}/evaluate",
        "index --checkpoint {checkpoint} --db {db}",
        "maintain --db {db}",
    ],
)
def test_each_flow_command_reuses_the_local_server(user, demo, tmp_path, command):
    flows = completed_flows(demo.state)
    args = command.format(out=demo.out, db=demo.db, checkpoint=demo.checkpoint, tmp=tmp_path).split()
    done = glscl(user.env, *args)
    assert_ran_on_the_local_server(done, demo.state, flows + Counter({f"glscl-{command.split()[0]}": 1}))
    assert user.server.running() == demo.state, "the command started another server instead of reusing it"


def test_train_writes_a_checkpoint_and_a_json_summary(user, demo, tmp_path):
    args = ["train", "--db", demo.db, "--head", "tiny", "--epochs", "2", "--batch-size", "8", "--log-every", "1"]
    done = glscl(user.env, *args, "--output", str(tmp_path / "run"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 * (32 // 8) and summary["world_size"] == 1 and summary["val_split"] == "val_1"
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.parent == tmp_path / "run" and (checkpoint / "model.safetensors").stat().st_size > 10_000
    assert json.loads((checkpoint / "config.json").read_text())["extra"]["step"] in range(1, 9)


def test_index_builds_the_ivf_flat_vector_index_from_min_rows(user, demo, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(demo.db, db)  # the demo's own index stays a scan (36 videos, below the default 1000)
    done = glscl(user.env, "index", "--checkpoint", demo.checkpoint, "--db", str(db), "--min-rows", "8", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    tables = glscl(user.env, "tables", "--db", str(db), "--json")
    assert tables.returncode == 0, tables.stderr[-3000:]
    (index,) = json.loads(tables.stdout)["video_indexes"]
    assert index["rows"] == 36 and len(index["vector_indexes"]) == 4  # one per time segment (the default 4)
    assert not any(index["unindexed_rows"].values())
    table = lancedb.connect(str(db)).open_table(index["name"])
    types = {column: str(i.index_type) for i in table.list_indices() for column in i.columns}
    assert {types[column] for column in index["vector_indexes"]} == {"IvfFlat"}


def test_query_exact_with_combined_filters(user, demo):
    videos = Catalog(StoreConfig(demo.db)).scan(VIDEOS, ["video_id", "split"]).to_pylist()
    val = sorted(v["video_id"] for v in videos if v["split"] == "val_1")[:2]
    train = sorted(v["video_id"] for v in videos if v["split"] == "train")[:1]
    filters = ["--where", "split=val_1", "--where", f"video_id in {','.join(val + train)}"]
    args = ["query", "a red square", "--checkpoint", demo.checkpoint, "--db", demo.db, "--exact", *filters]
    done = glscl(user.env, *args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["mode"] == "exact" and result["timings_ms"]["ann"] == 0
    assert sorted(hit["video_id"] for hit in result["hits"]) == val  # both filters hold: the train video is out
    assert [hit["rank"] for hit in result["hits"]] == [1, 2]
    assert result["hits"][0]["score"] >= result["hits"][1]["score"]


def test_failures_end_in_one_line_with_their_exit_code(user, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("file\nx.mp4\n")
    done = glscl(user.env, "ingest", str(manifest), "--db", str(tmp_path / "db"))
    assert done.returncode == EXIT_BAD_INPUT
    assert last_line(done) == f"glscl ingest: error: {manifest}: a manifest needs a 'path' column (found: file)"
    assert "Traceback" not in done.stderr, "Prefect's task and flow failure logs keep their tracebacks to themselves"
    assert " ERROR " not in done.stderr, "a flow's failure is told once, by the command's last line"
    verbose = glscl(user.env, "ingest", str(manifest), "--db", str(tmp_path / "db"), "--verbose")
    assert verbose.returncode == EXIT_BAD_INPUT and verbose.stderr.count("Traceback") >= 2
    assert last_line(verbose) == last_line(done)

    unreachable = glscl(user_env(tmp_path / "home", PREFECT_API_URL="http://127.0.0.1:9/api"), "maintain")
    assert unreachable.returncode == EXIT_ENVIRONMENT, unreachable.stderr[-2000:]
    line = last_line(unreachable)
    assert line.startswith("glscl maintain: error: the Prefect API at http://127.0.0.1:9/api (PREFECT_API_URL)")
    assert "unset PREFECT_API_URL" in line and "Traceback" not in unreachable.stderr
    assert LocalServer(tmp_path / "home").state() is None, "a PREFECT_API_URL the user set wins over the local server"
    traceback_file = Path(re.search(r"\(traceback: (\S+);", line).group(1))
    assert "ServerError" in traceback_file.read_text()
    traceback_file.unlink()


def test_an_unexpected_error_is_one_line_naming_its_traceback_file(capsys):
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as error:
        assert report("index", error, verbose=False) == EXIT_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("glscl index: error: unexpected RuntimeError: boom second line; this is a bug")
    traceback_file = Path(re.search(r"\(traceback: (\S+);", line).group(1))
    assert 'raise RuntimeError("boom' in traceback_file.read_text()
    traceback_file.unlink()


def test_temporary_server_on_request(tmp_path):
    env = user_env(tmp_path / "home", GLSCL_PREFECT_SERVER="temporary")
    done = glscl(env, "-v", "maintain", "--db", str(tmp_path / "db"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert TEMPORARY_SERVER in done.stderr and json.loads(done.stdout)["run_id"].startswith("maintain-")
    assert LocalServer(tmp_path / "home").state() is None and servers_of(tmp_path / "home") == []


@pytest.mark.slow(seconds=50)
def test_first_run_with_both_cores_busy(tmp_path):
    """Two busy loops hold both cores while a new user's first command starts its server; it completes."""
    make_video(tmp_path / "videos" / "a.mp4", ["red", "blue"])
    make_video(tmp_path / "videos" / "b.mp4", ["green", "white"])
    # In sessions of their own, as other programs would be: the kernel's autogroup scheduling shares the cores
    # between sessions, and the server gets a session of its own too.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(2)]
    with fresh_home(tmp_path / "home") as user:
        try:
            command = [sys.executable, "-m", "pipelines.cli", "-v", "ingest", str(tmp_path / "videos")]
            command += ["--db", str(tmp_path / "db"), "--frames", "4"]
            with (tmp_path / "stderr").open("w") as errors:
                process = subprocess.Popen(command, cwd=ROOT, env=user.env, stdout=subprocess.PIPE, stderr=errors)
                while "Beginning flow run" not in (tmp_path / "stderr").read_text() and process.poll() is None:
                    time.sleep(0.2)
                for loop in busy:
                    loop.kill()
                output, _ = process.communicate(timeout=600)
        finally:
            for loop in busy:
                loop.kill()
                loop.wait()
        done = subprocess.CompletedProcess(command, process.returncode, output, (tmp_path / "stderr").read_text())
        state = user.server.running()
        assert state is not None, done.stderr[-3000:]
        assert_ran_on_the_local_server(done, state, Counter({"glscl-ingest": 1}))


@pytest.mark.slow(seconds=57)
def test_server_commands_lock_loopback_kill_and_stop(tmp_path):
    with fresh_home(tmp_path / "home") as user:
        # Three processes ask for the server at the same instant: the lock lets one start it, the others reuse it.
        at = time.time() + 5
        racers = [
            subprocess.Popen([sys.executable, "-c", RACE, str(user.home), str(at)], cwd=ROOT, stdout=subprocess.PIPE)
            for _ in range(3)
        ]
        pids = {int(p.communicate(timeout=300)[0]) for p in racers}
        first = json.loads(glscl(user.env, "prefect-server", "start", "--json").stdout)
        assert first["running"] and pids == {first["pid"]}, "one server started, the others reused it"
        assert servers_of(user.home) == [first["pid"]]
        assert first["api_url"].startswith("http://127.0.0.1:") and first["folder"] == str(user.home / "glscl-server")
        assert listening_addresses(first["pid"]) == {"0100007F"}, "the server listens on 127.0.0.1 only"
        assert httpx.get(first["ui_url"], timeout=30).status_code == 200, "the Prefect UI is served"

        # Killed, as a crash or a reboot would: the next flow command starts it again.
        os.kill(first["pid"], signal.SIGKILL)
        done = glscl(user.env, "maintain", "--db", str(tmp_path / "empty-db"))
        state = user.server.running()
        assert state is not None and state.pid != first["pid"], done.stderr[-3000:]
        assert_ran_on_the_local_server(done, state, Counter({"glscl-maintain": 1}))
        assert servers_of(user.home) == [state.pid]

        # Killed while a command holds it: its watchdog starts it again on the same port and database, where the
        # command's Prefect client (which retries for minutes) finds it.
        with user.server.in_use():
            os.kill(state.pid, signal.SIGKILL)
            assert wait_until(lambda: (user.server.running() or state).pid != state.pid, 120), "not restarted"
        restarted = user.server.running()
        assert restarted.port == state.port and servers_of(user.home) == [restarted.pid]
        # The old server's watchdog logs why once the new server answers, a moment after.
        restarted_line = "died while a command used it; started again"
        assert wait_until(lambda: restarted_line in user.server.log.read_text(), 15), "no reason logged"
        state = restarted

        # Unused for its idle limit (60 min unless set; 3 s here), it stops by itself, but never while a command
        # holds it.
        status = glscl(user.env, "prefect-server", "status").stdout
        assert "stops by itself at" in status and "after 60 min unused" in status, status
        short = json.loads(glscl(user.env, "prefect-server", "start", "--idle-minutes", "0.05", "--json").stdout)
        assert short["pid"] == state.pid and short["idle_minutes"] == 0.05 and short["stops_at"]
        with user.server.in_use():
            time.sleep(6)
            # Its process, not its health check: a loaded machine can make /health slower than the check waits.
            assert servers_of(user.home) == [short["pid"]], "the watchdog stopped a server a command was using"
        assert wait_until(lambda: servers_of(user.home) == [], 30), "the unused server did not stop by itself"
        assert user.server.state() is None
        # The watchdog logs why once the server's process is gone, a moment after.
        assert wait_until(lambda: "unused for 0.05 min" in user.server.log.read_text(), 15), "no reason logged"

        old_name = glscl(user.env, "server", "status")  # the old name works for one release, and says so
        assert old_name.returncode == 0 and "the local Prefect server is not running" in old_name.stdout
        assert "`glscl server` is now `glscl prefect-server`" in old_name.stderr

        # A server whose Prefect home is deleted stops by itself.
        started = json.loads(glscl(user.env, "prefect-server", "start", "--json").stdout)
        assert started["running"] and servers_of(user.home) == [started["pid"]]
        shutil.rmtree(user.home)
        assert wait_until(lambda: servers_of(user.home) == [], 60), "a server without a home kept running"


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (checked every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def timed(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`glscl ARGS` and the seconds it took."""
    start = time.perf_counter()
    done = glscl(env, *args)
    return done, time.perf_counter() - start


def test_input_errors_fail_at_once_in_one_line_with_the_fix(user, demo, tmp_path):
    """Every mistake of a newcomer's first hour: exit code 2, one line that names the input and the fix, in under
    3 s (checked before the Prefect API or a model starts), nothing written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    nowhere = tmp_path / "nowhere"
    run_folder = str(Path(demo.checkpoint).parent)
    cases = [
        (("ingest", str(empty), "--db", str(nowhere)), f"no videos found in {empty}; looked for *.mp4, *.mkv"),
        (("ingest", f"{demo.out}/train.json", "--db", str(nowhere)), "needs --video-root"),
        (("train", "--db", demo.db, "--split", "val_2"), "split 'val_2' has no ingested videos"),
        (("evaluate", "--checkpoint", demo.checkpoint, "--db", demo.db, "--split", "x"), "splits there: train, val_1"),
        (("evaluate", "--checkpoint", run_folder, "--db", demo.db), f"use --checkpoint {demo.checkpoint}"),
        (("index", "--checkpoint", run_folder, "--db", demo.db), f"use --checkpoint {demo.checkpoint}"),
        (("evaluate", "--checkpoint", demo.checkpoint, "--db", str(nowhere)), f"no database at {nowhere}"),
        (("query", "a red square", "--checkpoint", demo.checkpoint, "--db", str(nowhere)), f"use --db {demo.db}"),
        (("serve", "--checkpoint", demo.checkpoint, "--db", str(nowhere)), f"use --db {demo.db}"),
        (("demo", "--out", str(tmp_path / "d"), "--train-videos", "12"), "fewer than one batch (--batch-size 32)"),
        (("demo", "--out", str(demo.out), "--train-videos", "40"), "made with other settings (n_train 32 there"),
    ]
    for args, expected in cases:
        done, seconds = timed(user.env, *args)
        line = last_line(done)
        assert done.returncode == EXIT_BAD_INPUT, f"{args}: {done.stderr[-2000:]}"
        assert line.startswith(f"glscl {args[0]}: error: ") and expected in line, (args, line)
        assert [text for text in done.stderr.splitlines() if text.strip()] == [line], (args, done.stderr[-2000:])
        assert seconds < 3, f"{args} took {seconds:.1f} s to fail"
    assert not nowhere.exists(), "a failed command created the database folder"
    assert not (tmp_path / "d").exists(), "the demo generated videos before refusing its sizes"


# Every `glscl` example in the README's code blocks either runs below on a copy of the demo's data laid out at the
# examples' default paths, or says here why not (and which test covers it where one does).
README_NOT_RUN = {
    "glscl ingest SOURCE": "the synopsis, not an example",
    "glscl ingest ~/videos": "the user's own collection; ingesting a folder runs in tests/test_ingest_flow.py",
    "glscl ingest train.json": "needs ActivityNet and internet for the OpenAI weights (local files: test_weight_files)",
    "glscl ingest clips.parquet --db s3": "needs an S3 endpoint: tests/test_s3.py runs ingest against moto",
    "glscl ingest ~/videos --db s3": "needs an S3 endpoint: tests/test_s3.py runs ingest against moto",
    "glscl ingest ~/videos --ray-address": "needs a Ray cluster: tests/test_ray_cluster.py starts one",
    "glscl maintain --db s3": "needs an S3 endpoint: tests/test_s3.py runs maintain against moto",
    "glscl train --db ./data/lancedb": "the paper head starts from ViT-B-32's text tower, which the demo's tiny "
    "features lack; test_each_flow_command_reuses_the_local_server trains the demo's with --head tiny",
    "glscl train --mode full": "a fragment ('...'); full mode runs in tests/test_weight_files.py",
    "glscl train --workers 2": "a fragment ('...'); Ray Train workers run in tests/test_train_flow.py",
    "glscl reproduce activitynet train.json": "needs ActivityNet Captions and its videos",
    "glscl reproduce activitynet --dry-run": "runs in tests/test_reproduce.py (and test_weight_files.py)",
    "GLSCL_SERVE_TOKEN=... glscl serve": "listens on every interface; token auth runs in tests/test_serve.py",
    "glscl serve --checkpoint": "the demo's printed serve line, the same command, runs as printed in test_demo.py",
    "glscl maintain --db ./data/lancedb --table": "the maintain line above with --table and --retain-hours, which "
    "tests/test_maintain.py runs",
}


def readme_commands() -> list[str]:
    """The `glscl` lines of the README's code blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if re.match(r"^(\S+=\S+ )?glscl ", line):
                commands.append(line)
    return commands


@pytest.mark.slow(seconds=45)
def test_every_readme_example_runs_or_says_why_not(user, demo, tmp_path):
    """Run as printed (optional [...] parts left out) in a folder where ./data holds the demo's database and run
    folder at the examples' default paths, as `glscl ingest` and `glscl train` would have left them."""
    shutil.copytree(demo.db, tmp_path / "data" / "lancedb")
    shutil.copytree(Path(demo.checkpoint).parent, tmp_path / "data" / "runs" / "train")
    env = {**user.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ran, reasons = [], []
    for command in readme_commands():
        reason = next((why for start, why in README_NOT_RUN.items() if command.startswith(start)), None)
        if reason is not None:
            reasons.append(reason)
            continue
        line = re.sub(r"\s*\[[^\]]*\]", "", command)
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        ran.append(line)
    assert len(ran) >= 7 and len(ran) + len(reasons) == len(readme_commands()), ran
    assert {line.split()[1] for line in ran} >= {"evaluate", "index", "query", "runs", "tables", "maintain"}
