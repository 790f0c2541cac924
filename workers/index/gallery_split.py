"""Splitting an existing video index into gallery shards by copying its rows (schemas/gallery_shards.py): the rows
hold everything a shard needs (encodings, projected segment vectors, metadata), so resharding re-encodes nothing,
and the shards keep the index's projection basis."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from lancedb.table import Table

from schemas.catalog import Catalog
from workers.index.projection import load_projection, save_projection
from workers.index.video_index import CheckpointIndex

COPY_BATCH_ROWS = 1024


def copy_into_shards(
    catalog: Catalog, base: Table, shards: list[CheckpointIndex], progress: Callable[[int, int], None] | None = None
) -> int:
    """Copy every row of the unsharded index `base` into its gallery shard's table (rows a shard holds already are
    left as they are), and store the index's projection for each shard; returns the rows copied."""
    projection = load_projection(catalog, base.name)
    if projection is None:
        raise ValueError(f"video index {base.name} has no projection: run `glscl index` on it first")
    for shard in shards:
        save_projection(catalog, shard.spec.name, projection)
    total, seen, copied = base.count_rows(), 0, 0
    for batch in base.search().select(base.schema.names).to_batches(COPY_BATCH_ROWS):
        rows = pa.Table.from_batches([batch])
        ids = rows["video_id"].to_pylist()
        for shard in shards:
            held = shard.holds(ids)
            if held.any():
                copied += catalog.merge(shard.spec, rows.filter(pa.array(held)), shard.embed_dim).inserted
        seen += rows.num_rows
        if progress is not None:
            progress(seen, total)
    return copied
