"""Object storage end to end: a moto S3 server on 127.0.0.1, the real `glscl ingest` writing an s3:// database
through --storage-option, the rows read back with the catalogue, a second run writing nothing, `glscl
maintain` compacting and pruning the S3 tables, and `glscl index` + `glscl query` on the same database."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import boto3
import pytest
import torch
from conftest import make_video, reported_port

from glscl.backbone_config import BackboneConfig
from glscl.checkpoint import save_checkpoint
from glscl.config import TINY_HEAD, GLSCLConfig
from glscl.model import GLSCL
from pipelines.cli import main
from schemas.catalog import Catalog, sql_in
from schemas.store import StoreConfig
from schemas.tables import CAPTIONS, FRAMES, RUNS, TEXTS, VIDEOS
from workers.index.segment_rows import current_segment_rows
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher

pytestmark = [
    pytest.mark.usefixtures("ray_local", "prefect_server"),
    pytest.mark.filterwarnings(r"ignore:optimize\(cleanup_older_than=0\):UserWarning"),
]

BUCKET = "glscl-test"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": "us-east-1"}


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server: its endpoint and the LanceDB storage options that reach it."""

    endpoint: str

    @property
    def storage_options(self) -> dict[str, str]:
        """What `--storage-option` passes to LanceDB for this server (plain http, static test keys)."""
        return {"aws_endpoint": self.endpoint, "allow_http": "true", **CREDENTIALS}

    def cli_options(self, uri: str) -> list[str]:
        """--db URI plus one --storage-option per setting."""
        pairs = [f"{key}={value}" for key, value in self.storage_options.items()]
        return ["--db", uri, *(arg for pair in pairs for arg in ("--storage-option", pair))]

    def client(self):
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
            region_name=CREDENTIALS["aws_region"],
        )

    def object_keys(self) -> list[str]:
        """Every object key in the test bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server on a port it picks itself, in its own process group, with one empty bucket; the whole group
    is killed at the end."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port = reported_port(process, log, r"Running on http://127\.0\.0\.1:(\d+)", timeout=60)
        server = S3Server(f"http://127.0.0.1:{port}")
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two tiny videos with one caption each, listed in a CSV manifest."""
    root = tmp_path_factory.mktemp("s3-videos")
    make_video(root / "red.mp4", ["red", "blue"])
    make_video(root / "green.mp4", ["green", "yellow"])
    path = root / "list.csv"
    path.write_text(
        "id,path,split,caption\nred,red.mp4,train,A red screen then blue.\n"
        "green,green.mp4,train,A green screen then yellow.\n"
    )
    return path


@pytest.fixture(scope="module")
def ingested(s3_server, manifest):
    """The real `glscl ingest` of the manifest into s3://BUCKET/db; returns the database URI and the run's id."""
    uri, report = f"s3://{BUCKET}/db", io.StringIO()
    with contextlib.redirect_stdout(report):
        code = main(["ingest", str(manifest), *s3_server.cli_options(uri), "--frames", "4", "--json"])
    assert code == 0
    return uri, json.loads(report.getvalue())["run_id"]


def test_ingest_writes_the_tables_to_s3(s3_server, ingested):
    uri, run_id = ingested
    catalog = Catalog(StoreConfig(uri, s3_server.storage_options))
    videos = catalog.scan(VIDEOS, ["source_id", "status", "split"]).to_pylist()
    assert sorted(v["source_id"] for v in videos) == ["green", "red"]
    assert {(v["status"], v["split"]) for v in videos} == {("ok", "train")}
    frames = catalog.scan(FRAMES, ["num_frames", "frame_mask"]).to_pylist()
    assert [f["num_frames"] for f in frames] == [4, 4] and all(f["frame_mask"] == [True] * 4 for f in frames)
    captions = catalog.scan(CAPTIONS, ["text"])["text"].to_pylist()
    assert sorted(captions) == ["A green screen then yellow.", "A red screen then blue."]
    assert catalog.open_existing(TEXTS).count_rows() == 2
    runs = {r.pop("run_id"): r for r in catalog.scan(RUNS, ["run_id", "flow", "status"]).to_pylist()}
    assert runs[run_id] == {"flow": "ingest", "status": "completed"}
    assert any(key.startswith("db/frames.lance/data/") for key in s3_server.object_keys()), "the data is in the bucket"


