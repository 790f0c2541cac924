"""Faults with real components: concurrent writers on the same tables (the committer alone, then two whole ingest
runs on overlapping inputs), a Ray worker process killed (SIGKILL) mid-ingest, and an ingest process killed after
a shard is committed but before its run records its outcome in `runs`. (A whole ingest process killed half-way,
a tampered checkpoint and a Prefect server stopped mid-run have their own tests in test_ingest_flow.py,
test_checkpoint.py and test_prefect_server.py.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import make_video

from benchmarks.chaos import descendants_named, process_tree
from pipelines.configs import IngestConfig
from pipelines.ingest import ingest_flow
from schemas.catalog import Catalog, MergeOutcome
from schemas.rows import videos_table
from schemas.store import StoreConfig
from schemas.tables import FRAMES, RUNS, VIDEOS
from workers.ingest.sampling import SamplingConfig

COLOURS = ["red", "blue", "green", "yellow", "white", "purple"]
SAMPLING = SamplingConfig("uniform", 4)


def make_clips(folder: Path, indices: range) -> Path:
    """Distinct two-colour clips, named by index (the same index gives the same content, hence the same id)."""
    for index in indices:
        make_video(folder / f"clip{index}.mp4", [COLOURS[index], COLOURS[(index + 1) % len(COLOURS)]])
    return folder


def stored(db: Path) -> tuple[Counter, Counter, list[dict]]:
    """Video ids counted in `videos` and in `frames`, and the `runs` rows."""
    catalog = Catalog(StoreConfig(str(db)))
    videos = Counter(catalog.scan(VIDEOS, ["video_id"]).column("video_id").to_pylist())
    frames = Counter(catalog.scan(FRAMES, ["video_id"]).column("video_id").to_pylist())
    return videos, frames, catalog.scan(RUNS, ["run_id", "status", "counts"]).to_pylist()


def video_rows(ids: list[str]) -> pa.Table:
    """`videos` rows for the given ids, as the committer writes them."""
    rows = [
        {
            "video_id": video_id,
            "source_id": video_id,
            "source_path": f"/videos/{video_id}.mp4",
            "dataset": "faults",
            "split": "train",
            "status": "ok",
            "duration_s": 1.0,
            "fps": 10.0,
            "width": 96,
            "height": 64,
            "video_codec": "h264",
            "has_audio": False,
            "size_bytes": 1000,
        }
        for video_id in ids
    ]
    return videos_table(rows, "faults")


def test_concurrent_commits_store_each_key_once(tmp_path):
    store = StoreConfig(str(tmp_path / "db"))
    Catalog(store).open(VIDEOS)
    start = threading.Barrier(2)

    def writer(offset: int) -> list[MergeOutcome]:
        """15 rounds of 4 keys, 2 of them new and 2 the other writer's, both writers starting each round at once."""
        catalog = Catalog(store)
        outcomes = []
        for round_ in range(15):
            start.wait()
            outcomes.append(catalog.merge(VIDEOS, video_rows([f"v{offset + 2 * round_ + j}" for j in range(4)])))
        return outcomes

    with ThreadPoolExecutor(2) as pool:
        outcomes = [o for future in [pool.submit(writer, 0), pool.submit(writer, 1)] for o in future.result()]
    ids = Counter(Catalog(store).scan(VIDEOS, ["video_id"]).column("video_id").to_pylist())
    assert len(ids) == 33 and set(ids.values()) == {1}
    # The writers did collide: commits that met the other's were retried on top of it (every round in practice),
    # and each key was inserted by exactly one of them.
    assert sum(o.attempts > 1 for o in outcomes) >= 5, [o.attempts for o in outcomes]
    assert sum(o.inserted for o in outcomes) == 33


