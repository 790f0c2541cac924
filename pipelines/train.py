"""The train flow: check the split's stored features, train GLSCL (in-process or on Ray Train workers), then
report: held-out metrics next to two baselines on the same split (the untrained head and mean pooling of the
same frame features, as is and with a trained linear map per side), training throughput, a PNG of the curves,
and a `runs` row."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from glscl.backbone import check_weight_file
from glscl.checkpoint import checkpoint_hash
from pipelines.artifacts import publish_summary
from pipelines.configs import TrainFlowConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from workers.features import FeatureQuery
from workers.plots import plot_training_curves
from workers.ray_jobs import cluster_has_gpu, ensure_ray
from workers.split_rows import SplitRows, locate_split
from workers.train.baselines import baseline_metrics
from workers.train.worker import TrainJob, ray_train, run_outcome, train_worker


@dataclass
class TrainSummary:
    """Held-out metrics of the trained head and the baselines, throughput, and where the checkpoints are."""

    run_id: str
    metrics: dict[str, dict]
    throughput_pairs_per_s: float
    steps: int
    checkpoint: str
    checkpoint_sha256: str
    plot: str
    seconds: float
    val_split: str | None = None
    recipe: str = "project"
    world_size: int = 1
    pairs_read: int = 0
    peak_memory_mb: float = 0.0
    split_feature_gb: float = 0.0
    data_wait_share: float = 0.0

    def to_markdown(self) -> str:
        """The comparison table and the run facts."""
        lines = [
            f"## train run {self.run_id}",
            "",
            "| scorer (held-out) | t2v R@1 | R@5 | R@10 | MdR | MnR | v2t R@1 | R@5 | R@10 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, result in self.metrics.items():
            t, v = result["t2v"], result["v2t"]
            lines.append(
                f"| {name} | {t['R@1']:.1f} | {t['R@5']:.1f} | {t['R@10']:.1f} | {t['MdR']:.1f} | {t['MnR']:.1f} | "
                f"{v['R@1']:.1f} | {v['R@5']:.1f} | {v['R@10']:.1f} |"
            )
        lines += [
            "",
            f"- {self.steps} steps in {self.seconds:.1f} s on {self.world_size} worker(s); "
            f"training throughput {self.throughput_pairs_per_s:.0f} pairs/s",
            f"- {self.pairs_read} pairs read from the tables batch by batch (the split's features: "
            f"{self.split_feature_gb:.2f} GB as float32); peak memory of the training process "
            f"{self.peak_memory_mb:.0f} MB; {100 * self.data_wait_share:.0f}% of training time spent waiting for "
            "batches",
            f"- recipe {self.recipe}; checkpoint (best held-out R@1 on {self.val_split or 'no held-out split'}): "
            f"{self.checkpoint} (sha256 {self.checkpoint_sha256[:16]}); selected on that split, so if it is also "
            "your test split (ActivityNet's val_1 in the usual protocol, as in the authors' code) its numbers are "
            "optimistic",
            f"- curves: {self.plot}",
        ]
        return "\n".join(lines)


def _query(config: TrainFlowConfig, split: str) -> FeatureQuery:
    return FeatureQuery(split, config.backbone.model_id, config.max_words, config.kind)


def _report_frame_source(rows: SplitRows) -> None:
    """Say where full fine-tuning's frames come from, and what decoding costs when ingest did not keep them."""
    logger = get_run_logger()
    decoded = rows.num_videos - rows.kept_images
    if not decoded:
        logger.info("full mode: the frames of all %d videos are read from frame_images", rows.num_videos)
        return
    logger.warning(
        "full mode: %d of %d videos have no kept frames and are decoded from their files in every epoch (about "
        "2 s per 2-minute video on one core); `glscl ingest --keep-frames` stores them once (0.5 to 1.7 MB per video)",
        decoded,
        rows.num_videos,
    )


@task(cache_policy=NO_CACHE)
def plan_job(config: TrainFlowConfig, run_id: str) -> TrainJob:
    """Check that the split's features exist and size the head to them (reading row addresses, not features)."""
    rows = locate_split(Catalog(config.store), _query(config, config.split))
    get_run_logger().info(
        "train split %r: %d videos x %d frames, %d %s texts (%.1f GB of features, streamed)",
        config.split,
        rows.num_videos,
        rows.num_frames,
        rows.num_texts,
        config.kind,
        rows.feature_bytes / 1e9,
    )
    if config.train.mode == "full":
        _report_frame_source(rows)
    model = config.head(rows.dim, rows.num_frames)
    extra = {
        "backbone_model_id": config.backbone.model_id,
        "backbone": asdict(config.backbone),
        "sampling_hash": rows.sampling_hash,
        "max_words": config.max_words,
        "kind": config.kind,
        "recipe": config.recipe,
        "run_id": run_id,
        "train_feature_bytes": rows.feature_bytes,
    }
    return TrainJob(
        store=config.store,
        backbone=config.backbone,
        train_query=_query(config, config.split),
        val_query=_query(config, config.val_split) if config.val_split else None,
        model=model,
        train=config.train_settings(),
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        extra=extra,
        stream=config.stream,
    )


@task(cache_policy=NO_CACHE)
def run_training(config: TrainFlowConfig, job: TrainJob) -> list[dict]:
    """Train in this process (one worker) or on Ray Train workers; either resumes from the run's state and
    reads its batches from the tables (through Ray Data readers unless the split is small, `StreamConfig`)."""
    ensure_ray(config.ray)
    if config.workers <= 1:
        return train_worker(job)
    return ray_train(job, config.workers, use_gpu=cluster_has_gpu())


@flow(name="glscl-train")
def train_flow(config: TrainFlowConfig) -> TrainSummary:
    """Train GLSCL on a split's stored features and report held-out metrics against the baselines."""
    start = time.perf_counter()
    check_weight_file(config.backbone)
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "train", asdict(config)) as run:
        job = plan_job(config, run.run_id)
        history = run_training(config, job)
        outcome = run_outcome(config.output_dir, history)
        metrics = {}
        if outcome.best_eval is not None:
            metrics = baseline_metrics(job)
            metrics[f"GLSCL trained (best, step {outcome.best_eval['step']})"] = outcome.best_eval
        output = Path(config.output_dir)
        summary = TrainSummary(
            run.run_id,
            metrics,
            outcome.pairs_per_s,
            outcome.steps,
            str(outcome.checkpoint),
            checkpoint_hash(outcome.checkpoint),
            str(plot_training_curves(history, output / "curves.png")),
            time.perf_counter() - start,
            config.val_split,
            config.recipe,
            outcome.world_size,
            outcome.steps * job.train.batch_size,
            outcome.peak_memory_mb,
            job.extra["train_feature_bytes"] / 1e9,
            outcome.data_wait_share,
        )
    (output / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    (output / "summary.md").write_text(summary.to_markdown() + "\n")
    run.finish(
        "completed", {"steps": outcome.steps}, {}, {"seconds": summary.seconds, "pairs_per_s": outcome.pairs_per_s}
    )
    publish_summary("train", summary.to_markdown(), f"glscl train run {run.run_id}")
    return summary
