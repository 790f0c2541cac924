"""The index flow: encode every ok video not yet indexed for a checkpoint (shards on Ray), write its
`video_index` rows with the projected segment vectors, then build or refresh the vector, full-text and scalar
indexes. Re-running adds only new videos and folds them into the indexes (incremental, no rebuild)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import ray
import torch
from prefect import flow, get_run_logger

from glscl.search_vectors import captured_energy, fit_projection
from pipelines.artifacts import publish_summary
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog, StoreConfig, sql_in, sql_string
from schemas.tables import FRAMES, VIDEO_OK, VIDEOS, segment_vector_width, stored_segment_columns
from workers.ray_jobs import RayConfig, ensure_ray
from workers.search.indexes import AnnConfig, IndexHealth, ensure_indexes, index_health
from workers.search.projection import Projection, load_projection, save_projection
from workers.video_index import (
    SEARCH_VECTOR,
    CheckpointIndex,
    IndexShard,
    checkpoint_index,
    index_rows,
    project_rows,
    segment_matrix,
)


@dataclass(frozen=True)
class IndexConfig:
    """Which checkpoint to index, which videos (splits; empty = all), shard size and the ANN settings."""

    checkpoint: str
    store: StoreConfig = field(default_factory=StoreConfig)
    splits: tuple[str, ...] = ()
    shard_videos: int = 512
    ann: AnnConfig = field(default_factory=AnnConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class IndexSummary:
    """What an index run did and the state it left: rows, fragments, unindexed rows, projection quality."""

    table: str
    checkpoint_sha256: str
    added: int
    health_before: IndexHealth | None
    health_after: IndexHealth
    actions: list[str]
    projection: dict[str, float]
    timings: dict[str, float]

    def to_markdown(self) -> str:
        """A short report for people."""
        before = self.health_before
        lines = [
            f"## index {self.table}: {self.added} videos added, {self.health_after.rows} in all",
            "",
            "| | rows | fragments | unindexed rows |",
            "|---|---|---|---|",
        ]
        if before is not None:
            lines.append(f"| before | {before.rows} | {before.fragments} | {before.unindexed} |")
        after = self.health_after
        lines.append(f"| after | {after.rows} | {after.fragments} | {after.unindexed} |")
        lines += [
            "",
            f"- projection: {self.projection}",
            *(f"- {action}" for action in self.actions),
            "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)


def pending_videos(catalog: Catalog, index: CheckpointIndex, splits: tuple[str, ...]) -> list[str]:
    """Ok videos with features for the checkpoint's backbone and sampling that the index does not hold yet."""
    where = f"status = {sql_string(VIDEO_OK)}"
    if splits:
        where += " AND " + sql_in("split", list(splits))
    videos = set(catalog.scan(VIDEOS, ["video_id"], where)["video_id"].to_pylist())
    encoded = catalog.scan(
        FRAMES,
        ["video_id"],
        f"model_id = {sql_string(index.model_id)} AND sampling_hash = {sql_string(index.sampling_hash)}",
    )
    indexed = set(catalog.scan(index.spec, ["video_id"])["video_id"].to_pylist())
    return sorted((videos & set(encoded["video_id"].to_pylist())) - indexed)


def _check_layout(schema, index: CheckpointIndex, ann: AnnConfig) -> None:
    """Refuse a vector width or segment count other than the existing index's: its projection, vector columns
    and indexes are fixed when it is first built."""
    wanted = index.spec.schema(index.embed_dim)
    stored = (segment_vector_width(schema), len(stored_segment_columns(schema)))
    asked = (segment_vector_width(wanted), len(stored_segment_columns(wanted)))
    if stored != asked:
        raise ValueError(
            f"video index {index.spec.name} holds {stored[1]} segment vectors of {stored[0]} dims per video but "
            f"--vector-dim {ann.vector_dim} --segments {ann.segments} asks for {asked[1]} of {asked[0]}: re-run "
            f"with --vector-dim {stored[0]} --segments {stored[1]}, or drop the table to rebuild it"
        )


