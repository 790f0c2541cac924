"""`glscl reproduce activitynet --dry-run --weights FILE`: every stage at the paper's shapes (ViT-B/32 QuickGELU from
a TorchScript archive of random weights in OpenAI's layout, as OpenAI's own `ViT-B-32.pt` is; 64 frames at 1 fps,
64 words, the paper head, the authors' recipe), then a re-run that skips them all."""

import json

import pytest
from conftest import openai_torchscript_archive

from pipelines.cli import main
from pipelines.configs import STAGES

pytestmark = [pytest.mark.usefixtures("ray_local", "prefect_server"), pytest.mark.slow(seconds=175)]


def test_dry_run_runs_every_stage_at_paper_shapes_and_resumes(tmp_path, capsys):
    out = tmp_path / "anet"
    weights = ["--weights", str(openai_torchscript_archive(tmp_path / "ViT-B-32.pt"))]
    assert main(["reproduce", "activitynet", "--dry-run", *weights, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(STAGES) <= set(summary)
    assert summary["evaluate"]["model_id"].startswith("ViT-B-32-quickgelu@file-")
    assert summary["evaluate"]["videos"] == summary["evaluate"]["texts"] == 3
    frames = summary["ingest"]["counts"]
    assert frames["ok"] == 9
    timing = {row["mode"]: row for row in summary["timing"]["steps"]}
    assert set(timing) == {"head", "full"} and all(row["seconds_per_step"] > 0 for row in timing.values())
    assert timing["full"]["peak_memory_mb"] > 0
    config = json.loads((out / "train" / "best" / "config.json").read_text())
    head = config["config"]
    assert (head["max_frames"], head["max_words"], head["embed_dim"], head["num_queries"]) == (64, 64, 512, 8)
    assert (head["temporal_init"], head["temporal_activation"], config["extra"]["recipe"]) == (
        "clip",
        "quick_gelu",
        "authors",
    )
    report = (out / "report.md").read_text()
    assert "DRY RUN" in report and "| t2v | R@1 |" in report and "41.4" in report
    assert "a torchscript file (its TorchScript code defines QuickGELU)" in report and "RANDOM" not in report
    assert "## Against the authors' run" in report and "K = 8, as the checkpoint their test script evaluates" in report
    assert "10 epochs, val_1 evaluated every 30 steps and at each epoch end" in report
    assert (head["padding_memory"], head["local_padding_mask"]) == ("encoded", False)

    records = {name: (out / "stages" / f"{name}.json").stat().st_mtime_ns for name in STAGES}
    assert main(["reproduce", "activitynet", "--dry-run", *weights, "--out", str(out)]) == 0
    assert "| v2t | MnR |" in capsys.readouterr().out
    assert records == {name: (out / "stages" / f"{name}.json").stat().st_mtime_ns for name in STAGES}


def test_reproduce_refuses_unknown_stages_and_missing_inputs(tmp_path, capsys):
    assert main(["reproduce", "activitynet", "--out", str(tmp_path)]) == 2
    assert "--video-root" in capsys.readouterr().err
    argv = ["reproduce", "activitynet", "a.json", "--video-root", str(tmp_path), "--redo", "nope"]
    assert main(argv) == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err
