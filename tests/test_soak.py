"""The short soak: `glscl bench soak` as a user runs it (a subprocess with its own Prefect home and local Ray),
three batches ingested and indexed with a fault made to each of a command's first three attempts (its busy Ray
workers, its process group, the Prefect server, in turn) while two clients query `glscl serve`. Then the audit is
shown to catch what the chaos could have done: a video row stored twice (a commit without the key merge) and a video
dropped from the index."""

import json
import subprocess
import sys

import pytest

from benchmarks.chaos import FAULTS
from benchmarks.soak_audit import Expected, audit_tables
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import VIDEO_INDEX_PREFIX, VIDEOS


@pytest.mark.slow(seconds=220)
def test_short_soak_converges_with_nothing_lost(tmp_path):
    root, report = tmp_path / "soak", tmp_path / "soak.json"
    command = [sys.executable, "-m", "pipelines.cli", "bench", "soak", "--root", str(root), "--videos", "24"]
    command += ["--batches", "3", "--clients", "2", "--min-rows", "8", "--fault-share", "1", "--out", str(report)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["passed"], finished.stdout
    # All three kinds of fault were made (the plan is seeded), most found their target (a fault drawn after its
    # command ended finds none), and the killed commands were re-run to the end.
    assert all(result["faults"][fault]["made"] >= 1 for fault in FAULTS), result["faults"]
    assert sum(f["hit"] for f in result["faults"].values()) >= 2, result["faults"]
    assert result["reruns"] >= 1 and result["unfaulted_failures"] == 0, result["commands"]
    assert result["queries"]["by_status"].get("200", 0) >= 20, result["queries"]
    assert result["videos"]["failed"] == 3 and result["videos"]["sources"] == 27, result["videos"]

    catalog = Catalog(StoreConfig(str(root / "lancedb")))
    videos = catalog.scan(VIDEOS, ["video_id", "status"]).to_pylist()
    expected = Expected(
        ok={v["video_id"] for v in videos if v["status"] == "ok"},
        failed={v["video_id"] for v in videos if v["status"] == "failed"},
        sources=set(),
    )
    index_name = next(name for name in catalog.table_names() if name.startswith(VIDEO_INDEX_PREFIX))
    assert audit_tables(catalog, index_name, expected).problems == []
    duplicate = catalog.open(VIDEOS).search().where(f"video_id = '{sorted(expected.ok)[0]}'").to_arrow()
    catalog.open(VIDEOS).add(duplicate)
    dropped = sorted(expected.ok)[1]
    catalog.open_table(index_name).delete(f"video_id = '{dropped}'")
    problems = audit_tables(catalog, index_name, expected).problems
    assert any(p.startswith("videos: 1 videos more than once") for p in problems), problems
    assert any(p.startswith(f"{index_name}: 1 videos missing") and dropped in p for p in problems), problems
