"""The ingest flow: discover -> captions/texts -> per shard (decode+encode on Ray, commit) -> report.

Prefect is the control plane (a handful of tasks, one per stage per shard), Ray the data plane (each heavy
step is one Ray Data job). Every commit merges on the table key, so a second run writes nothing and a run
killed half-way resumes where it stopped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from glscl.backbone import check_weight_file
from pipelines.artifacts import publish_summary
from pipelines.configs import IngestConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from schemas.rows import captions_table, texts_table
from schemas.tables import CAPTIONS, TEXTS
from workers.ingest.hashing import content_ids
from workers.ingest.plan import Discovery, plan_ingest, stored_keys
from workers.ingest.shards import FramesRecipe, ShardResult, ShardTally, commit_shard_rows, shard_result
from workers.ingest.sources import VideoItem, read_source
from workers.ray_jobs import ensure_ray, frames_job, texts_job
from workers.terminal import progress

EXIT_OK = 0
EXIT_SOME_FAILED = 3


@dataclass
class IngestSummary:
    """The outcome of a run: counts, failures by reason, throughput per stage, table versions."""

    run_id: str
    counts: dict[str, int]
    failures: dict[str, int]
    timings: dict[str, float]
    throughput: dict[str, float]
    table_versions: dict[str, int]
    backbone: str

    @property
    def exit_code(self) -> int:
        """0 when every input was ingested; EXIT_SOME_FAILED (3) when some videos failed or were missing."""
        bad = self.counts.get("failed", 0) + self.counts.get("known_failed", 0) + self.counts.get("missing", 0)
        return EXIT_SOME_FAILED if bad else EXIT_OK

    def to_markdown(self) -> str:
        """A short human-readable report."""
        lines = [f"## ingest run {self.run_id}", "", f"- {self.backbone}"]
        lines += [f"- {name.replace('_', ' ')}: {value}" for name, value in self.counts.items()]
        lines += [f"- failed: {reason} ({n})" for reason, n in self.failures.items()]
        lines += [f"- {name.replace('_', ' ')}: {value:.1f}" for name, value in self.throughput.items()]
        lines += [f"- time {name}: {value:.2f} s" for name, value in self.timings.items()]
        lines += [f"- table {name} at version {version}" for name, version in self.table_versions.items()]
        return "\n".join(lines)


@task(cache_policy=NO_CACHE)
def discover(config: IngestConfig) -> Discovery:
    """Read the sources, hash every video into its id, and work out what is new."""
    logger = get_run_logger()
    items: list[VideoItem] = []
    counts: Counter = Counter()
    failures: Counter = Counter()
    for source in config.sources:
        collection = read_source(source, config.source_options)
        items.extend(collection.videos)
        counts["missing"] += len(collection.missing)
        if collection.missing:
            failures["video file not found under the video root"] += len(collection.missing)
            logger.warning(
                "%s: %d annotated videos have no file, e.g. %s", source, len(collection.missing), collection.missing[:3]
            )
    ids = content_ids([item.path for item in items], config.hash_threads)
    stored = stored_keys(Catalog(config.store), config.backbone, config.sampling, config.max_words, config.keep_frames)
    discovery = plan_ingest(items, ids, stored, config.retry_failed, counts)
    discovery.failures.update(failures)
    logger.info(
        "discovered %d videos: %d pending, %d already ingested, %d known failed, %d duplicates",
        counts["discovered"],
        len(discovery.pending),
        counts["already_ingested"],
        counts["known_failed"],
        counts["duplicate_content"],
    )
    return discovery


@task(cache_policy=NO_CACHE)
def commit_captions(config: IngestConfig, captions: list[dict], run_id: str) -> int:
    """Store caption rows (sentences and paragraphs) in one merge."""
    return Catalog(config.store).merge(CAPTIONS, captions_table(captions, run_id)).inserted


@task(cache_policy=NO_CACHE)
def encode_texts(config: IngestConfig, texts: list[dict], run_id: str) -> tuple[int, float]:
    """Encode caption texts on Ray and merge them into `texts`; returns rows written and seconds."""
    start = time.perf_counter()
    tables = [
        texts_table(batch, config.backbone.model_id, config.max_words, run_id)
        for batch in texts_job(texts, config.backbone, config.max_words, config.ray)
    ]
    written = Catalog(config.store).merge(TEXTS, pa.concat_tables(tables), config.backbone.embed_dim).inserted
    return written, time.perf_counter() - start


@task(cache_policy=NO_CACHE)
def decode_encode_shard(config: IngestConfig, shard: list[dict], run_id: str) -> ShardResult:
    """One Ray Data job: decode the shard's videos on CPU tasks and encode them in model actors."""
    image_size = config.backbone.image_size
    batches = frames_job(shard, config.sampling, config.backbone, config.ray, config.jpeg_quality)
    recipe = FramesRecipe(
        config.backbone.model_id,
        image_size,
        config.sampling.describe(image_size),
        config.sampling.hash(image_size),
        config.jpeg_quality,
    )
    return shard_result(batches, recipe, run_id)


