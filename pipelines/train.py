"""The train flow: check the split's stored features, train GLSCL (in-process or on Ray Train workers), then
report: held-out metrics next to two baselines on the same split (the untrained head and mean pooling of the
same frame features, as is and with a trained linear map per side), training throughput, a PNG of the curves,
and a `runs` row."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from glscl.backbone import BackboneConfig
from glscl.baselines import LinearMeanPooling, MeanPooling, fit_linear_mean_pooling
from glscl.checkpoint import checkpoint_hash
from glscl.config import HEAD_PRESETS, GLSCLConfig
from glscl.metrics import both_directions
from glscl.recipes import recipe
from glscl.training import TrainConfig, Trainer, TrainModule
from pipelines.artifacts import publish_summary
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog, StoreConfig
from workers.features import FeatureQuery, read_split
from workers.plots import new_figure, save_figure
from workers.ray_jobs import RayConfig, cluster_has_gpu, ensure_ray
from workers.train_worker import (
    BEST_DIR,
    HISTORY_FILE,
    LATEST_DIR,
    TrainJob,
    build_head,
    head_pairs,
    ray_train,
    train_worker,
)


@dataclass(frozen=True)
class TrainFlowConfig:
    """Everything a training run needs: data (store, backbone, splits, text kind), head, optimiser, workers."""

    store: StoreConfig = field(default_factory=StoreConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    split: str = "train"
    val_split: str | None = "val_1"
    kind: str = "paragraph"
    max_words: int = 32
    head_preset: str = "paper"
    head_overrides: dict = field(default_factory=dict)
    recipe: str = "project"
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "./data/runs/train"
    workers: int = 1
    ray: RayConfig = field(default_factory=RayConfig)
    max_steps: int | None = None


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
            f"- {self.steps} steps in {self.seconds:.1f} s; "
            f"training throughput {self.throughput_pairs_per_s:.0f} pairs/s",
            f"- recipe {self.recipe}; checkpoint (best held-out R@1 on {self.val_split or 'no held-out split'}): "
            f"{self.checkpoint} (sha256 {self.checkpoint_sha256[:16]}); selected on that split, so if it is also "
            "your test split (ActivityNet's val_1 in the usual protocol, as in the authors' code) its numbers are "
            "optimistic",
            f"- curves: {self.plot}",
        ]
        return "\n".join(lines)


def head_config(config: TrainFlowConfig, embed_dim: int, frames: int) -> GLSCLConfig:
    """The GLSCL config: a preset, the recipe's settings, then overrides, sized to the stored features.

    The temporal transformer takes the backbone's activation (QuickGELU for OpenAI weights) unless an override
    names one, whether it starts from the CLIP text tower or not, so `temporal_init` alone changes only the start.
    """
    if config.head_preset not in HEAD_PRESETS:
        raise ValueError(f"unknown head preset {config.head_preset!r}: use one of {sorted(HEAD_PRESETS)}")
    values = {**HEAD_PRESETS[config.head_preset], **recipe(config.recipe).head, **config.head_overrides}
    values.setdefault("temporal_activation", "quick_gelu" if config.backbone.quick_gelu else "gelu")
    return GLSCLConfig(**{**values, "embed_dim": embed_dim, "max_frames": frames, "max_words": config.max_words})


def _query(config: TrainFlowConfig, split: str) -> FeatureQuery:
    return FeatureQuery(split, config.backbone.model_id, config.max_words, config.kind)


@task(cache_policy=NO_CACHE)
def plan_job(config: TrainFlowConfig, run_id: str) -> TrainJob:
    """Check that the split's features exist and size the head to them."""
    features = read_split(Catalog(config.store), _query(config, config.split))
    get_run_logger().info(
        "train split %r: %d videos x %d frames, %d %s texts",
        config.split,
        features.num_videos,
        features.video_feats.shape[1],
        features.num_texts,
        config.kind,
    )
    model = head_config(config, features.video_feats.shape[2], features.video_feats.shape[1])
    extra = {
        "backbone_model_id": config.backbone.model_id,
        "sampling_hash": features.sampling_hash,
        "max_words": config.max_words,
        "kind": config.kind,
        "recipe": config.recipe,
        "run_id": run_id,
    }
    return TrainJob(
        store=config.store,
        backbone=config.backbone,
        train_query=_query(config, config.split),
        val_query=_query(config, config.val_split) if config.val_split else None,
        model=model,
        train=replace(config.train, **recipe(config.recipe).train),
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        extra=extra,
    )


