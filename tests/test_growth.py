"""The growth model of search latency (`glscl bench growth`): it recovers a known logarithmic ANN term and constant
stages from reports, projects larger galleries on one machine and over shards, and refuses a single size."""

import json
import math

import pytest

from benchmarks.growth import Setting, fit, main, measured_points, project


def report(sizes: list[int], ann=lambda n: 5.0 + 3.0 * math.log(n)) -> dict:
    """A search benchmark report with one swept row per size whose stages follow known terms."""
    entries = []
    for videos in sizes:
        stages = {"text": 0.0, "ann": ann(videos), "fetch": 12.0, "rerank": 8.0, "metadata": 6.0}
        entries.append(
            {
                "videos": videos,
                "sweep": [
                    {
                        "candidates": 200,
                        "candidate_stage": "segment rows",
                        "recall@10": 0.95,
                        "text_p50_ms": 20.0,
                        "stages_p50_ms": stages,
                    },
                    {
                        "candidates": 100,
                        "candidate_stage": "segment rows",
                        "recall@10": 0.9,
                        "text_p50_ms": 20.0,
                        "stages_p50_ms": {**stages, "ann": 1.0},
                    },
                ],
            }
        )
    return {"sizes": entries}


def test_the_fit_recovers_the_terms_and_projects_over_shards():
    points = measured_points([report([10_000, 30_000, 100_000])], Setting(200, "segment rows"))
    assert [p["videos"] for p in points] == [10_000, 30_000, 100_000] and points[0]["text"] == 20.0
    model = fit(points)
    assert model["ann"]["a"] == pytest.approx(5.0) and model["ann"]["b"] == pytest.approx(3.0)
    assert model["fetch"] == pytest.approx({"a": 12.0, "b": 0.0, "max_residual_ms": 0.0})
    one = project(model, 10_000_000, 1, shard_overhead_ms=4.0)
    assert one["ann"] == pytest.approx(5.0 + 3.0 * math.log(10_000_000)) and one["merge"] == 0.0
    ten = project(model, 10_000_000, 10, shard_overhead_ms=4.0)
    assert ten["ann"] == pytest.approx(5.0 + 3.0 * math.log(1_000_000)) and ten["merge"] == 4.0
    assert ten["total"] == pytest.approx(ten["ann"] + 12.0 + 8.0 + 6.0 + 4.0), "the text side is not modelled"


def test_a_linear_stage_shows_in_the_residuals():
    points = measured_points([report([10_000, 30_000, 100_000], ann=lambda n: n / 1000)], Setting(200, "segment rows"))
    assert fit(points)["ann"]["max_residual_ms"] > 5.0, "a log term cannot follow a linear stage"


def test_the_command_plots_and_refuses_one_size(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report([10_000, 40_000])))
    markdown = main([str(path), "--plot", str(tmp_path / "growth.png"), "--out", str(tmp_path / "growth.json")])
    assert "| 10,000,000 | 10 |" in markdown and (tmp_path / "growth.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "growth.json").read_text())["projections"][0]["videos"] == 1_000_000
    path.write_text(json.dumps(report([10_000])))
    with pytest.raises(ValueError, match="fewer than two gallery sizes"):
        main([str(path)])
