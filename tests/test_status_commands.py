"""`glscl runs` and `glscl tables`: a killed run told from a live one by its pid and heartbeat, a `runs` table
written by an older glscl, and what a small database holds, through the functions and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from pipelines.cli import main
from pipelines.runs import STALE_BEATS, RunRecorder, list_runs
from schemas.catalog import Catalog
from schemas.rows import captions_table, frames_table, now_utc, texts_table, vector_array, videos_table
from schemas.store import StoreConfig
from schemas.tables import (
    CAPTIONS,
    FRAMES,
    RUN_HEARTBEATS,
    RUNS,
    SCHEMA_VERSION_KEY,
    TEXTS,
    VIDEOS,
    video_index_spec,
)
from workers.index.config import AnnConfig
from workers.index.indexes import ensure_indexes
from workers.overview import database_overview

REPO = Path(__file__).resolve().parents[1]
# The columns of the `runs` table at schema version 1, frozen here: databases written by earlier glscl hold it.
RUNS_V1 = [
    "run_id",
    "flow",
    "status",
    "started_at",
    "finished_at",
    "params",
    "counts",
    "failures",
    "timings",
    "table_versions",
    "error",
]
CHECKPOINT = "ab" * 32
# A process that records a run start and then waits to be killed, as a flow killed mid-run does.
RUNNER = """
import sys, time
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from schemas.store import StoreConfig
print(RunRecorder(Catalog(StoreConfig(sys.argv[1])), "ingest", {}).start().run_id, flush=True)
time.sleep(600)
"""


def env() -> dict[str, str]:
    """This checkout first on the path of a subprocess."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def glscl(*args: str) -> subprocess.CompletedProcess:
    """Run `glscl ARGS` as the user does, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120
    )


def test_a_killed_run_reads_as_abandoned_and_a_live_one_as_running(tmp_path):
    store = StoreConfig(str(tmp_path / "db"))
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, store.uri], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True
    )
    try:
        run_id = runner.stdout.readline().strip()
        [alive] = list_runs(store)
        assert (alive.run_id, alive.status, alive.pid, alive.gone) == (run_id, "running", runner.pid, None)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    [killed] = list_runs(store)
    assert killed.status == "abandoned" and killed.gone == f"process {runner.pid} on {killed.host} is gone"
    assert Catalog(store).scan(RUNS, ["status"])["status"].to_pylist() == ["running"]  # judged on read only
    assert list_runs(store, status="running") == [] and list_runs(store, status="abandoned") == [killed]


def test_this_process_beats_while_running_and_stops_when_finished(tmp_path):
    store = StoreConfig(str(tmp_path / "db"))
    catalog = Catalog(store)
    run = RunRecorder(catalog, "index", {"a": 1}, heartbeat_s=0.1).start()
    first = catalog.scan(RUN_HEARTBEATS, ["heartbeat_at"])["heartbeat_at"][0].as_py()
    [view] = list_runs(store)
    assert view.status == "running" and view.pid == os.getpid()
    deadline = now_utc() + timedelta(seconds=20)
    while catalog.scan(RUN_HEARTBEATS, ["heartbeat_at"])["heartbeat_at"][0].as_py() == first:
        assert now_utc() < deadline, "no heartbeat after the first"
    run.finish("completed", {"added": 3, "rows": 3}, {}, {})
    assert not run._beats.is_alive()
    [view] = list_runs(store, now=now_utc() + timedelta(hours=1))
    assert (view.status, view.counts, view.gone) == ("completed", {"added": 3, "rows": 3}, None)


def test_a_stale_heartbeat_from_another_host_reads_as_abandoned(tmp_path):
    store = StoreConfig(str(tmp_path / "db"))
    run = RunRecorder(Catalog(store), "train", {}, host="gpu-node-7", pid=1, heartbeat_s=30).start()
    try:
        assert [v.status for v in list_runs(store)] == ["running"]  # pid 1 elsewhere is not looked up here
        late = now_utc() + timedelta(seconds=STALE_BEATS * 30 + 5)
        [view] = list_runs(store, now=late)
        assert view.status == "abandoned" and view.gone.startswith("no heartbeat from gpu-node-7 (pid 1) for ")
        assert view.duration_s < 5  # from the start to the last heartbeat
    finally:
        run.fail(RuntimeError("stopped\nsecond line"))
    [view] = list_runs(store, now=now_utc() + timedelta(hours=1))
    assert view.status == "failed" and view.error == "RuntimeError: stopped\nsecond line"


def test_a_runs_table_of_an_older_glscl_is_read_and_written(tmp_path):
    assert RUNS.schema().names == RUNS_V1 and RUNS.version == 1
    old = {
        "run_id": "ingest-old",
        "flow": "ingest",
        "status": "running",
        "started_at": now_utc() - timedelta(days=2),
        "finished_at": None,
        **dict.fromkeys(["params", "counts", "failures", "timings", "table_versions"], "{}"),
        "error": None,
    }
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("runs", pa.Table.from_pylist([old], schema=RUNS.schema()))
    store = StoreConfig(str(tmp_path / "db"))
    [view] = list_runs(store)
    assert (view.status, view.host, view.gone) == ("running", None, None)  # no heartbeat: nothing to judge by
    run = RunRecorder(Catalog(store), "maintain", {})
    with run:
        run.finish("completed", {"tables": 1}, {}, {})
    assert [(v.run_id, v.status) for v in list_runs(store)] == [(run.run_id, "completed"), ("ingest-old", "running")]
    assert [(v.run_id) for v in list_runs(store, flow="ingest", limit=1)] == ["ingest-old"]
    assert db.open_table("runs").schema.metadata[SCHEMA_VERSION_KEY] == b"1"


def video_rows(ids: list[str], split: str) -> list[dict]:
    """`videos` rows of ok videos in one split."""
    base = {"source_id": "s", "dataset": "d", "split": split, "status": "ok", "size_bytes": 1, "duration_s": 2.0}
    return [{**base, "video_id": vid, "source_path": f"/v/{vid}.mp4"} for vid in ids]


def encoded(ids: list[str], dim: int = 4) -> dict[str, np.ndarray]:
    """An encoded batch for frames_table (3 frame slots) or texts_table (2 tokens), ids in `video_id` and
    `caption_id`."""
    n = len(ids)
    return {
        "video_id": np.array(ids, dtype=object),
        "caption_id": np.array(ids, dtype=object),
        "status": np.array(["ok"] * n, dtype=object),
        "features": np.ones((n, 3, dim), np.float32),
        "frame_mask": np.ones((n, 3), bool),
        "timestamps": np.zeros((n, 3), np.float32),
        "vector": np.ones((n, dim), np.float32),
        "tokens": np.ones((n, 2, dim), np.float32),
        "token_mask": np.ones((n, 2), bool),
    }


def index_rows(ids: list[str], spec, dim: int = 4) -> pa.Table:
    """`video_index` rows for a spec with 3 frame slots, 2 concepts and 2 segments of 4-d vectors."""
    n, schema = len(ids), spec.schema(dim)
    width = schema.field("encodings").type.list_size
    return pa.table(
        {
            "video_id": ids,
            "dataset": ["d"] * n,
            "split": ["train"] * n,
            "source_path": [f"/v/{vid}.mp4" for vid in ids],
            "duration_s": [2.0] * n,
            "ingested_at": [now_utc()] * n,
            "text": [f"caption of {vid}" for vid in ids],
            "encodings": vector_array(np.zeros((n, width)), np.float16),
            "timestamps": vector_array(np.zeros((n, 3))),
            "vector_0": vector_array(np.ones((n, dim))),
            "vector_1": vector_array(np.ones((n, dim))),
            "indexed_at": [now_utc()] * n,
            "run_id": ["r"] * n,
        }
    ).cast(schema)


def small_database(root: Path) -> StoreConfig:
    """Train: 2 ok videos and 1 failed, 2 sentences and 1 paragraph, texts of two backbones; val_1: 1 ok video;
    a video index of 3 rows, indexed, then one more row added."""
    store = StoreConfig(str(root / "db"))
    catalog = Catalog(store)
    failed = {**video_rows(["f"], "train")[0], "status": "failed", "error": "empty file"}
    catalog.merge(VIDEOS, videos_table([*video_rows(["a", "b"], "train"), failed, *video_rows(["c"], "val_1")], "r"))
    catalog.merge(FRAMES, frames_table(encoded(["a", "b", "c"]), "tiny", "{}", "h", "r"), dim=4)
    caption = {"source_id": "s", "dataset": "d", "order": 0, "text": "t"}
    captions = [
        {**caption, "caption_id": "a0", "video_id": "a", "split": "train", "kind": "sentence"},
        {**caption, "caption_id": "a1", "video_id": "a", "split": "train", "kind": "sentence"},
        {**caption, "caption_id": "ap", "video_id": "a", "split": "train", "kind": "paragraph"},
        {**caption, "caption_id": "cp", "video_id": "c", "split": "val_1", "kind": "paragraph"},
    ]
    catalog.merge(CAPTIONS, captions_table(captions, "r"))
    catalog.merge(TEXTS, texts_table(encoded(["a0", "a1", "ap", "cp"]), "tiny", 32, "r"), dim=4)
    catalog.merge(TEXTS, texts_table(encoded(["ap"]), "other", 32, "r"), dim=4)
    spec = video_index_spec(CHECKPOINT, "tiny", num_queries=2, vector_dim=4, segments=2, slots=3)
    catalog.merge(spec, index_rows(["a", "b", "c"], spec), dim=4)
    ensure_indexes(catalog.open(spec, 4), AnnConfig(vector_dim=4, segments=2), 4)
    catalog.merge(spec, index_rows(["d"], spec), dim=4)
    return store


def test_tables_reports_counts_backbones_and_index_state(tmp_path):
    overview = database_overview(small_database(tmp_path))
    index_name = "video_index_" + CHECKPOINT[:16]
    rows = {t.name: (t.rows, t.schema_version) for t in overview.tables}
    assert rows == {
        "videos": (4, "1"),
        "frames": (3, "1"),
        "captions": (4, "1"),
        "texts": (5, "1"),
        index_name: (4, "3"),
    }
    splits = {s.split: s for s in overview.splits}
    train, val = splits["train"], splits["val_1"]
    assert (train.videos_ok, train.videos_failed, train.frames_rows, train.sentences, train.paragraphs) == (
        2,
        1,
        2,
        2,
        1,
    )
    assert train.texts_rows == 4 and (val.videos_ok, val.frames_rows, val.paragraphs, val.texts_rows) == (1, 1, 1, 1)
    assert overview.frames_models == {"tiny": 3} and overview.texts_models == {"tiny": 4, "other": 1}
    [index] = overview.video_indexes
    assert (index.name, index.rows, index.checkpoint_sha256, index.model_id) == (index_name, 4, CHECKPOINT, "tiny")
    assert index.vector_indexes == [] and index.fts_indexes == ["text"]  # 4 rows: below min_rows, no vector index
    assert index.scalar_indexes == ["dataset", "duration_s", "split", "video_id"]
    assert set(index.unindexed_rows.values()) == {1} and len(index.unindexed_rows) == 5


def test_glscl_runs_and_tables_commands(tmp_path, capsys):
    store = small_database(tmp_path)
    run = RunRecorder(Catalog(store), "ingest", {})
    with run:
        run.finish("completed", {"videos_ok": 3, "videos_failed": 1}, {}, {})
    listed = glscl("runs", "--db", store.uri)  # the user's path: a new process (the CLI's start-up dominates)
    assert listed.returncode == 0, listed.stderr
    assert f"| {run.run_id} | ingest | completed |" in listed.stdout and "videos_ok=3, videos_failed=1" in listed.stdout
    tables = glscl("tables", "--db", store.uri)
    assert tables.returncode == 0, tables.stderr
    assert "| train | 2 | 1 | 2 | 2 | 1 | 4 |" in tables.stdout and "| runs | 1 | 1 |" in tables.stdout
    assert main(["runs", "--db", store.uri, "--flow", "ingest", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["run_id"], shown["status"], shown["pid"]) == (run.run_id, "completed", os.getpid())
    assert main(["tables", "--db", store.uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["video_indexes"][0]["fts_indexes"] == ["text"]
    assert main(["tables", "--db", str(tmp_path / "nope")]) == 2
    assert "no database at" in capsys.readouterr().err and not (tmp_path / "nope").exists()
