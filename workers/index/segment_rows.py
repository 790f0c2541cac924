"""Building segment rows: every (video, segment) vector of a video index as a row of a companion table with one
vector index over them all, so a query runs one ANN search instead of one per segment column (the query side:
`workers.search.candidates.segment_rows`).

On hard galleries (events anywhere, peak-frame segments) eight per-column HNSW graphs cost 52-77 ms of LanceDB time
at 100k videos; one graph over the same 800,000 vectors reaches the same recall in about half (benchmarks/
RESULTS.md). The companion is derived data, kept in generations (`<index>_segments_g<N>`). New videos are appended
to the newest complete generation (LanceDB searches rows no index covers yet exactly, and a delta index then covers
them); a new generation is built whole when videos left the index or its index drifted too far from its training.
A generation is complete once its vector index exists, so a searcher never reads one half written. A finished
rebuild keeps the complete generation searchers were reading and any newer one another index run may still be
writing, and drops those before. Its rows carry the video id, not the video table's row id, because compacting the
video table renumbers rows: a searcher maps companion rows to video rows in memory (`RowMap`), joined on the id
whenever either table changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.catalog import Catalog, sql_in
from schemas.tables import (
    SEGMENT_ROW_VECTOR,
    TableSpec,
    segment_rows_generation,
    segment_rows_name,
    segment_rows_spec,
    segment_vector_width,
    stored_segment_columns,
)
from workers.index.ann_vectors import stacked_segments
from workers.index.config import AnnConfig
from workers.index.delta import add_delta_indexes, vector_drift
from workers.index.indexes import IndexUpdate, vector_index, vector_index_name

_BATCH = 8192


def generations(catalog: Catalog, index_name: str) -> list[int]:
    """The generations of the video index's segment rows present in the database, newest first."""
    found = (segment_rows_generation(index_name, name) for name in catalog.table_names())
    return sorted((generation for generation in found if generation is not None), reverse=True)


def _open_if_complete(catalog: Catalog, index_name: str, generation: int) -> lancedb.table.Table | None:
    """A generation's table if it is complete (its vector index exists), else None: being written, abandoned, or
    listed but gone or not committed yet when opened (another process dropping or creating it meanwhile)."""
    try:
        table = catalog.open_table(segment_rows_name(index_name, generation))
    except ValueError as error:
        if "not found" in str(error):
            return None
        raise
    return table if table.list_indices() else None


def current_segment_rows(catalog: Catalog, index_name: str) -> lancedb.table.Table | None:
    """The newest complete generation of the video index's segment rows, or None."""
    for generation in generations(catalog, index_name):
        table = _open_if_complete(catalog, index_name, generation)
        if table is not None:
            return table
    return None


def _superseded(catalog: Catalog, index_name: str, built: int) -> list[int]:
    """Generations older than the newest complete one before `built` (which searchers may still be reading and so is
    kept, as are generations between it and `built` that another index run may be writing)."""
    older = [generation for generation in generations(catalog, index_name) if generation < built]
    served = next((g for g in older if _open_if_complete(catalog, index_name, g) is not None), None)
    return [] if served is None else [generation for generation in older if generation < served]


def _new_generation(catalog: Catalog, index_name: str, width: int) -> tuple[TableSpec, lancedb.table.Table]:
    """Create the next generation's empty table; a number another index run has just taken is skipped."""
    present = generations(catalog, index_name)
    generation = (present[0] + 1) if present else 1
    while True:
        spec = segment_rows_spec(index_name, generation, width)
        try:
            return spec, catalog.db.create_table(spec.name, schema=spec.schema())
        except ValueError:
            if spec.name not in catalog.table_names():
                raise
            generation += 1


def _exploded(batch: pa.RecordBatch, columns: list[str], width: int) -> pa.Table:
    """One row per (video, segment) of a batch of video index rows."""
    count, segments = batch.num_rows, len(columns)
    vectors = stacked_segments(batch, columns)
    return pa.table(
        {
            "video_id": pc.take(batch["video_id"], pa.array(np.repeat(np.arange(count), segments))),
            "segment": pa.array(np.tile(np.arange(segments, dtype=np.int16), count)),
            SEGMENT_ROW_VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width),
        }
    )


def _segment_row_batches(table: lancedb.table.Table) -> Iterator[pa.Table]:
    columns, width = stored_segment_columns(table.schema), segment_vector_width(table.schema)
    for batch in table.search().select(["video_id", *columns]).to_batches(_BATCH):
        if batch.num_rows:
            yield _exploded(batch, columns, width)


def _video_ids(table: lancedb.table.Table, where: str | None = None) -> set[str]:
    search = table.search().select(["video_id"])
    return set((search.where(where) if where else search).to_arrow()["video_id"].to_pylist())


