"""The index flow: encode every ok video not yet indexed for a checkpoint (shards on Ray), write its
`video_index` rows with the projected segment vectors, then build or refresh the vector, full-text and scalar
indexes. Re-running adds only new videos and folds them into the indexes (incremental, no rebuild)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from prefect import flow, get_run_logger

from pipelines.artifacts import publish_summary
from pipelines.configs import IndexConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from schemas.tables import segment_vector_width
from workers.index.gallery_split import copy_into_shards
from workers.index.indexes import IndexHealth, combined_health, index_health
from workers.index.projection import Projection, load_projection, save_projection
from workers.index.video_index import (
    CheckpointIndex,
    check_layout,
    checkpoint_index,
    index_shards,
    pending_videos,
    refresh_indexes,
    write_index,
)
from workers.ray_jobs import ensure_ray, index_job


@dataclass
class ShardState:
    """One gallery shard's table before and after an index run."""

    table: str
    health_before: IndexHealth | None
    health_after: IndexHealth


@dataclass
class IndexSummary:
    """What an index run did and the state it left: rows, fragments, unindexed rows (summed over the gallery shards
    of a sharded index, each shard's in `shards`), projection quality."""

    table: str
    checkpoint_sha256: str
    added: int
    health_before: IndexHealth | None
    health_after: IndexHealth
    actions: list[str]
    projection: dict[str, float]
    timings: dict[str, float]
    shards: list[ShardState] = field(default_factory=list)

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
            lines.append(f"| before | {before.rows} | {before.fragments} | {_per_index(before.unindexed)} |")
        after = self.health_after
        lines.append(f"| after | {after.rows} | {after.fragments} | {_per_index(after.unindexed)} |")
        for shard in self.shards:
            health = shard.health_after
            lines.append(f"| {shard.table} | {health.rows} | {health.fragments} | {_per_index(health.unindexed)} |")
        lines += [
            "",
            f"- projection: {self.projection}",
            *(f"- {action}" for action in self.actions),
            "- seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)


def _per_index(unindexed: dict[str, int]) -> str:
    """Unindexed rows per indexed column, as `column rows` pairs (`none indexed yet` before any index)."""
    return ", ".join(f"{column} {rows}" for column, rows in unindexed.items()) or "none indexed yet"


def _log_progress(written: int, videos: int) -> None:
    get_run_logger().info("indexed %d/%d videos", written, videos)


def _log_copied(read: int, rows: int) -> None:
    get_run_logger().info("copied %d/%d rows of the unsharded index into its gallery shards", read, rows)


@flow(name="glscl-index")
def index_flow(config: IndexConfig) -> IndexSummary:
    """Index the checkpoint's new videos (into their gallery shards' tables when the index is sharded) and bring
    each table's indexes up to date."""
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "index", asdict(config)) as run:
        ann = config.ann
        index = checkpoint_index(config.checkpoint, ann.vector_dim, ann.segments, catalog, ann.encodings)
        shards = index.gallery(config.gallery_shards)
        before = {shard.spec.name: _health_before(catalog, shard, config) for shard in shards}
        copied = 0
        if len(shards) > 1 and catalog.exists(index.spec):
            base = catalog.open_existing(index.spec)
            check_layout(base.schema, index, config.ann)  # its rows are copied as they are
            copied = copy_into_shards(catalog, base, shards, _log_copied)
        ids = pending_videos(catalog, shards, config.splits)
        timings = {"select": time.perf_counter() - start}
        added, projection = copied, _stored_projection(catalog, [index, *shards])
        if ids:
            ensure_ray(config.ray)
            jobs = index_shards(
                config.store, config.checkpoint, index, ids, run.run_id, config.shard_videos, config.ann
            )
            encoded, projection = write_index(
                catalog, shards, index_job(jobs), len(ids), projection, config.ann, _log_progress
            )
            added += encoded
        timings["encode_write"] = time.perf_counter() - start - timings["select"]
        if projection is None:
            raise ValueError(f"no videos to index in {config.store.uri}: ingest videos with the checkpoint's backbone")
        for shard in shards:
            if load_projection(catalog, shard.spec.name) is None:
                save_projection(catalog, shard.spec.name, projection)
        actions, states = [], []
        for shard in shards:
            table = catalog.open(shard.spec, index.embed_dim)
            update, projection = refresh_indexes(catalog, table, shard, config.ann, projection, get_run_logger().info)
            named = len(shards) > 1
            actions += [f"{shard.spec.name}: {action}" if named else action for action in update.actions]
            states.append(ShardState(shard.spec.name, before[shard.spec.name], index_health(table)))
        timings["indexes"] = time.perf_counter() - start - sum(timings.values())
        summary = IndexSummary(
            index.spec.name,
            index.sha256,
            added,
            None if None in before.values() else combined_health([state.health_before for state in states]),
            combined_health([state.health_after for state in states]),
            actions,
            {
                "dim": segment_vector_width(table.schema),
                "fitted_on": projection.fitted_on,
                "captured_energy": round(projection.captured_energy, 4),
            },
            timings,
            states if len(shards) > 1 else [],
        )
    run.finish("completed", {"added": added, "rows": summary.health_after.rows}, {}, timings)
    publish_summary("index", summary.to_markdown(), f"glscl index run {run.run_id}")
    return summary


def _health_before(catalog: Catalog, shard: CheckpointIndex, config: IndexConfig) -> IndexHealth | None:
    """A shard table's health before the run (None: not built yet), after checking its layout matches the run's."""
    if not catalog.exists(shard.spec):
        return None
    existing = catalog.open_existing(shard.spec)
    check_layout(existing.schema, shard, config.ann)
    return index_health(existing)


def _stored_projection(catalog: Catalog, tables: list[CheckpointIndex]) -> Projection | None:
    """The projection stored for the first of `tables` that has one (None before the first run): the shards of a
    gallery share one, and a gallery split into shards later keeps the basis of its unsharded index."""
    return next((p for table in tables if (p := load_projection(catalog, table.spec.name)) is not None), None)
