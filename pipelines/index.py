"""The index flow: encode every ok video not yet indexed for a checkpoint (shards on Ray), write its
`video_index` rows with the projected segment vectors, then build or refresh the vector, full-text and scalar
indexes. Re-running adds only new videos and folds them into the indexes (incremental, no rebuild)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from prefect import flow, get_run_logger

from pipelines.artifacts import publish_summary
from pipelines.configs import IndexConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from schemas.tables import segment_vector_width
from workers.index.indexes import IndexHealth, index_health
from workers.index.projection import load_projection
from workers.index.video_index import (
    check_layout,
    checkpoint_index,
    index_shards,
    pending_videos,
    refresh_indexes,
    write_index,
)
from workers.ray_jobs import ensure_ray, index_job


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
            lines.append(f"| before | {before.rows} | {before.fragments} | {_per_index(before.unindexed)} |")
        after = self.health_after
        lines.append(f"| after | {after.rows} | {after.fragments} | {_per_index(after.unindexed)} |")
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


@flow(name="glscl-index")
def index_flow(config: IndexConfig) -> IndexSummary:
    """Index the checkpoint's new videos and bring the table's indexes up to date."""
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "index", asdict(config)) as run:
        ann = config.ann
        index = checkpoint_index(config.checkpoint, ann.vector_dim, ann.segments, catalog, ann.encodings)
        before = None
        if catalog.exists(index.spec):
            existing = catalog.open_existing(index.spec)
            check_layout(existing.schema, index, config.ann)
            before = index_health(existing)
        ids = pending_videos(catalog, index, config.splits)
        timings = {"select": time.perf_counter() - start}
        added, projection = 0, load_projection(catalog, index.spec.name)
        if ids:
            ensure_ray(config.ray)
            shards = index_shards(
                config.store,
                config.checkpoint,
                index,
                ids,
                run.run_id,
                config.shard_videos,
                config.ann,
            )
            added, projection = write_index(
                catalog, index, index_job(shards), len(ids), projection, config.ann, _log_progress
            )
        timings["encode_write"] = time.perf_counter() - start - timings["select"]
        if projection is None:
            raise ValueError(f"no videos to index in {config.store.uri}: ingest videos with the checkpoint's backbone")
        table = catalog.open_existing(index.spec)
        update, projection = refresh_indexes(catalog, table, index, config.ann, projection, get_run_logger().info)
        timings["indexes"] = time.perf_counter() - start - sum(timings.values())
        summary = IndexSummary(
            index.spec.name,
            index.sha256,
            added,
            before,
            index_health(table),
            update.actions,
            {
                "dim": segment_vector_width(table.schema),
                "fitted_on": projection.fitted_on,
                "captured_energy": round(projection.captured_energy, 4),
            },
            timings,
        )
    run.finish("completed", {"added": added, "rows": summary.health_after.rows}, {}, timings)
    publish_summary("index", summary.to_markdown(), f"glscl index run {run.run_id}")
    return summary