@pytest.mark.usefixtures("ray_local", "prefect_server")
@pytest.mark.slow(seconds=42)
def test_two_ingest_runs_on_overlapping_inputs(tmp_path):
    first, second = make_clips(tmp_path / "first", range(4)), tmp_path / "second"
    second.mkdir()
    for index in range(2, 4):
        shutil.copy(first / f"clip{index}.mp4", second / f"copy{index}.mp4")
    make_clips(second, range(4, 6))
    db = tmp_path / "db"
    configs = [
        IngestConfig(sources=(str(folder),), store=StoreConfig(str(db)), sampling=SAMPLING, shard_size=1)
        for folder in (first, second)
    ]
    with ThreadPoolExecutor(2) as pool:
        summaries = [future.result() for future in [pool.submit(ingest_flow, config) for config in configs]]
    videos, frames, runs = stored(db)
    assert len(videos) == 6 and set(videos.values()) == {1}
    assert frames == videos
    assert sorted(r["status"] for r in runs) == ["completed", "completed"]
    # The runs overlapped: each found the two shared clips still pending and encoded them, yet the merges on the
    # key stored each video's frames once (one run's commit of a shared clip inserted nothing).
    assert [s.counts["ok"] for s in summaries] == [4, 4]
    assert sum(s.counts["frames_rows_written"] for s in summaries) == 6


@pytest.mark.slow(seconds=50)
def test_ray_worker_killed_mid_ingest_is_retried(tmp_path):
    folder, db = make_clips(tmp_path / "videos", range(6)), tmp_path / "db"
    command = [sys.executable, "-m", "pipelines.cli", "ingest", str(folder), "--db", str(db), "--frames", "4"]
    command += ["--shard-size", "2", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # SIGKILL an encode actor, as a lost worker would be, once it holds a batch: Ray Data fuses the decode stage
        # into the actor, so an ffprobe/ffmpeg process under it is decoding one of the batch's videos.
        deadline, killed = time.monotonic() + 240, []
        while not killed and process.poll() is None and time.monotonic() < deadline:
            tree = process_tree()
            actors = descendants_named(tree, process.pid, ("FrameEncoder",))
            killed = [pid for pid in actors if descendants_named(tree, pid, ("ffprobe", "ffmpeg"))]
            time.sleep(0.02)
        assert killed, "no encode actor was seen decoding a video under the ingest run"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        output, errors = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, errors.decode()[-2000:]
    assert "worker died or was killed" in errors.decode(), "the kill hit the actor while it held work"
    counts = json.loads(output)["counts"]
    assert counts["ok"] == 6 and counts["failed"] == 0, "Ray restarted the actor and retried its batch"
    videos, frames, runs = stored(db)
    assert len(frames) == 6 and set(frames.values()) == {1} and frames == videos
    assert [r["status"] for r in runs] == ["completed"]


def manifests(table: Path) -> int:
    """How many versions a Lance table has committed: one `.manifest` file each, renamed into place atomically."""
    try:
        return sum(name.endswith(".manifest") for name in os.listdir(table / "_versions"))
    except FileNotFoundError:
        return 0


@pytest.mark.usefixtures("ray_local", "prefect_server")
@pytest.mark.slow(seconds=32)
def test_killed_after_a_commit_before_the_run_is_recorded(tmp_path):
    folder, db = make_clips(tmp_path / "videos", range(4)), tmp_path / "db"
    command = [sys.executable, "-m", "pipelines.cli", "ingest", str(folder), "--db", str(db), "--frames", "4"]
    command += ["--shard-size", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # `frames` is created (version 1) at the first shard's commit (version 2); `runs` holds the 'running' row from
    # the start until the outcome is written after the last shard. Stop the process at the first frames commit.
    deadline = time.monotonic() + 240
    while manifests(db / "frames.lance") < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    videos, frames, runs = stored(db)
    assert len(frames) == 2 and frames == videos, "the first shard is committed whole: each video row has its frames"
    (killed,) = runs
    assert killed["status"] == "running", "the run was stopped before it recorded its outcome"

    summary = ingest_flow(IngestConfig(sources=(str(folder),), store=StoreConfig(str(db)), sampling=SAMPLING))
    assert summary.counts["already_ingested"] == 2 and summary.counts["ok"] == 2
    videos, frames, runs = stored(db)
    assert len(frames) == 4 and set(frames.values()) == {1} and frames == videos
    status = {r["run_id"]: (r["status"], json.loads(r["counts"])) for r in runs}
    assert status == {killed["run_id"]: ("running", {}), summary.run_id: ("completed", summary.counts)}
