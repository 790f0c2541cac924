"""`glscl demo` at a tiny size: generates the synthetic dataset, ingests both splits, prints the overview."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import lancedb
import pytest

from pipelines.configs import DemoConfig
from pipelines.demo import run_demo_flow
from schemas.store import StoreConfig

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")


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
    # It ends searchable: the printed query command, run as the user would, answers from the demo's index.
    query_line = next(line for line in printed.splitlines() if line.startswith("glscl query "))
    assert "--checkpoint" in query_line and str(tmp_path / "db") in query_line
    command = shlex.split(query_line)
    console_script = str(Path(sys.executable).parent / command[0])  # the venv's `glscl`, as the user runs it
    done = subprocess.run([console_script, *command[1:], "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "a query prints its result and nothing else (open_clip's notice stays off)"
    hits = json.loads(done.stdout)["hits"]
    assert len(hits) == 9 and {hit["split"] for hit in hits} == {"train", "val_1"}
    assert any(line.startswith("glscl serve ") for line in printed.splitlines())
