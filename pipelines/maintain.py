"""The maintain flow: table upkeep. Compacts the small fragments that every ingest commit leaves, brings indexes
up to date (the open-source build never indexes new rows by itself) and removes old table versions, reporting
each table before and after, and checking that no row was lost or duplicated on the way.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import pyarrow as pa
from lancedb.table import Table
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.artifacts import publish_summary
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog, StoreConfig
from schemas.tables import PRIMARY_KEY, PRIMARY_KEY_POSITION, VIDEO_INDEX_PREFIX, segment_vector_width
from workers.search.indexes import AnnConfig, has_vector_index, retrain_vector_indexes
from workers.search.projection import load_projection

DEFAULT_RETENTION = timedelta(days=7)


class RowCheckError(RuntimeError):
    """Upkeep changed a table's rows: a key that was stored before is gone, duplicated, or the count moved."""


@dataclass(frozen=True)
class MaintainConfig:
    """Which database and tables to keep up (no names: every table in it), and how long old versions stay.

    Versions younger than `retain_versions_older_than` stay readable (time travel, readers still on them). A
    zero window removes all but the newest, which breaks any other process writing the table at that moment.
    """

    store: StoreConfig = field(default_factory=StoreConfig)
    retain_versions_older_than: timedelta = DEFAULT_RETENTION
    tables: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse a negative retention window (a typo, not a policy)."""
        if self.retain_versions_older_than < timedelta(0):
            raise ValueError(f"the retention window must be 0 or more, got {self.retain_versions_older_than}")


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


@dataclass
class MaintainSummary:
    """The outcome of a maintain run: one entry per table, the retention window, and the table versions after."""

    run_id: str
    retain_hours: float
    tables: list[TableUpkeep]
    table_versions: dict[str, int]
    seconds: float

    def to_markdown(self) -> str:
        """A short human-readable report, one table row per maintained table."""
        lines = [
            f"## maintain run {self.run_id}",
            "",
            f"- kept versions younger than {self.retain_hours:g} h; {self.seconds:.2f} s in all",
            "",
            "| table | rows | fragments | versions | unindexed rows | bytes | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in self.tables:
            unindexed = ", ".join(
                f"{name} {t.before.unindexed_rows[name]} -> {t.after.unindexed_rows.get(name, 0)}"
                for name in t.before.unindexed_rows
            )
            lines.append(
                f"| {t.table} | {t.after.rows} | {t.before.fragments} -> {t.after.fragments} | "
                f"{t.before.versions} -> {t.after.versions} | {unindexed or 'no index'} | "
                f"{t.before.total_bytes} -> {t.after.total_bytes} | {t.seconds:.2f} |"
            )
        return "\n".join(lines)


def key_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The table's key columns, as its schema marks them (Lance primary-key field metadata, in key order)."""
    marked = [f for f in schema if (f.metadata or {}).get(PRIMARY_KEY) == b"true"]
    return tuple(f.name for f in sorted(marked, key=lambda f: int(f.metadata[PRIMARY_KEY_POSITION])))


def read_state(table: Table) -> tuple[TableState, Counter | None]:
    """The table's state at its latest version, and how often each key occurs there (None: no known key).

    Everything is read from one pinned version, so a writer committing meanwhile cannot skew the numbers."""
    table.checkout_latest()
    version = table.version
    table.checkout(version)
    stats = table.stats()
    fragments = stats["fragment_stats"]
    unindexed = {}
    for index in table.list_indices():
        index_stats = table.index_stats(index.name)
        unindexed[index.name] = index_stats.num_unindexed_rows if index_stats else 0
    state = TableState(
        version=version,
        rows=stats["num_rows"],
        fragments=fragments["num_fragments"],
        small_fragments=fragments["num_small_fragments"],
        versions=len(table.list_versions()),
        total_bytes=stats["total_bytes"],
        unindexed_rows=unindexed,
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


@task(cache_policy=NO_CACHE)
def upkeep(store: StoreConfig, name: str, retain: timedelta) -> TableUpkeep:
    """One table's upkeep as a Prefect task, so each table shows up (and fails) on its own."""
    return maintain_table(Catalog(store), name, retain)


def _counts(done: list[TableUpkeep]) -> dict[str, int]:
    return {
        "tables": len(done),
        "rows": sum(t.after.rows for t in done),
        "fragments_before": sum(t.before.fragments for t in done),
        "fragments_after": sum(t.after.fragments for t in done),
        "versions_before": sum(t.before.versions for t in done),
        "versions_after": sum(t.after.versions for t in done),
        "unindexed_rows_before": sum(sum(t.before.unindexed_rows.values()) for t in done),
        "unindexed_rows_after": sum(sum(t.after.unindexed_rows.values()) for t in done),
    }


@flow(name="glscl-maintain")
def maintain_flow(config: MaintainConfig) -> MaintainSummary:
    """Keep up every table of a database (or the named ones), recording the run in `runs`."""
    logger = get_run_logger()
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "maintain", asdict(config)) as run:
        present = catalog.table_names()
        missing = sorted(set(config.tables) - set(present))
        if missing:
            raise FileNotFoundError(f"no table {', '.join(map(repr, missing))} in {config.store.uri}")
        done = []
        for name in config.tables or present:
            done.append(upkeep(config.store, name, config.retain_versions_older_than))
            t = done[-1]
            logger.info(
                "%s: %d rows, fragments %d -> %d, versions %d -> %d, %.2f s",
                name,
                t.after.rows,
                t.before.fragments,
                t.after.fragments,
                t.before.versions,
                t.after.versions,
                t.seconds,
            )
    seconds = time.perf_counter() - start
    timings = {t.table: t.seconds for t in done} | {"total": seconds}
    versions = run.finish("completed", _counts(done), {}, timings)
    hours = config.retain_versions_older_than.total_seconds() / 3600
    summary = MaintainSummary(run.run_id, hours, done, versions, seconds)
    publish_summary("maintain", summary.to_markdown(), f"glscl maintain run {run.run_id}")
    return summary
