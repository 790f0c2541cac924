"""`glscl bench growth`: how a search setting's per-stage latency grows with the gallery, from search benchmark
reports (`glscl bench hard-search` or `search`, one run over several `--sizes`), with a cost model fitted per stage
and projected to galleries this machine cannot hold, on one machine and split over S gallery shards.

The model covers the search stages, one term each, with the assumption it rests on (written into the report); the
text side is left out (it does not see the gallery, and its own benchmark measures it quiet: RESULTS.md, "Text
side"), though the measured points show it:
- ann: a + b ln N (a graph search visits about log N nodes; IVF over every partition would be linear instead,
  so a fit whose residuals grow says the stage is not logarithmic);
- fetch, rerank: constant in N (a fixed number of candidates is read by row id and scored; this holds while the
  table's pages the reads touch stay in the page cache or on a disk with the same random-read cost);
- metadata: constant (k rows read by row id).
Sharded (S shards of N / S videos, one per machine): ann, fetch and rerank are each shard's, run side by side, at
N / S; the merge adds the measured Ray round trips (`--shard-overhead-ms`, from `glscl bench shards`).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.entry import measure_and_report
from workers.plots import new_figure, save_figure

STAGES = ("ann", "fetch", "rerank", "metadata")
LOG_STAGES = ("ann",)
ASSUMPTIONS = {
    "ann": "a + b ln N: a graph search visits about log N nodes",
    "fetch": "constant: a fixed number of candidates read by row id, pages in cache or equally cheap on disk",
    "rerank": "constant: a fixed number of candidates scored exactly",
    "metadata": "constant: k rows read by row id",
}


@dataclass(frozen=True)
class Setting:
    """Which swept rows of the reports to follow: the candidate count and the candidate stage."""

    candidates: int
    stage: str


def measured_points(reports: list[dict], setting: Setting) -> list[dict]:
    """Per gallery size, the setting's stage p50s (ms) and recall@10, and the text side's p50, sorted by size."""
    points = []
    for report in reports:
        text_ms = None
        for entry in report["sizes"]:
            for row in entry["sweep"]:
                if row["candidates"] == setting.candidates and row.get("candidate_stage") == setting.stage:
                    text_ms = row.get("text_p50_ms", text_ms)
                    stages = {stage: row["stages_p50_ms"][stage] for stage in STAGES}
                    points.append(
                        {"videos": entry["videos"], "recall@10": row["recall@10"], "text": text_ms or 0.0, **stages}
                    )
    if len({point["videos"] for point in points}) < 2:
        raise ValueError(f"the reports hold fewer than two gallery sizes with {setting}: nothing to fit")
    return sorted(points, key=lambda point: point["videos"])


def fit(points: list[dict]) -> dict[str, dict[str, float]]:
    """Least-squares coefficients of each stage's term (`a`, and `b` per ln N for the logarithmic ones)."""
    sizes = np.array([point["videos"] for point in points], dtype=np.float64)
    model = {}
    for stage in STAGES:
        values = np.array([point[stage] for point in points])
        if stage in LOG_STAGES:
            design = np.stack([np.ones_like(sizes), np.log(sizes)], axis=1)
            (a, b), *_ = np.linalg.lstsq(design, values, rcond=None)
            model[stage] = {"a": float(a), "b": float(b)}
        else:
            model[stage] = {"a": float(values.mean()), "b": 0.0}
        predicted = np.array([predict_stage(model[stage], size) for size in sizes])
        model[stage]["max_residual_ms"] = float(np.abs(predicted - values).max())
    return model


def predict_stage(term: dict[str, float], videos: float) -> float:
    return term["a"] + term["b"] * math.log(videos)


def project(model: dict, videos: int, shards: int, shard_overhead_ms: float) -> dict[str, float]:
    """The model's p50 per stage and total for `videos` on one machine (`shards` = 1) or split over `shards`."""
    per_shard = videos / shards
    stages = {stage: predict_stage(model[stage], per_shard) for stage in model}
    stages["merge"] = shard_overhead_ms if shards > 1 else 0.0
    stages["total"] = sum(stages.values())
    return stages