@task(cache_policy=NO_CACHE)
def commit_shard(config: IngestConfig, result: ShardResult, run_id: str) -> dict[str, int]:
    """Write a shard's `videos` and `frames` rows (`workers.ingest.shards.commit_shard_rows`)."""
    return commit_shard_rows(Catalog(config.store), result, config.backbone.embed_dim, run_id)


def _ingest_shards(config: IngestConfig, pending: list[dict], run_id: str, counts: Counter, failures: Counter):
    logger = get_run_logger()
    tally = ShardTally()
    shards = [pending[i : i + config.shard_size] for i in range(0, len(pending), config.shard_size)]
    with progress("ingest shards", len(shards), "shards") as update:
        for number, shard in enumerate(shards, start=1):
            result = decode_encode_shard(config, shard, run_id)
            commit_start = time.perf_counter()
            written = commit_shard(config, result, run_id)
            shard_frames, failed = tally.record(result, written, time.perf_counter() - commit_start, counts, failures)
            logger.info(
                "shard %d/%d: %d videos (%d failed), %d frames in %.1f s (%.1f videos/s)",
                number,
                len(shards),
                len(shard),
                failed,
                shard_frames,
                result.wall_seconds,
                len(shard) / max(result.wall_seconds, 1e-9),
            )
            update(advance=1)
    return tally


@flow(name="glscl-ingest")
def ingest_flow(config: IngestConfig) -> IngestSummary:
    """Ingest video collections into LanceDB: decode and encode new videos, store captions and texts."""
    logger = get_run_logger()
    start = time.perf_counter()
    logger.info(config.backbone.describe())
    check_weight_file(config.backbone)
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "ingest", asdict(config)) as run:
        discovery = discover(config)
        timings = {"discover": time.perf_counter() - start}
        counts, failures = discovery.counts, discovery.failures
        if discovery.pending or discovery.texts:
            ensure_ray(config.ray)
        counts["captions_written"] = (
            commit_captions(config, discovery.captions, run.run_id) if discovery.captions else 0
        )
        counts["texts_written"], timings["texts"] = (
            encode_texts(config, discovery.texts, run.run_id) if discovery.texts else (0, 0.0)
        )
        tally = _ingest_shards(config, discovery.pending, run.run_id, counts, failures)
    timings.update(frames_job_wall=tally.frames_wall, commit=tally.commit_seconds, total=time.perf_counter() - start)
    throughput = tally.throughput(counts["ok"] + counts["failed"])
    summary = IngestSummary(
        run.run_id, dict(counts), dict(failures), timings, throughput, {}, config.backbone.describe()
    )
    status = "completed" if summary.exit_code == EXIT_OK else "completed_with_failures"
    summary.table_versions = run.finish(status, summary.counts, summary.failures, {**timings, **throughput})
    logger.info(
        "ingest %s: %d ok, %d failed, %d already ingested, %.1f s",
        run.run_id,
        counts["ok"],
        counts["failed"],
        counts["already_ingested"],
        timings["total"],
    )
    publish_summary("ingest", summary.to_markdown(), f"glscl ingest run {run.run_id}")
    return summary