def test_second_ingest_writes_nothing(s3_server, ingested, manifest, capsys):
    uri, _ = ingested
    catalog = Catalog(StoreConfig(uri, s3_server.storage_options))
    bookkeeping = {"runs", "run_heartbeats"}  # every run records itself
    before = {name: v for name, v in catalog.versions().items() if name not in bookkeeping}
    capsys.readouterr()
    assert main(["ingest", str(manifest), *s3_server.cli_options(uri), "--frames", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["already_ingested"] == 2 and summary["counts"]["pending"] == 0
    assert {name: v for name, v in catalog.versions().items() if name not in bookkeeping} == before


def test_maintain_compacts_and_prunes_the_s3_tables(s3_server, ingested, capsys):
    uri, _ = ingested
    capsys.readouterr()
    assert main(["maintain", *s3_server.cli_options(uri), "--retain-hours", "0", "--json"]) == 0
    report = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert set(report) == {"videos", "frames", "captions", "texts", "runs", "run_heartbeats"}
    for name, upkeep in report.items():
        assert upkeep["after"]["rows"] == upkeep["before"]["rows"], name
        assert upkeep["after"]["versions"] == 1 < upkeep["before"]["versions"], name
    runs = report["runs"]
    assert runs["after"]["fragments"] < runs["before"]["fragments"]
    catalog = Catalog(StoreConfig(uri, s3_server.storage_options))
    assert catalog.open_existing(VIDEOS).count_rows() == 2
    assert {r["flow"] for r in catalog.scan(RUNS, ["flow"]).to_pylist()} == {"ingest", "maintain"}


def test_index_and_query_on_s3(s3_server, ingested, tmp_path, capsys):
    uri, _ = ingested
    catalog = Catalog(StoreConfig(uri, s3_server.storage_options))
    [sampling_hash] = set(catalog.scan(FRAMES, ["sampling_hash"])["sampling_hash"].to_pylist())
    torch.manual_seed(0)
    head = GLSCLConfig(embed_dim=BackboneConfig().embed_dim, max_frames=4, max_words=32, **TINY_HEAD)
    extra = {"backbone_model_id": BackboneConfig().model_id, "sampling_hash": sampling_hash, "max_words": 32}
    checkpoint = str(save_checkpoint(tmp_path / "checkpoint", GLSCL(head), head, extra))
    capsys.readouterr()
    assert main(["index", "--checkpoint", checkpoint, *s3_server.cli_options(uri), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["health_after"]["rows"] == 2
    query = ["query", "a red screen", "-k", "2", "--checkpoint", checkpoint, *s3_server.cli_options(uri)]
    assert main([*query, "--hybrid", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert sorted(h["video_id"] for h in hits) == sorted(catalog.scan(VIDEOS, ["video_id"])["video_id"].to_pylist())
    assert any(key.startswith("db/video_index_") for key in s3_server.object_keys())
    rows = ["--segment-rows", "--index-type", "IVF_FLAT", "--partitions", "1", "--min-rows", "1"]
    assert main(["index", "--checkpoint", checkpoint, *s3_server.cli_options(uri), *rows, "--json"]) == 0
    assert any(action.endswith("_segments_g1)") for action in json.loads(capsys.readouterr().out)["actions"])
    settings = SearchConfig(checkpoint, StoreConfig(uri, s3_server.storage_options), in_memory_below=0)
    engine = Searcher(settings)
    assert engine.describe()["candidate_stage"] == "segment rows" and len(engine.search("a red screen", k=2).hits) == 2
    for table in (catalog.db.open_table(engine.table.name), current_segment_rows(catalog, engine.table.name)):
        table.delete(sql_in("video_id", [hits[0]["video_id"]]))  # indexed again below, incrementally on S3
    assert (
        main(["index", "--checkpoint", checkpoint, *s3_server.cli_options(uri), *rows, "--retrain-share", "0.6"]) == 0
    )
    report = capsys.readouterr().out
    assert "indexed 1 new rows incrementally" in report, report
    assert f"appended 1 videos to {engine.table.name}_segments_g1" in report, report


def test_tables_reads_s3_configured_by_aws_environment_variables(s3_server, ingested):
    """The user's other way to reach object storage: the standard AWS_* variables, no --storage-option."""
    uri, _ = ingested
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env |= {
        "AWS_ENDPOINT": s3_server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": CREDENTIALS["aws_region"],
    }
    command = [sys.executable, "-m", "pipelines.cli", "tables", "--db", uri, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    overview = json.loads(done.stdout)
    rows = {table["name"]: table["rows"] for table in overview["tables"]}
    assert (rows["videos"], rows["frames"], rows["captions"]) == (2, 2, 2)
    assert [(s["split"], s["videos_ok"], s["frames_rows"]) for s in overview["splits"]] == [("train", 2, 2)]