@task(cache_policy=NO_CACHE)
def run_training(config: TrainFlowConfig, job: TrainJob) -> list[dict]:
    """Train in this process (one worker) or on Ray Train workers; either resumes from the run's state."""
    if config.workers <= 1:
        return train_worker(job)
    ensure_ray(config.ray)
    ray_train(job, config.workers, use_gpu=cluster_has_gpu())
    return [json.loads(line) for line in (Path(job.output_dir) / HISTORY_FILE).read_text().splitlines()]


def linear_baseline(catalog: Catalog, query: FeatureQuery, train: TrainConfig) -> LinearMeanPooling:
    """Mean pooling + a linear map per side, fitted on the split's training pairs with the run's batch and seed."""
    pairs = read_split(catalog, query)
    return fit_linear_mean_pooling(
        torch.from_numpy(pairs.sentence),
        torch.from_numpy(pairs.video_feats),
        torch.from_numpy(pairs.video_mask),
        torch.from_numpy(pairs.text_to_video),
        batch=train.batch_size,
        seed=train.seed,
    )


def baseline_metrics(config: TrainFlowConfig, job: TrainJob) -> dict[str, dict]:
    """Held-out metrics of the baselines on the same features: mean pooling as is (CLIP4Clip meanP), mean pooling
    with a linear map per side trained on the same training pairs (order-blind), and the untrained head."""
    catalog = Catalog(config.store)
    features = read_split(catalog, job.val_query)
    sentence, frames = torch.from_numpy(features.sentence), torch.from_numpy(features.video_feats)
    mask = torch.from_numpy(features.video_mask)
    linear = linear_baseline(catalog, job.train_query, job.train)
    torch.manual_seed(job.train.seed)
    untrained = Trainer(TrainModule(build_head(job.model, job.backbone)), job.model, replace(job.train, mode="head"))
    with torch.no_grad():
        return {
            "mean pooling (no training)": both_directions(MeanPooling().score(sentence, frames, mask)),
            "mean pooling + linear (trained)": both_directions(linear.score(sentence, frames, mask)),
            "GLSCL untrained head": untrained.evaluate(head_pairs(features)),
        }


def plot_curves(history: list[dict], path: Path) -> Path:
    """Loss terms per logged step and held-out R@1 per evaluation, as a PNG."""
    steps = [r for r in history if r.get("event") == "step"]
    evals = [r for r in history if r.get("event") == "eval"]
    figure, (loss_axis, recall_axis) = new_figure(2, (10, 4))
    for term in ("total", "contrastive", "icl", "idl"):
        if steps and term in steps[0]:
            loss_axis.plot([r["step"] for r in steps], [r[term] for r in steps], label=term)
    loss_axis.set(xlabel="step", ylabel="loss", title="training loss")
    for direction in ("t2v", "v2t"):
        recall_axis.plot([r["step"] for r in evals], [r[direction]["R@1"] for r in evals], marker="o", label=direction)
    recall_axis.set(xlabel="step", ylabel="R@1 (%)", title="held-out R@1")
    return save_figure(figure, path)


@flow(name="glscl-train")
def train_flow(config: TrainFlowConfig) -> TrainSummary:
    """Train GLSCL on a split's stored features and report held-out metrics against the baselines."""
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "train", asdict(config)) as run:
        job = plan_job(config, run.run_id)
        history = run_training(config, job)
        output = Path(config.output_dir)
        best = output / BEST_DIR if (output / BEST_DIR).exists() else output / LATEST_DIR
        evals = [r for r in history if r.get("event") == "eval"]
        metrics = {}
        if evals:
            metrics = baseline_metrics(config, job)
            best_eval = max(evals, key=lambda r: r["t2v"]["R@1"])
            metrics[f"GLSCL trained (best, step {best_eval['step']})"] = best_eval
        epochs = [r for r in history if r.get("event") == "epoch"]
        throughput = sum(r["pairs"] for r in epochs) / max(sum(r["seconds"] for r in epochs), 1e-9)
        steps = max((r["step"] for r in history), default=0)
        summary = TrainSummary(
            run.run_id,
            metrics,
            throughput,
            steps,
            str(best),
            checkpoint_hash(best),
            str(plot_curves(history, output / "curves.png")),
            time.perf_counter() - start,
            config.val_split,
            config.recipe,
        )
    (output / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    (output / "summary.md").write_text(summary.to_markdown() + "\n")
    run.finish("completed", {"steps": steps}, {}, {"seconds": summary.seconds, "pairs_per_s": throughput})
    publish_summary("train", summary.to_markdown(), f"glscl train run {run.run_id}")
    return summary
