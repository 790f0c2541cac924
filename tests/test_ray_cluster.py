"""Cluster mode: a real two-node Ray cluster on loopback (`ray start --head` plus a worker node, each in its own
process group so that stopping them leaves any other Ray alone, with Ray's token authentication on), and
`glscl ingest`, `evaluate`, `index --gallery-shards` and `query --gallery-shards` through it."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import pytest
import torch
from conftest import make_video, reported_port

from benchmarks.synthetic_gallery import GalleryConfig, build_gallery
from glscl.backbone_config import BackboneConfig
from glscl.checkpoint import save_checkpoint
from glscl.config import TINY_HEAD, GLSCLConfig
from glscl.model import GLSCL

RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def start_node(log: Path, *args: str) -> subprocess.Popen:
    """`ray start --block` in its own process group, its output in `log`. Every port it binds is its own: 0 (the
    operating system picks one as Ray binds it) where Ray's default is a fixed port that the session's Ray may hold
    already (the dashboard agent's 52365), and Ray's random choice elsewhere."""
    command = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    command += ["--dashboard-agent-listen-port=0", *args]
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=CLUSTER_ENV)


def wait_for_nodes(address: str, count: int, timeout: float = 120) -> None:
    probe = (
        f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
        "print(len([n for n in ray.nodes() if n['Alive']]))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=CLUSTER_ENV)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes")


@pytest.fixture
def cluster(tmp_path):
    """A head on a port it picks itself (and a temporary directory apart from the session's Ray) and one worker
    node; returns the head's address."""
    temp_dir = tempfile.mkdtemp(prefix="glscl-ray-")  # short: Ray's socket paths under it must fit 107 bytes
    head = start_node(
        tmp_path / "head.log", "--head", "--port=0", "--include-dashboard=false", f"--temp-dir={temp_dir}"
    )
    nodes = [head]
    try:
        port = reported_port(head, tmp_path / "head.log", r"--address='[^']*:(\d+)'")
        address = f"127.0.0.1:{port}"
        wait_for_nodes(address, 1)
        nodes.append(start_node(tmp_path / "worker.log", f"--address={address}"))
        wait_for_nodes(address, 2)
        yield address
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def glscl(*args: str) -> str:
    """A glscl command as the user runs it, in its own process; its standard output."""
    command = [sys.executable, "-m", "pipelines.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=CLUSTER_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow(seconds=120)
def test_ingest_and_evaluate_through_a_two_node_cluster(cluster, tmp_path):
    for index, colour in enumerate(["red", "blue", "green", "yellow", "white", "black"]):
        make_video(tmp_path / "videos" / f"clip{index}.mp4", [colour])
    db = tmp_path / "db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "ingest",
            str(tmp_path / "videos"),
            "--db",
            str(db),
            "--frames",
            "2",
            "--ray-address",
            cluster,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=CLUSTER_ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frames = lancedb.connect(str(db)).open_table("frames").to_arrow()
    assert frames.num_rows == 6 and len(set(frames.column("video_id").to_pylist())) == 6
    search_the_ingested_videos_in_two_gallery_shards(cluster, db, frames["sampling_hash"][0].as_py(), tmp_path)
    gallery = tmp_path / "gallery"
    checkpoint = build_gallery(GalleryConfig(str(gallery), videos=24, frames=4, dim=16, words=5))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--db",
            str(gallery),
            "--shard-videos",
            "10",
            "--output",
            str(tmp_path / "report"),
            "--ray-address",
            cluster,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=CLUSTER_ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["shards"] == 3 and report["videos"] == report["texts"] == 24
    assert report["nodes"] == 2, "the shard actors are spread over both nodes of the cluster"


def search_the_ingested_videos_in_two_gallery_shards(cluster: str, db: Path, sampling_hash: str, tmp_path: Path):
    """Each node holds one 1-CPU shard actor (so both nodes serve); the merged ranking is the unsharded index's."""
    torch.manual_seed(0)
    head = GLSCLConfig(embed_dim=BackboneConfig().embed_dim, max_frames=2, max_words=32, **TINY_HEAD)
    extra = {"backbone_model_id": BackboneConfig().model_id, "sampling_hash": sampling_hash, "max_words": 32}
    checkpoint = str(save_checkpoint(tmp_path / "checkpoint", GLSCL(head), head, extra))
    where = ["--checkpoint", checkpoint, "--db", str(db)]
    sharded = json.loads(glscl("index", *where, "--gallery-shards", "2", "--ray-address", cluster, "--json"))
    assert sharded["added"] == 6 and [shard["table"][-9:] for shard in sharded["shards"]] == ["shard0of2", "shard1of2"]
    assert json.loads(glscl("index", *where, "--ray-address", cluster, "--json"))["added"] == 6
    query = ["query", "a red screen", "-k", "6", *where, "--json"]
    single = json.loads(glscl(*query))
    merged = json.loads(glscl(*query, "--gallery-shards", "2", "--ray-address", cluster))
    assert merged["mode"] == "sharded" and len(merged["hits"]) == 6
    assert [hit["video_id"] for hit in merged["hits"]] == [hit["video_id"] for hit in single["hits"]]
    assert [hit["score"] for hit in merged["hits"]] == pytest.approx([hit["score"] for hit in single["hits"]], abs=1e-5)
