"""End to end: videos made with ffmpeg -> the Prefect ingest flow on a local Ray -> LanceDB tables, read back
with a plain lancedb client; idempotency, renamed files, bad inputs, and a run killed half-way."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import lancedb
import numpy as np
import pytest
from conftest import make_bad_files, make_video

from glscl.backbone import Backbone, normalise_rows
from glscl.backbone_config import BackboneConfig
from pipelines.cli import main
from pipelines.configs import IngestConfig
from pipelines.ingest import EXIT_SOME_FAILED, ingest_flow
from schemas.store import StoreConfig
from schemas.tables import ALL_TABLES, SCHEMA_VERSION_KEY
from workers.ingest.decode import decode_frames
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import SourceOptions
from workers.ray_config import RayConfig

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")

CLIPS = {
    "v_red": (["red", "red"], ["A red screen.", "It stays red."]),
    "v_blue_green": (["blue", "green"], ["A blue screen.", "Then green."]),
    "v_yellow": (["yellow", "white"], ["A yellow screen.", "Then white."]),
    "v_purple": (["purple", "black"], ["A purple screen.", "Then black."]),
}
SAMPLING = SamplingConfig("uniform", 4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    annotations = {}
    for video_id, (colours, sentences) in CLIPS.items():
        make_video(root / "videos" / f"{video_id}.mp4", colours)
        annotations[video_id] = {"duration": 2.0, "timestamps": [[0, 1], [1, 2]], "sentences": sentences}
    for kind, path in make_bad_files(root / "videos").items():
        path.rename(root / "videos" / f"v_bad_{kind}{path.suffix}")
        annotations[f"v_bad_{kind}"] = {"duration": 1.0, "timestamps": [[0, 1]], "sentences": [f"{kind} file."]}
    annotations["v_not_on_disk"] = {"duration": 1.0, "timestamps": [[0, 1]], "sentences": ["Gone."]}
    (root / "train.json").write_text(json.dumps(annotations))
    return root


def config_for(dataset, db, **overrides) -> IngestConfig:
    settings = {
        "sources": (str(dataset / "train.json"),),
        "store": StoreConfig(str(db)),
        "sampling": SAMPLING,
        "source_options": SourceOptions(video_root=str(dataset / "videos"), dataset="colours"),
        "max_words": 16,
        "shard_size": 3,
    }
    return IngestConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def ingested(dataset, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "lancedb"
    summary = ingest_flow(config_for(dataset, db))
    return db, summary


def test_tables_rows_and_schemas(ingested):
    db_path, summary = ingested
    db = lancedb.connect(str(db_path))
    assert set(db.list_tables().tables) == {spec.name for spec in ALL_TABLES}
    for spec in ALL_TABLES:
        assert db.open_table(spec.name).schema.metadata[SCHEMA_VERSION_KEY] == b"1"
    videos = {r["source_id"]: r for r in db.open_table("videos").to_arrow().to_pylist()}
    assert len(videos) == 8
    assert {k for k, r in videos.items() if r["status"] == "ok"} == set(CLIPS)
    assert videos["v_red"]["duration_s"] == pytest.approx(2.0, abs=0.05) and videos["v_red"]["split"] == "train"
    assert videos["v_bad_empty"]["error"] == "empty file (0 bytes)"
    assert videos["v_bad_audio"]["error"] == "no video stream (audio-only file)"
    assert "ffprobe cannot read the file" in videos["v_bad_garbage"]["error"]
    assert videos["v_bad_truncated"]["status"] == "failed"
    frames = db.open_table("frames").to_arrow()
    assert frames.num_rows == 4
    row = frames.to_pylist()[0]
    assert len(row["features"]) == 4 and len(row["features"][0]) == 64 and row["frame_mask"] == [True] * 4
    assert row["model_id"] == "glscl-tiny@random-seed0" and json.loads(row["sampling"])["num_frames"] == 4
    captions = db.open_table("captions").to_arrow()
    assert captions.num_rows == 4 * 3 + 4 * 2  # sentences + paragraph: two per good video, one per bad one
    paragraphs = [r["text"] for r in captions.to_pylist() if r["kind"] == "paragraph"]
    assert "A blue screen. Then green." in paragraphs
    assert db.open_table("texts").count_rows() == captions.num_rows
    assert summary.counts["ok"] == 4 and summary.counts["failed"] == 4 and summary.counts["missing"] == 1
    assert summary.exit_code == EXIT_SOME_FAILED
    runs = {r["run_id"]: r for r in db.open_table("runs").to_arrow().to_pylist()}
    run = runs[summary.run_id]
    assert run["status"] == "completed_with_failures" and json.loads(run["counts"])["ok"] == 4


def test_vector_search_finds_the_video_of_a_known_frame(ingested, dataset):
    db_path, _ = ingested
    backbone = Backbone(BackboneConfig())
    frames = lancedb.connect(str(db_path)).open_table("frames")
    videos = lancedb.connect(str(db_path)).open_table("videos").to_arrow().to_pylist()
    ids = {r["video_id"]: r["source_id"] for r in videos}
    for source_id in CLIPS:
        decoded = decode_frames(dataset / "videos" / f"{source_id}.mp4", SAMPLING, backbone.image_size)
        query = normalise_rows(backbone.encode_frames(decoded.frames[decoded.mask]).mean(axis=0))
        hit = frames.search(query.tolist(), vector_column_name="vector").limit(1).to_list()[0]
        assert ids[hit["video_id"]] == source_id


def test_second_run_writes_nothing(ingested, dataset):
    db_path, _ = ingested
    db = lancedb.connect(str(db_path))
    before = {name: db.open_table(name).version for name in ("videos", "frames", "captions", "texts")}
    summary = ingest_flow(config_for(dataset, db_path))
    assert summary.counts["pending"] == 0 and summary.counts["known_failed"] == 4
    assert summary.counts["already_ingested"] == 4
    after = {name: db.open_table(name).version for name in before}
    assert after == before


def test_renamed_file_is_the_same_video(ingested, dataset, tmp_path):
    db_path, _ = ingested
    shutil.copy(dataset / "videos" / "v_red.mp4", tmp_path / "renamed-red.mp4")
    summary = ingest_flow(config_for(dataset, db_path, sources=(str(tmp_path),)))
    assert summary.counts["already_ingested"] == 1 and summary.counts.get("ok", 0) == 0
    assert lancedb.connect(str(db_path)).open_table("videos").count_rows() == 8


def test_retry_failed_attempts_failed_videos_again(ingested, dataset):
    db_path, _ = ingested
    summary = ingest_flow(config_for(dataset, db_path, retry_failed=True))
    assert summary.counts["pending"] == 4 and summary.counts["failed"] == 4
    assert lancedb.connect(str(db_path)).open_table("videos").count_rows() == 8


def test_cli_bad_manifest_fails_fast_and_stores_nothing(tmp_path, capsys):
    manifest = tmp_path / "list.csv"
    manifest.write_text("file\nx.mp4\n")
    code = main(["ingest", str(manifest), "--db", str(tmp_path / "db")])
    assert code == 2
    assert "list.csv: a manifest needs a 'path' column" in capsys.readouterr().err
    [run] = lancedb.connect(str(tmp_path / "db")).open_table("runs").to_arrow().to_pylist()
    assert run["status"] == "failed" and "SourceError" in run["error"]
    assert not lancedb.connect(str(tmp_path / "db")).list_tables().tables.count("videos")


def test_cli_exit_code_for_some_failed_inputs(dataset, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(dataset / "videos" / "v_yellow.mp4", folder / "good.mp4")
    shutil.copy(dataset / "videos" / "v_bad_garbage.avi", folder / "bad.avi")
    code = main(["ingest", str(folder), "--db", str(tmp_path / "db"), "--frames", "2", "--json"])
    assert code == EXIT_SOME_FAILED
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["ok"] == 1 and printed["counts"]["failed"] == 1


def _frames_rows(db_path) -> int:
    try:
        return lancedb.connect(str(db_path)).open_table("frames").count_rows()
    except (ValueError, FileNotFoundError):
        return 0


@pytest.mark.slow(seconds=33)
def test_run_killed_half_way_resumes_without_duplicates(tmp_path):
    folder = tmp_path / "videos"
    colours = ["red", "blue", "green", "yellow", "white", "purple", "orange", "cyan"]
    for index, colour in enumerate(colours):
        make_video(folder / f"clip{index}.mp4", [colour, colours[(index + 1) % len(colours)]])
    db_path = tmp_path / "db"
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "ingest",
        str(folder),
        "--db",
        str(db_path),
        "--frames",
        "4",
        "--shard-size",
        "2",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _frames_rows(db_path) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    stored = _frames_rows(db_path)
    assert 2 <= stored < len(colours), "the run should have been stopped after its first shard"
    summary = ingest_flow(
        IngestConfig(
            sources=(str(folder),), store=StoreConfig(str(db_path)), sampling=SAMPLING, shard_size=2, ray=RayConfig()
        )
    )
    assert summary.counts["already_ingested"] == stored and summary.counts["ok"] == len(colours) - stored
    frames = lancedb.connect(str(db_path)).open_table("frames").to_arrow()
    ids = frames.column("video_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(colours)
    assert np.all(np.array(frames.column("num_frames").to_pylist()) == 4)