def append_segment_rows(
    companion: lancedb.table.Table, table: lancedb.table.Table, video_ids: list[str], merge: int
) -> None:
    """Add the segment rows of the video index's videos `video_ids` (ones the generation does not hold) to a complete
    generation and index them in a delta index on its trained partitions (merged with the latest `merge` deltas), in
    proportion to their number. Each batch is one commit, so a run killed midway leaves whole videos, and the next
    run appends only the videos still missing."""
    columns, width = stored_segment_columns(table.schema), segment_vector_width(table.schema)
    for start in range(0, len(video_ids), _BATCH):
        batch = table.search().where(sql_in("video_id", video_ids[start : start + _BATCH]))
        rows = batch.select(["video_id", *columns]).to_arrow()
        exploded = pa.concat_tables(_exploded(part, columns, width) for part in rows.to_batches() if part.num_rows)
        companion.add(exploded)
    add_delta_indexes(companion, [vector_index_name(SEGMENT_ROW_VECTOR)], merge)


def rebuild_segment_rows(
    catalog: Catalog, table: lancedb.table.Table, config: AnnConfig, progress: Callable[[str], None]
) -> str:
    """Write every segment vector of the video index `table` as a row of a new companion generation, build its one
    vector index (`config`'s type and sizes), then drop the generations it supersedes (see `_superseded`). Tells
    `progress` how the writing goes and when the index build starts (minutes on large galleries: 985 s for 800,000
    rows of 1,024 dims on 2 cores). Returns what it did, in words."""
    width, segments = segment_vector_width(table.schema), len(stored_segment_columns(table.schema))
    spec, companion = _new_generation(catalog, table.name, width)
    videos, written = table.count_rows(), 0
    for rows in _segment_row_batches(table):
        companion.add(rows)
        written += rows.num_rows // segments
        progress(f"segment rows: {written}/{videos} videos written to {spec.name}")
    count = companion.count_rows()
    progress(f"segment rows: building one {config.index_type} index over {count} rows")
    companion.create_index(SEGMENT_ROW_VECTOR, config=vector_index(config, count, width))
    _drop(catalog, table.name, _superseded(catalog, table.name, segment_rows_generation(table.name, spec.name)))
    return f"built one {config.index_type} vector index over {count} segment rows ({spec.name})"


def ensure_segment_rows(
    catalog: Catalog,
    table: lancedb.table.Table,
    config: AnnConfig,
    progress: Callable[[str], None],
) -> IndexUpdate:
    """Bring the video index's segment rows in line with `config` and the video index, when asked for (from
    `min_rows` videos): new videos are appended to the newest complete generation (in proportion to their number);
    a new generation is built when there is none, when it holds videos the index does not, or when its index has
    drifted from its training past `config.retrain_share` (telling `progress` how that goes). Dropped when not asked
    for. Returns what it did and why, in words, and whether it built a generation (with `config`'s index type)."""
    if not config.segment_rows:
        present = generations(catalog, table.name)
        _drop(catalog, table.name, present)
        return IndexUpdate([f"dropped {len(present)} generations of segment rows"] if present else [], False)
    if table.count_rows() < config.min_rows:
        return IndexUpdate([], False)
    companion = current_segment_rows(catalog, table.name)
    if companion is None:
        return IndexUpdate([rebuild_segment_rows(catalog, table, config, progress)], True)
    videos, held = _video_ids(table), _video_ids(companion, "segment = 0")
    new, gone = sorted(videos - held), held - videos
    segments = len(stored_segment_columns(table.schema))
    drift = vector_drift(companion, vector_index_name(SEGMENT_ROW_VECTOR))
    outside = (drift.untrained + len(new) * segments) / (drift.rows + len(new) * segments)
    if gone or outside > config.retrain_share:
        why = f"{len(gone)} videos gone from the index" if gone else f"{outside:.1%} of rows outside the trained base"
        return IndexUpdate([f"{rebuild_segment_rows(catalog, table, config, progress)}: {why}"], True)
    if not new:
        return IndexUpdate([], False)
    merge = drift.to_merge(config.max_deltas)
    append_segment_rows(companion, table, new, merge)
    merged = f", {drift.merged_words(merge)}" if merge else ""
    appended = (
        f"appended {len(new)} videos to {companion.name} (delta index{merged}; {outside:.1%} outside the trained base;"
        f" it had {drift.deltas} deltas and {drift.merged} merged deltas)"
    )
    return IndexUpdate([appended], False)


def _drop(catalog: Catalog, index_name: str, generations: list[int]) -> None:
    for generation in generations:
        catalog.db.drop_table(segment_rows_name(index_name, generation))