def _fit(rows: list, ann: AnnConfig, width: int) -> Projection:
    vectors = np.concatenate([segment_matrix(part[SEARCH_VECTOR]) for part in rows])[: ann.projection_sample]
    sample = torch.from_numpy(vectors)
    basis = fit_projection(sample, width)
    return Projection(basis.numpy(), len(vectors), captured_energy(sample, basis), asdict(ann))


def _encode_and_write(
    config: IndexConfig,
    catalog: Catalog,
    index: CheckpointIndex,
    ids: list[str],
    run_id: str,
    projection: Projection | None,
) -> tuple[int, Projection]:
    """Encode shards on Ray and write them as they finish; without a stored projection (the first run) it is
    fitted on the early shards."""
    logger = get_run_logger()
    width = segment_vector_width(index.spec.schema(index.embed_dim))
    shards = [
        IndexShard(
            config.store,
            config.checkpoint,
            index.model_id,
            index.sampling_hash,
            tuple(ids[i:j]),
            run_id,
            config.ann.segments,
        )
        for i, j in ((i, min(i + config.shard_videos, len(ids))) for i in range(0, len(ids), config.shard_videos))
    ]
    task = ray.remote(num_cpus=1, max_retries=2)(index_rows)
    capacity = max(1, int(ray.available_resources().get("CPU", 1)))
    pending, waiting, buffered, written = list(shards), [], [], 0
    while pending or waiting:
        while pending and len(waiting) < 2 * capacity:
            waiting.append(task.remote(pending.pop(0)))
        done, waiting = ray.wait(waiting, num_returns=1)
        buffered.append(ray.get(done[0]))
        buffered_rows = sum(part.num_rows for part in buffered)
        if projection is None and (pending or waiting) and buffered_rows < config.ann.projection_sample:
            continue
        if projection is None:
            projection = _fit(buffered, config.ann, width)
            save_projection(catalog, index.spec.name, projection)
        for part in buffered:
            rows = project_rows(part, projection.basis, index.spec, index.embed_dim)
            catalog.merge(index.spec, rows, index.embed_dim)
            written += part.num_rows
        buffered = []
        logger.info("indexed %d/%d videos", written, len(ids))
    return written, projection


@flow(name="glscl-index")
def index_flow(config: IndexConfig) -> IndexSummary:
    """Index the checkpoint's new videos and bring the table's indexes up to date."""
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "index", asdict(config)) as run:
        index = checkpoint_index(config.checkpoint, config.ann.vector_dim, config.ann.segments, catalog)
        before = None
        if catalog.exists(index.spec):
            existing = catalog.open_existing(index.spec)
            _check_layout(existing.schema, index, config.ann)
            before = index_health(existing)
        ids = pending_videos(catalog, index, config.splits)
        timings = {"select": time.perf_counter() - start}
        added, projection = 0, load_projection(catalog, index.spec.name)
        if ids:
            ensure_ray(config.ray)
            added, projection = _encode_and_write(config, catalog, index, ids, run.run_id, projection)
        timings["encode_write"] = time.perf_counter() - start - timings["select"]
        if projection is None:
            raise ValueError(f"no videos to index in {config.store.uri}: ingest videos with the checkpoint's backbone")
        table = catalog.open_existing(index.spec)
        width = segment_vector_width(table.schema)
        update = ensure_indexes(table, config.ann, width)
        if update.vector_indexes_built and projection.ann != asdict(config.ann):
            projection = replace(projection, ann=asdict(config.ann))
            save_projection(catalog, index.spec.name, projection)
        timings["indexes"] = time.perf_counter() - start - sum(timings.values())
        summary = IndexSummary(
            index.spec.name,
            index.sha256,
            added,
            before,
            index_health(table),
            update.actions,
            {"dim": width, "fitted_on": projection.fitted_on, "captured_energy": round(projection.captured_energy, 4)},
            timings,
        )
    run.finish("completed", {"added": added, "rows": summary.health_after.rows}, {}, timings)
    publish_summary("index", summary.to_markdown(), f"glscl index run {run.run_id}")
    return summary
