"""The evaluate flow: exact text-to-video and video-to-text metrics of a checkpoint on a whole split, scored in
gallery shards on Ray actors (two rounds: true scores, then tie-safe rank counts), with a JSON + Markdown
report and a PNG of recall@K."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from glscl.checkpoint import checkpoint_hash
from glscl.metrics import RankAccumulator, metrics_from_ranks
from pipelines.artifacts import publish_summary
from pipelines.configs import EvaluateConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from workers.features import FeatureQuery, checkpoint_query, gallery
from workers.plots import plot_recall
from workers.ray_jobs import ensure_ray, scoring_job


@dataclass
class EvaluateReport:
    """Metrics both ways, sizes, what was read (table versions, checkpoint hash), how many Ray nodes scored the
    shards, and where time went."""

    metrics: dict[str, dict[str, float]]
    extras: dict[str, dict]
    texts: int
    videos: int
    shards: int
    nodes: int
    checkpoint: str
    checkpoint_sha256: str
    model_id: str
    table_versions: dict[str, int]
    timings: dict[str, float]
    files: dict[str, str]

    def to_markdown(self) -> str:
        """The metrics as a Markdown table with the run facts."""
        lines = [
            f"## evaluation: {self.texts} texts x {self.videos} videos "
            f"({self.shards} shards on {self.nodes} Ray node(s))",
            "",
            "| direction | R@1 | R@5 | R@10 | R@50 | MdR | MnR |",
            "|---|---|---|---|---|---|---|",
        ]
        for direction, m in self.metrics.items():
            lines.append(
                f"| {direction} | {m['R@1']:.1f} | {m['R@5']:.1f} | {m['R@10']:.1f} | {m['R@50']:.1f} | "
                f"{m['MdR']:.1f} | {m['MnR']:.1f} |"
            )
        for name, extra in self.extras.items():
            m = extra["t2v"]
            lines.append(
                f"| t2v, {name} (extra, not the main number) | {m['R@1']:.1f} | {m['R@5']:.1f} | {m['R@10']:.1f} | "
                f"{m['R@50']:.1f} | {m['MdR']:.1f} | {m['MnR']:.1f} |"
            )
        lines += [
            "",
            f"- checkpoint {self.checkpoint} (sha256 {self.checkpoint_sha256[:16]}), features {self.model_id}",
            f"- tables read: {self.table_versions}",
            "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)


@task(cache_policy=NO_CACHE)
def score_shards(
    config: EvaluateConfig, query: FeatureQuery, ids: list[str]
) -> tuple[dict[str, RankAccumulator], dict]:
    """Run the two scoring rounds on one Ray actor per gallery shard and merge their rank counts."""
    ensure_ray(config.ray)
    return scoring_job(
        config.store, query, ids, config.checkpoint, config.shard_videos, config.block_size, config.dual_softmax
    )


@flow(name="glscl-evaluate")
def evaluate_flow(config: EvaluateConfig) -> EvaluateReport:
    """Exact metrics of a checkpoint on a split, sharded over Ray actors; writes JSON, Markdown and a PNG."""
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "evaluate", asdict(config)) as run:
        query = checkpoint_query(config.checkpoint, config.split, config.kind)
        _, ids = gallery(catalog, query)
        versions = catalog.versions()
        accumulators, timings = score_shards(config, query, ids)
        accumulator = accumulators.pop("raw")
        metrics = {
            "t2v": metrics_from_ranks(accumulator.t2v_ranks()),
            "v2t": metrics_from_ranks(accumulator.v2t_ranks()),
        }
        extras = {
            f"dual softmax T={config.dual_softmax}": {"t2v": metrics_from_ranks(extra.t2v_ranks())}
            for extra in accumulators.values()
        }
        output = Path(config.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        files = {
            "json": str(output / "report.json"),
            "markdown": str(output / "report.md"),
            "plot": str(plot_recall(accumulator, output / "recall_at_k.png")),
        }
        timings["total"] = time.perf_counter() - start
        report = EvaluateReport(
            metrics,
            extras,
            accumulator.num_texts,
            accumulator.num_videos,
            int(timings.pop("shards")),
            int(timings.pop("nodes")),
            config.checkpoint,
            checkpoint_hash(config.checkpoint),
            query.model_id,
            versions,
            timings,
            files,
        )
    Path(files["json"]).write_text(json.dumps(asdict(report), indent=2))
    Path(files["markdown"]).write_text(report.to_markdown() + "\n")
    run.finish("completed", {"texts": report.texts, "videos": report.videos}, {}, timings)
    get_run_logger().info("t2v R@1 %.1f, v2t R@1 %.1f", metrics["t2v"]["R@1"], metrics["v2t"]["R@1"])
    publish_summary("evaluate", report.to_markdown(), f"glscl evaluate run {run.run_id}")
    return report
