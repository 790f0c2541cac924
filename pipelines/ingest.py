"""The ingest flow: discover -> captions/texts -> per shard (decode+encode on Ray, commit) -> report.

Prefect is the control plane (a handful of tasks, one per stage per shard), Ray the data plane (each heavy
step is one Ray Data job). Every commit merges on the table key, so a second run writes nothing and a run
killed half-way resumes where it stopped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.artifacts import publish_summary
from pipelines.configs import IngestConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog, sql_string
from schemas.tables import CAPTIONS, FRAMES, TEXTS, VIDEO_FAILED, VIDEOS
from workers.hashing import content_ids, text_id
from workers.ray_jobs import ensure_ray, frames_job, texts_job
from workers.rows import captions_table, frames_table, texts_table, videos_table
from workers.sources import VideoItem, read_source
from workers.terminal import progress

EXIT_OK = 0
EXIT_SOME_FAILED = 3


@dataclass
class Discovery:
    """What a run has to do: videos to decode, captions to store and encode, and what it skips and why."""

    pending: list[dict]
    captions: list[dict]
    texts: list[dict]
    counts: Counter
    failures: Counter


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


def _existing(catalog: Catalog, config: IngestConfig) -> tuple[set[str], set[str], set[str], set[str]]:
    """Keys already stored: encoded videos, failed videos, stored captions, encoded texts."""
    model = sql_string(config.backbone.model_id)
    sampling = sql_string(config.sampling.hash(config.backbone.image_size))
    encoded = catalog.scan(FRAMES, ["video_id"], f"model_id = {model} AND sampling_hash = {sampling}")
    failed = catalog.scan(VIDEOS, ["video_id"], f"status = {sql_string(VIDEO_FAILED)}")
    captions = catalog.scan(CAPTIONS, ["caption_id"])
    texts = catalog.scan(TEXTS, ["caption_id"], f"model_id = {model} AND max_words = {int(config.max_words)}")
    return (
        set(encoded["video_id"].to_pylist()),
        set(failed["video_id"].to_pylist()),
        set(captions["caption_id"].to_pylist()),
        set(texts["caption_id"].to_pylist()),
    )


def _caption_rows(item: VideoItem, video_id: str) -> list[dict]:
    return [
        {
            "caption_id": text_id(video_id, item.dataset, item.split, item.source_id, c.kind, c.order, c.text),
            "video_id": video_id,
            "source_id": item.source_id,
            "dataset": item.dataset,
            "split": item.split,
            "kind": c.kind,
            "order": c.order,
            "text": c.text,
            "start_s": c.start,
            "end_s": c.end,
        }
        for c in item.captions
    ]


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
    catalog = Catalog(config.store)
    encoded, failed, stored_captions, encoded_texts = _existing(catalog, config)
    retry = config.retry_failed
    pending, captions, seen = [], [], set()
    for item, video_id in zip(items, ids, strict=True):
        counts["discovered"] += 1
        if video_id is None:
            video_id = "unreadable-" + text_id(item.path)
        captions.extend(_caption_rows(item, video_id))
        if video_id in seen:
            counts["duplicate_content"] += 1
            continue
        seen.add(video_id)
        if video_id in encoded:
            counts["already_ingested"] += 1
        elif video_id in failed and not retry:
            counts["known_failed"] += 1
        else:
            pending.append(
                {
                    "video_id": video_id,
                    "source_id": item.source_id,
                    "source_path": item.path,
                    "path": item.path,
                    "dataset": item.dataset,
                    "split": item.split,
                    "size_bytes": _size(item.path),
                    "retry": video_id in failed,
                }
            )
    unique_captions = list({c["caption_id"]: c for c in captions}.values())
    new_captions = [c for c in unique_captions if c["caption_id"] not in stored_captions]
    texts = [
        {"caption_id": c["caption_id"], "text": c["text"]}
        for c in unique_captions
        if c["caption_id"] not in encoded_texts
    ]
    counts["pending"] = len(pending)
    logger.info(
        "discovered %d videos: %d pending, %d already ingested, %d known failed, %d duplicates",
        counts["discovered"],
        len(pending),
        counts["already_ingested"],
        counts["known_failed"],
        counts["duplicate_content"],
    )
    return Discovery(pending, new_captions, texts, counts, failures)


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


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


@dataclass
class ShardResult:
    """Encoded rows of one shard, ready to commit, with the stage times measured inside the workers."""

    videos: list[dict]
    frames: pa.Table
    decode_seconds: float
    encode_seconds: float
    wall_seconds: float


@task(cache_policy=NO_CACHE)
def decode_encode_shard(config: IngestConfig, shard: list[dict], run_id: str) -> ShardResult:
    """One Ray Data job: decode the shard's videos on CPU tasks and encode them in model actors."""
    start = time.perf_counter()
    sampling_hash = config.sampling.hash(config.backbone.image_size)
    sampling = config.sampling.describe(config.backbone.image_size)
    videos, frames, decode_s, encode_s = [], [], 0.0, 0.0
    for batch in frames_job(shard, config.sampling, config.backbone, config.ray):
        n = len(batch["video_id"])
        columns = [name for name in (*VIDEOS.schema().names, "retry") if name in batch]
        videos.extend({name: _plain(batch[name][i]) for name in columns} for i in range(n))
        frames.append(frames_table(batch, config.backbone.model_id, sampling, sampling_hash, run_id))
        decode_s += float(np.sum(batch["decode_seconds"]))
        encode_s += float(np.sum(batch["encode_seconds"]))
    return ShardResult(videos, pa.concat_tables(frames), decode_s, encode_s, time.perf_counter() - start)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


