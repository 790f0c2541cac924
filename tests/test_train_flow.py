"""The train flow on tables written by the ingest flow: head-only and full fine-tuning, resume equals an
unbroken run, 2-worker Ray Train (DDP over gloo), reports and refusals."""

import json

import lancedb
import pytest
from safetensors.torch import load_file

from glscl.training import TrainConfig
from pipelines.cli import main
from pipelines.demo import DEMO_MAX_WORDS, DemoConfig, ingest_config
from pipelines.ingest import ingest_flow
from pipelines.train import TrainFlowConfig, train_flow
from schemas.catalog import StoreConfig
from workers.synthetic import SyntheticConfig, generate_synthetic_dataset
from workers.train_worker import BEST_DIR, HISTORY_FILE, LATEST_DIR

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    dataset = generate_synthetic_dataset(SyntheticConfig(out_dir=root, n_train=16, n_val=8, seed=3))
    demo = DemoConfig(out_dir=str(root), store=StoreConfig(str(root / "db")))
    assert ingest_flow(ingest_config(demo, dataset)).exit_code == 0
    return demo.store


def flow_config(store, output, **train) -> TrainFlowConfig:
    settings = {"epochs": 3, "batch_size": 8, "seed": 1, "log_every": 1, **train}
    return TrainFlowConfig(
        store=store,
        max_words=DEMO_MAX_WORDS,
        head_preset="tiny",
        train=TrainConfig(**settings),
        output_dir=str(output),
    )


def test_head_only_training_reports_against_baselines(store, tmp_path):
    summary = train_flow(flow_config(store, tmp_path / "run"))
    assert set(summary.metrics) == {
        "mean pooling (no training)",
        "GLSCL untrained head",
        f"GLSCL trained (best, step {summary.metrics[next(k for k in summary.metrics if 'trained (' in k)]['step']})",
    }
    assert summary.steps == 6 and summary.throughput_pairs_per_s > 0
    history = [json.loads(line) for line in (tmp_path / "run" / HISTORY_FILE).read_text().splitlines()]
    losses = [r["total"] for r in history if r["event"] == "step"]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0]
    assert len([r for r in history if r["event"] == "eval"]) == 3
    for folder in (LATEST_DIR, BEST_DIR):
        meta = json.loads((tmp_path / "run" / folder / "config.json").read_text())
        assert meta["extra"]["backbone_model_id"] == "glscl-tiny@random-seed0"
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert "GLSCL trained" in (tmp_path / "run" / "summary.md").read_text()
    runs = lancedb.connect(store.uri).open_table("runs").to_arrow().to_pylist()
    assert any(r["flow"] == "train" and r["status"] == "completed" for r in runs)


def test_stopped_run_resumes_to_the_unbroken_result(store, tmp_path):
    train_flow(flow_config(store, tmp_path / "unbroken", eval_every=2))
    stopped = flow_config(store, tmp_path / "resumed", eval_every=2)
    train_flow(TrainFlowConfig(**{**stopped.__dict__, "max_steps": 2}))
    train_flow(stopped)
    unbroken = load_file(str(tmp_path / "unbroken" / "state" / "training_state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state" / "training_state.safetensors"))
    assert unbroken.keys() == resumed.keys()
    assert all((unbroken[k] == resumed[k]).all() for k in unbroken)


@pytest.mark.slow
def test_two_ray_train_workers(store, tmp_path):
    config = flow_config(store, tmp_path / "ddp", epochs=2)
    summary = train_flow(TrainFlowConfig(**{**config.__dict__, "workers": 2}))
    assert summary.steps == 4
    history = [json.loads(line) for line in (tmp_path / "ddp" / HISTORY_FILE).read_text().splitlines()]
    assert len([r for r in history if r["event"] == "step"]) == 4  # rank 0 alone writes the history


def test_full_fine_tuning_decodes_frames_and_saves_the_backbone(store, tmp_path):
    summary = train_flow(flow_config(store, tmp_path / "full", epochs=1, mode="full"))
    assert summary.steps == 2
    assert (tmp_path / "full" / LATEST_DIR / "backbone.safetensors").stat().st_size > 1_000_000


def test_unknown_split_is_a_clear_error(store, tmp_path, capsys):
    code = main(["train", "--db", store.uri, "--split", "nope", "--output", str(tmp_path / "x")])
    assert code == 2
    assert "split 'nope' has no ingested videos" in capsys.readouterr().err
