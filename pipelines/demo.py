"""`glscl demo`: generate the synthetic ActivityNet-format dataset with ffmpeg, ingest both splits, train the
GLSCL head and compare it on held-out videos with the untrained head and mean pooling. One command, offline,
on the tiny random backbone. It ends searchable: the trained checkpoint indexes the gallery, and the report closes with
the `glscl query` and `glscl serve` commands that search it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from glscl.checkpoint import load_checkpoint
from glscl.config import TrainConfig
from pipelines.configs import DEMO_FRAMES, DEMO_MAX_WORDS, DemoConfig, IndexConfig, IngestConfig, TrainFlowConfig
from pipelines.index import IndexSummary, index_flow
from pipelines.ingest import IngestSummary, ingest_flow
from pipelines.printed import absolute, command_line
from pipelines.train import TrainSummary, train_flow
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.features import FeatureQuery
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import SourceOptions
from workers.overview import database_overview
from workers.synthetic.order_test import WRONG, order_test
from workers.synthetic.reuse import remember_settings, reusable_dataset
from workers.synthetic.videos import SyntheticDataset, generate_synthetic_dataset
from workers.train.baselines import linear_baseline


@task(cache_policy=NO_CACHE)
def generate(config: DemoConfig) -> SyntheticDataset:
    """Make the dataset, or reuse it when the same settings made it before (generation is deterministic)."""
    synthetic = config.synthetic()
    reused = reusable_dataset(synthetic)
    if reused is not None:
        get_run_logger().info("reusing the synthetic dataset in %s", config.out_dir)
        return reused
    dataset = generate_synthetic_dataset(synthetic)
    remember_settings(synthetic)
    get_run_logger().info("generated %d videos in %.1f s", dataset.n_videos, dataset.elapsed_s)
    return dataset


def ingest_config(config: DemoConfig, dataset: SyntheticDataset) -> IngestConfig:
    """Both splits, the tiny backbone, 8 uniformly sampled frames (the synthetic motion is timed for them)."""
    return IngestConfig(
        sources=(str(dataset.train_annotations), str(dataset.val_annotations)),
        store=config.store,
        sampling=SamplingConfig("uniform", DEMO_FRAMES),
        source_options=SourceOptions(video_root=str(dataset.video_dir), dataset="synthetic"),
        ray=config.ray,
        max_words=DEMO_MAX_WORDS,
    )


def train_config(config: DemoConfig) -> TrainFlowConfig:
    """Paragraph-to-video training of the tiny head on the train split, held-out evaluation on val_1."""
    return TrainFlowConfig(
        store=config.store,
        max_words=DEMO_MAX_WORDS,
        head_preset="tiny",
        train=TrainConfig(
            epochs=config.train_epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            log_every=5,
            order_negatives=config.order_negatives,
        ),
        output_dir=str(Path(config.out_dir) / "train"),
    )


@task(cache_policy=NO_CACHE)
def run_order_test(config: DemoConfig, trained: TrainSummary) -> dict[str, float]:
    """The order test on the held-out two-event videos: trained head vs the order-blind baselines."""
    training = train_config(config)
    catalog = Catalog(config.store)
    model, _, _ = load_checkpoint(trained.checkpoint)
    query = FeatureQuery("val_1", training.backbone.model_id, DEMO_MAX_WORDS)
    linear = linear_baseline(catalog, FeatureQuery("train", training.backbone.model_id, DEMO_MAX_WORDS), training.train)
    return order_test(catalog, query, training.backbone, model, linear)


def order_test_markdown(results: dict[str, float]) -> str:
    """The order-test accuracies as a Markdown table."""
    lines = [
        f"Order test on {int(results['videos'])} held-out two-event videos (true paragraph among 4: true, events "
        "swapped, one direction flipped; ties count as misses):",
        "",
        "| scorer | true beats all 3 % (chance 25) | "
        + " | ".join(f"true beats {wrong} % (chance 50)" for wrong in WRONG)
        + " |",
        "|---|---|" + "---|" * len(WRONG),
    ]
    names = [name for name in results if name != "videos" and " vs " not in name]
    for name in names:
        pairwise = " | ".join(f"{results[f'{name} vs {wrong}']:.1f}" for wrong in WRONG)
        lines.append(f"| {name} | {results[name]:.1f} | {pairwise} |")
    return "\n".join(lines)


@dataclass
class DemoOutcome:
    """What each stage of the demo produced, and a held-out caption to try as a query."""

    ingested: IngestSummary
    trained: TrainSummary
    order: dict[str, float]
    indexed: IndexSummary
    example_query: str


@flow(name="glscl-demo")
def demo_flow(config: DemoConfig) -> DemoOutcome:
    """Generate the synthetic dataset, ingest it, train GLSCL, compare it with the baselines and index the gallery
    with the trained checkpoint."""
    dataset = generate(config)
    ingested = ingest_flow(ingest_config(config, dataset))
    trained = train_flow(train_config(config))
    order = run_order_test(config, trained)
    indexed = index_flow(IndexConfig(checkpoint=trained.checkpoint, store=config.store, ray=config.ray))
    return DemoOutcome(ingested, trained, order, indexed, held_out_caption(dataset))


def held_out_caption(dataset: SyntheticDataset) -> str:
    """The first sentence of the first held-out video: a query whose answer the gallery holds."""
    annotations = json.loads(dataset.val_annotations.read_text())
    return next(iter(annotations.values()))["sentences"][0].strip()


def search_commands(store: StoreConfig, checkpoint: str, query: str) -> str:
    """The `glscl query` and `glscl serve` command lines that search what the demo indexed, as Markdown; they work
    pasted into a fresh shell in any folder (`pipelines.printed`)."""
    where = ["--checkpoint", absolute(checkpoint), "--db", absolute(store.uri)]
    for key, value in store.storage_options.items():
        where += ["--storage-option", f"{key}={value}"]
    return "\n".join(
        [
            "## Search what the demo built",
            "",
            "```",
            command_line("query", query, *where),
            command_line("serve", *where) + "   # then open http://127.0.0.1:8080",
            "```",
        ]
    )


def run_demo_flow(config: DemoConfig) -> tuple[str, int]:
    """Run the demo; return what each stage produced (Markdown) and the ingest exit code."""
    outcome = demo_flow(config)
    sections = (
        outcome.ingested.to_markdown(),
        outcome.trained.to_markdown(),
        order_test_markdown(outcome.order),
        outcome.indexed.to_markdown(),
        database_overview(config.store).to_markdown(),
        search_commands(config.store, outcome.trained.checkpoint, outcome.example_query),
    )
    return "\n\n".join(sections), outcome.ingested.exit_code