@task(cache_policy=NO_CACHE)
def commit_shard(config: IngestConfig, result: ShardResult, run_id: str) -> dict[str, int]:
    """Write a shard: `videos` first (new rows; failed rows retried successfully are updated), then `frames`."""
    catalog = Catalog(config.store)
    retried, fresh = [], []
    for video in result.videos:
        (retried if video.pop("retry") else fresh).append(video)
    inserted = catalog.merge(VIDEOS, videos_table(fresh, run_id)).inserted
    updated = catalog.merge(VIDEOS, videos_table(retried, run_id), update=True).updated if retried else 0
    frames = catalog.merge(FRAMES, result.frames, config.backbone.embed_dim).inserted
    return {"videos_inserted": inserted, "videos_updated": updated, "frames_rows": frames}


@dataclass
class ShardTally:
    """Running totals over the shards of a run, for the summary."""

    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    frames_wall: float = 0.0
    commit_seconds: float = 0.0
    frames: int = 0

    def add(self, result: ShardResult, commit_seconds: float) -> int:
        """Add one committed shard; returns its frame count."""
        shard_frames = int(np.sum(result.frames["num_frames"].to_numpy())) if result.frames.num_rows else 0
        self.decode_seconds += result.decode_seconds
        self.encode_seconds += result.encode_seconds
        self.frames_wall += result.wall_seconds
        self.commit_seconds += commit_seconds
        self.frames += shard_frames
        return shard_frames

    def throughput(self, attempted: int) -> dict[str, float]:
        """Videos and frames per second, end to end and per stage worker."""
        return {
            "videos_per_s_end_to_end": attempted / max(self.frames_wall + self.commit_seconds, 1e-9),
            "decode_videos_per_s_per_worker": attempted / self.decode_seconds if self.decode_seconds else 0.0,
            "decode_frames_per_s_per_worker": self.frames / self.decode_seconds if self.decode_seconds else 0.0,
            "encode_frames_per_s_per_actor": self.frames / self.encode_seconds if self.encode_seconds else 0.0,
        }


def _ingest_shards(config: IngestConfig, pending: list[dict], run_id: str, counts: Counter, failures: Counter):
    logger = get_run_logger()
    tally = ShardTally()
    shards = [pending[i : i + config.shard_size] for i in range(0, len(pending), config.shard_size)]
    with progress("ingest shards", len(shards), "shards") as update:
        for number, shard in enumerate(shards, start=1):
            result = decode_encode_shard(config, shard, run_id)
            commit_start = time.perf_counter()
            written = commit_shard(config, result, run_id)
            shard_frames = tally.add(result, time.perf_counter() - commit_start)
            shard_failures = Counter(v["error"] for v in result.videos if v["status"] == VIDEO_FAILED)
            failures.update(shard_failures)
            failed = sum(shard_failures.values())
            counts.update(ok=len(result.videos) - failed, failed=failed, frames=shard_frames)
            counts["frames_rows_written"] += written["frames_rows"]
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
