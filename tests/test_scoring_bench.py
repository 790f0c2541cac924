"""The scoring benchmark at a tiny size: result layout, extrapolation, correctness check, Markdown, JSON and plot.

Nothing here asserts on time; the runs take about a second each.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.scoring import HEAD_LABELS, main, to_markdown
from glscl.scoring_cost.timing import check_scorer, extrapolate, next_slice, run_scoring_bench
from glscl.scoring_cost.workloads import HEADS, ScoringBenchConfig, random_encodings, scoring_model

TINY = {
    "sizes": (16, 32),
    "scaling_sizes": (16,),
    "frames": 4,
    "dim": 16,
    "queries": 2,
    "warmup": 0,
    "repeats": 2,
    "min_texts": 4,
    "glscl_block": 4,
    "xpool_text_block": 4,
    "gemm_size": 64,
    "check_size": 8,
}
TINY_ARGS = ["--sizes", "8", "--scaling-sizes", "12", "--frames", "4", "--dim", "16", "--queries", "2", "--warmup", "0"]
TINY_ARGS += ["--repeats", "1", "--min-texts", "4", "--glscl-block", "4", "--gemm-size", "64", "--max-seconds", "1e-7"]


@pytest.fixture(scope="module")
def forced() -> dict:
    """A run whose budget is too small for any full call, so every text-proportional head is sliced."""
    return run_scoring_bench(ScoringBenchConfig(**TINY, max_seconds=1e-7))


def test_every_head_and_size_is_reported(forced: dict) -> None:
    assert {(row["head"], row["n"]) for row in forced["results"]} == {(h, n) for h in HEADS for n in (16, 32)}
    assert [s["n"] for s in forced["summary"]] == [16, 32]
    assert forced["machine"]["threads"] == torch.get_num_threads()
    json.dumps(forced)


def test_ratios_are_positive_and_finite(forced: dict) -> None:
    keys = ("seconds", "pairs_per_s", "ratio_to_glscl", "gflops", "floor_seconds", "floor_ratio", "flops")
    for row in forced["results"]:
        assert all(math.isfinite(row[key]) and row[key] > 0 for key in keys), row
    for summary in forced["summary"]:
        assert all(math.isfinite(value) and value > 0 for value in summary.values())
    assert forced["gemm"]["float32"]["gflops"] > 0


def test_tiny_budget_extrapolates_from_a_slice(forced: dict) -> None:
    glscl_rows = [row for row in forced["results"] if row["head"].startswith("glscl")]
    assert all(row["extrapolated"] and row["slice_texts"] < row["n"] for row in glscl_rows)
    assert all(row["extrapolated"] == (row["slice_texts"] < row["n"]) for row in forced["results"])


def test_generous_budget_times_the_full_gallery() -> None:
    result = run_scoring_bench(ScoringBenchConfig(**TINY | {"sizes": (16,), "scaling_sizes": ()}, max_seconds=60))
    assert all(not row["extrapolated"] and row["slice_texts"] == 16 for row in result["results"])


def test_slice_size_and_extrapolation() -> None:
    assert next_slice(16, 1000, 1.0, 10.0) == 32
    assert next_slice(16, 20, 1.0, 10.0) == 20
    assert next_slice(16, 1000, 6.0, 10.0) == 16
    assert extrapolate(3.0, 1.0, 10, 100) == pytest.approx(21.0)
    assert extrapolate(3.0, 1.0, 100, 100) == 3.0
    assert extrapolate(0.5, 1.0, 10, 100) == 1.0


def test_correctness_check_catches_a_wrong_scorer() -> None:
    config = ScoringBenchConfig(**TINY)
    text, video = random_encodings(8, config, torch.device("cpu"))
    model = scoring_model(config, torch.device("cpu"))
    with torch.inference_mode():
        assert check_scorer(model, text, video, 8)["max_abs_diff"] < 1e-4
        model.global_interaction.temperature = 0.5
        with pytest.raises(AssertionError):
            check_scorer(model, text, video, 8)


def test_markdown_names_every_head(forced: dict) -> None:
    report = to_markdown(forced)
    assert all(label in report for label in HEAD_LABELS.values())
    assert "extrapolated from" in report and "GEMM" in report


def test_main_writes_json_markdown_and_png(tmp_path, capsys) -> None:
    paths = {"json": tmp_path / "r.json", "markdown": tmp_path / "r.md", "plot": tmp_path / "r.png"}
    main(TINY_ARGS + [arg for key, path in paths.items() for arg in (f"--{key}", str(path))])
    result = json.loads(paths["json"].read_text())
    assert {row["n"] for row in result["results"]} == {8, 12}
    assert "benchmarks.scoring" in result["command"]
    assert HEAD_LABELS["xpool"] in paths["markdown"].read_text()
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
    assert HEAD_LABELS["glscl"] in capsys.readouterr().out


def test_glscl_bench_scoring_command_as_the_user_runs_it(tmp_path) -> None:
    glscl = str(Path(sys.executable).with_name("glscl"))  # the venv's console script
    command = [glscl, "bench", "scoring", *TINY_ARGS, "--json", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {row["n"] for row in json.loads((tmp_path / "r.json").read_text())["results"]} == {8, 12}
    assert HEAD_LABELS["glscl"] in done.stdout and HEAD_LABELS["xpool"] in done.stdout
