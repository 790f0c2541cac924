"""`glscl demo` at a tiny size: generates the synthetic dataset, ingests both splits, prints the overview."""

import json
import subprocess

import lancedb
import pytest
from conftest import wait_for_health

from pipelines.configs import DemoConfig
from pipelines.demo import run_demo_flow
from schemas.store import StoreConfig

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")


@pytest.mark.slow(seconds=37)
def test_demo_generates_and_ingests_both_splits(tmp_path):
    config = DemoConfig(
        out_dir=str(tmp_path),
        store=StoreConfig(str(tmp_path / "db")),
        train_videos=6,
        val_videos=3,
        train_epochs=2,
        batch_size=4,
    )
    printed, exit_code = run_demo_flow(config)
    assert exit_code == 0
    assert "RANDOM weights" in printed and "| train | 6 | 0 | 6 |" in printed and "| val_1 | 3 | 0 | 3 |" in printed
    db = lancedb.connect(str(tmp_path / "db"))
    videos = db.open_table("videos").to_arrow().to_pylist()
    assert {v["dataset"] for v in videos} == {"synthetic"} and len(videos) == 9
    annotations = json.loads((tmp_path / "val_1.json").read_text())
    paragraphs = {c["text"] for c in db.open_table("captions").to_arrow().to_pylist() if c["kind"] == "paragraph"}
    assert {" ".join(a["sentences"]) for a in annotations.values()} <= paragraphs
    assert "| GLSCL trained (best, step" in printed and "| mean pooling (no training) |" in printed
    assert (tmp_path / "train" / "best" / "model.safetensors").exists()
    assert "held-out two-event videos" in printed and "| GLSCL trained |" in printed
    # It ends searchable: the printed lines, pasted as printed into a fresh shell in another folder whose PATH
    # lacks the virtual environment (a new user's terminal), answer from the demo's index.
    lines = printed[printed.index("## Search what the demo built") :].split("```")[1].strip().splitlines()
    query_line, serve_line = lines
    assert " query " in query_line and " serve " in serve_line and str(tmp_path / "db") in query_line
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        ["bash", "-c", query_line], cwd=elsewhere, env=shell, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "a query prints its result and nothing else (open_clip's notice stays off)"
    ranks = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(ranks) == 9, done.stdout
    served = subprocess.Popen(["bash", "-c", f"exec {serve_line}"], cwd=elsewhere, env=shell, stderr=subprocess.PIPE)
    try:
        health = wait_for_health("http://127.0.0.1:8080/health", served)
        assert health["status"] == "ok", health
    finally:
        served.terminate()
        served.wait(timeout=60)