def plot(points: list[dict], model: dict, sizes: list[int], output: Path) -> Path:
    """Each stage's measured p50 against gallery size, the fitted terms through them and on to `sizes`."""
    figure, axis = new_figure(size=(8, 5))
    measured = np.array([point["videos"] for point in points])
    grid = np.geomspace(measured.min(), max(sizes), 60)
    for stage in STAGES:
        line = axis.plot(grid, [predict_stage(model[stage], n) for n in grid], linewidth=1)[0]
        axis.plot(measured, [point[stage] for point in points], "o", color=line.get_color(), label=stage)
    total = [sum(predict_stage(model[stage], n) for stage in model) for n in grid]
    axis.plot(grid, total, "k--", linewidth=1, label="total (model)")
    axis.plot(measured, [sum(point[s] for s in STAGES) for point in points], "ko")
    axis.set(xscale="log", xlabel="videos in the gallery", ylabel="p50 ms per query, text side left out")
    axis.set_title("search latency per stage: measured (points) and fitted model (lines)")
    return save_figure(figure, output)


def run(args: argparse.Namespace) -> dict:
    reports = [json.loads(Path(path).read_text()) for path in args.reports]
    setting = Setting(args.candidates, args.stage)
    points = measured_points(reports, setting)
    model = fit(points)
    projections = [
        {"videos": videos, "shards": shards, **project(model, videos, shards, args.shard_overhead_ms)}
        for videos in args.project
        for shards in args.shards
    ]
    result = {
        "setting": {"candidates": setting.candidates, "stage": setting.stage},
        "reports": args.reports,
        "measured": points,
        "model": model,
        "assumptions": ASSUMPTIONS,
        "shard_overhead_ms": args.shard_overhead_ms,
        "projections": projections,
    }
    if args.plot:
        result["plot"] = str(plot(points, model, args.project, Path(args.plot)))
    return result


def to_markdown(result: dict) -> str:
    lines = [
        f"## Growth: {result['setting']['stage']}, {result['setting']['candidates']} candidates",
        "",
        "| videos | recall@10 | text (not modelled) | " + " | ".join(STAGES) + " | search p50 ms |",
        "|---|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for point in result["measured"]:
        stages = " | ".join(f"{point[s]:.1f}" for s in STAGES)
        total = sum(point[s] for s in STAGES)
        lines.append(
            f"| {point['videos']:,} | {point['recall@10']:.3f} | {point['text']:.1f} | {stages} | {total:.1f} |"
        )
    lines += ["", "| stage | model | max residual ms | assumption |", "|---|---|---|---|"]
    for stage, term in result["model"].items():
        form = f"{term['a']:.1f} + {term['b']:.2f} ln N" if stage in LOG_STAGES else f"{term['a']:.1f}"
        lines.append(f"| {stage} | {form} | {term['max_residual_ms']:.1f} | {result['assumptions'][stage]} |")
    lines += ["", "| projected videos | shards | ann | search p50 ms |", "|---|---|---|---|"]
    for row in result["projections"]:
        lines.append(f"| {row['videos']:,} | {row['shards']} | {row['ann']:.1f} | {row['total']:.1f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glscl bench growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="search benchmark reports (JSON) of one run over several sizes")
    parser.add_argument("--candidates", type=int, default=200, help="the swept candidate count to follow")
    parser.add_argument("--stage", default="segment rows", help="the candidate stage to follow (its report name)")
    parser.add_argument("--project", type=int, nargs="+", default=[1_000_000, 10_000_000], help="gallery sizes")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 10, 100], help="shard counts to project")
    parser.add_argument("--shard-overhead-ms", type=float, default=0.0, help="measured merge cost of a sharded query")
    parser.add_argument("--plot", default=None, help="write the plot here (PNG)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    return parser


def main(argv: list[str] | None = None) -> str:
    return measure_and_report(build_parser(), run, to_markdown, argv)


if __name__ == "__main__":
    print(main())
