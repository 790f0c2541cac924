"""Upkeep of one table: compact its fragments, bring its indexes up to date and prune old versions in one
`optimize` call (then retrain a video index's vector indexes, which compaction degrades), reading the table's
state before and after from pinned versions and checking that no stored row was lost or duplicated."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from lancedb.table import Table

from schemas.catalog import Catalog
from schemas.tables import VIDEO_INDEX_PREFIX, key_columns, segment_vector_width
from workers.index.config import AnnConfig
from workers.index.indexes import has_vector_index, retrain_vector_indexes, unindexed_rows
from workers.index.projection import load_projection


class RowCheckError(RuntimeError):
    """Upkeep changed a table's rows: a key that was stored before is gone, duplicated, or the count moved."""


@dataclass
class TableState:
    """One table at one version: rows, fragments (and how many are small), versions kept, bytes, and the rows
    each index does not cover yet."""

    version: int
    rows: int
    fragments: int
    small_fragments: int
    versions: int
    total_bytes: int
    unindexed_rows: dict[str, int]


@dataclass
class TableUpkeep:
    """What upkeep did to one table: its state before and after, the rows other writers committed meanwhile,
    and the time it took."""

    table: str
    before: TableState
    after: TableState
    rows_written_meanwhile: int
    seconds: float


def read_state(table: Table) -> tuple[TableState, Counter | None]:
    """The table's state at its latest version, and how often each key occurs there (None: no known key).

    Everything is read from one pinned version, so a writer committing meanwhile cannot skew the numbers."""
    table.checkout_latest()
    version = table.version
    table.checkout(version)
    stats = table.stats()
    fragments = stats["fragment_stats"]
    state = TableState(
        version=version,
        rows=stats["num_rows"],
        fragments=fragments["num_fragments"],
        small_fragments=fragments["num_small_fragments"],
        versions=len(table.list_versions()),
        total_bytes=stats["total_bytes"],
        unindexed_rows=unindexed_rows(table),
    )
    key = key_columns(table.schema)
    keys = None
    if key:
        rows = table.search().select(list(key)).limit(None).to_arrow()
        keys = Counter(zip(*(rows[name].to_pylist() for name in key), strict=True))
    table.checkout_latest()
    return state, keys


def check_rows(
    name: str, before: TableState, after: TableState, keys_before: Counter | None, keys_after: Counter | None
) -> int:
    """Raise RowCheckError unless every row stored before is still there exactly as often; returns the rows that
    other writers added meanwhile. A table without a known key must keep its exact row count."""
    if keys_before is None or keys_after is None:
        if after.rows != before.rows:
            raise RowCheckError(f"table {name!r}: {before.rows} rows before upkeep, {after.rows} after")
        return 0
    lost = [key for key, n in keys_before.items() if keys_after[key] < n]
    grown = [key for key, n in keys_after.items() if n > max(keys_before[key], 1)]
    if lost or grown:
        raise RowCheckError(
            f"table {name!r}: upkeep lost {len(lost)} keys (e.g. {lost[:3]}) and duplicated {len(grown)} "
            f"(e.g. {grown[:3]}); {before.rows} rows at version {before.version}, {after.rows} at {after.version}"
        )
    return after.rows - before.rows


def maintain_table(catalog: Catalog, name: str, retain: timedelta) -> TableUpkeep:
    """Compact, re-index and prune one table (one `optimize` call, and a retrain of a video index's vector
    indexes with the settings it was built with, since LanceDB's compaction degrades it), reading its state
    before and after."""
    start = time.perf_counter()
    table = catalog.open_table(name)
    before, keys_before = read_state(table)
    table.optimize(cleanup_older_than=retain)
    if name.startswith(VIDEO_INDEX_PREFIX) and has_vector_index(table):
        projection = load_projection(catalog, name)
        ann = AnnConfig(**projection.ann) if projection and projection.ann else AnnConfig()
        retrain_vector_indexes(table, ann, segment_vector_width(table.schema))
    after, keys_after = read_state(table)
    meanwhile = check_rows(name, before, after, keys_before, keys_after)
    return TableUpkeep(name, before, after, meanwhile, time.perf_counter() - start)
