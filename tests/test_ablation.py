"""The ablation benchmark end to end on a tiny generated dataset: it generates and ingests through the demo's
stages, trains one run per distinct variant settings and seed, reports every variant x seed, and a second call
(from the CLI, one variant spelt differently) reuses the finished runs instead of training them again."""

import json
import math

import pytest

from benchmarks.ablation import COLUMNS, Ablation, AblationConfig, parse_variant, run_ablation
from pipelines.cli import main
from pipelines.configs import DemoConfig
from schemas.store import StoreConfig

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")

VARIANTS = ("ICL authors:icl_form=authors", "ICL off:icl_weight=0", "CLIP init:temporal_init=clip")


@pytest.mark.slow(seconds=58)
def test_ablation_reports_each_variant_and_seed_and_reuses_finished_runs(tmp_path, capsys):
    demo_dir, output = tmp_path / "demo", tmp_path / "ablation"
    demo = DemoConfig(
        out_dir=str(demo_dir),
        store=StoreConfig(str(demo_dir / "lancedb")),
        train_videos=16,
        val_videos=8,
        train_epochs=2,
        batch_size=8,
    )
    variants = tuple(parse_variant(text) for text in VARIANTS)
    ablations = (Ablation("ICL", ("ICL authors", "ICL off")), Ablation("init", ("CLIP init",)))
    lines: list[str] = []
    report = run_ablation(AblationConfig(demo, variants, ablations, (3,), str(output)), log=lines.append)

    assert [(r["variant"], r["seed"]) for r in report["results"]] == [(name.split(":")[0], 3) for name in VARIANTS]
    for result in report["results"]:
        assert set(COLUMNS) <= set(result["values"]) and all(math.isfinite(v) for v in result["values"].values())
    # "CLIP init" names the defaults, as "ICL authors" does: they share one run.
    keys = {r["variant"]: r["run_key"] for r in report["results"]}
    assert keys["ICL authors"] == keys["CLIP init"] == "project" and keys["ICL off"] == "project+icl_weight=0"
    assert len(report["runs"]) == 2 and len([line for line in lines if line.startswith("[")]) == 2
    markdown = (output / "ablation.md").read_text()
    assert "### ICL" in markdown and "| **ICL off** | mean |" in markdown and "| | 3 |" in markdown
    assert json.loads((output / "ablation.json").read_text()) == report
    assert (output / "ablation.png").stat().st_size > 1000

    summaries = {path: path.stat().st_mtime_ns for path in output.glob("runs/*/seed3/summary.json")}
    argv = ["bench", "ablation", "--demo-dir", str(demo_dir), "--output", str(output), "--seeds", "3"]
    argv += ["--train-videos", "16", "--val-videos", "8", "--epochs", "2", "--batch-size", "8"]
    # The same variants, "ICL authors" now spelt without its (default) override: still the same run.
    argv += [item for text in ("ICL authors:", *VARIANTS[1:]) for item in ("--variant", text)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("- reused (trained in") == 2
    assert {path: path.stat().st_mtime_ns for path in summaries} == summaries
    assert "| **CLIP init** | mean |" in captured.out
    assert json.loads((output / "ablation.json").read_text())["results"] == report["results"]
