"""The table catalogue: open or create glscl tables in one LanceDB database, check schema versions, merge rows. The
only module that connects to LanceDB or lists its tables."""

from __future__ import annotations

import time
from dataclasses import dataclass

import lancedb
import numpy as np
import pyarrow as pa

from schemas.store import StoreConfig, missing_locally
from schemas.tables import (
    ALL_TABLES,
    EMBED_DIM_KEY,
    OPTIONAL_TABLES,
    SCHEMA_VERSION_KEY,
    VIDEO_OK,
    VIDEOS,
    TableSpec,
)

# Waits before opening again a listed table whose first version is not committed yet (1.55 s in all).
_CREATING_RETRY_S = (0.05, 0.1, 0.2, 0.4, 0.8)
ROW_ID = "_rowid"  # LanceDB's row id column, as `with_row_id` names it


class SchemaVersionError(RuntimeError):
    """A stored table was written by a schema this code does not support."""


class MissingDataError(ValueError):
    """The database, or the split asked for, holds none of what a command needs; the message says what it holds."""


class CommitCheckError(RuntimeError):
    """A commit left a row count that differs from the one the merge reported."""


@dataclass(frozen=True)
class MergeOutcome:
    """What one merge commit did to a table, and in how many attempts (more than one: it conflicted with a
    concurrent writer's commit and was retried on top of it)."""

    table: str
    inserted: int
    updated: int
    version: int
    attempts: int = 1


class Catalog:
    """Opens the glscl tables of one database, creating them on first use and refusing unknown versions."""

    def __init__(self, store: StoreConfig, session: lancedb.Session | None = None) -> None:
        self.store = store
        self.db = lancedb.connect(store.uri, storage_options=store.storage_options or None, session=session)

    @classmethod
    def with_index_cache(cls, store: StoreConfig, index_cache_bytes: int | None) -> Catalog:
        """A catalogue with its own LanceDB session, whose index cache holds `index_cache_bytes` (None: LanceDB's
        default size), for a long-lived searcher."""
        return cls(store, lancedb.Session(index_cache_size_bytes=index_cache_bytes))

    def table_names(self) -> list[str]:
        """Every table in the database, sorted. The listing comes in pages, and a short page need not be the last,
        so it follows page tokens until none is left."""
        names: list[str] = []
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            names += page.tables
            token = page.page_token
            if not token:
                return sorted(names)

    def exists(self, spec: TableSpec) -> bool:
        """Whether the table has been created in this database."""
        return spec.name in self.table_names()

    def open_table(self, name: str) -> lancedb.table.Table:
        """Open a stored table by name as it is, without a spec to check it against: for upkeep of any table, and
        for tables whose spec depends on what they store."""
        return self.db.open_table(name)

    def open(self, spec: TableSpec, dim: int | None = None) -> lancedb.table.Table:
        """Open `spec`'s table (creating it if missing) after checking its schema version and embed dim."""
        if not self.exists(spec):
            return self.db.create_table(spec.name, schema=spec.schema(dim), exist_ok=True)
        table = self._open_listed(spec.name)
        check_schema(spec, table.schema, self.store.uri, dim)
        return table

    def _open_listed(self, name: str) -> lancedb.table.Table:
        """Open a table the listing shows. One that another process is creating is listed before its first version
        is committed, and opening it then fails as not found: retried for a moment (two ingests starting at once on
        a new database met it)."""
        for delay in _CREATING_RETRY_S:
            try:
                return self.db.open_table(name)
            except ValueError as error:
                if "not found" not in str(error):
                    raise
                time.sleep(delay)
        return self.db.open_table(name)

    def open_existing(self, spec: TableSpec) -> lancedb.table.Table:
        """Open a table that must already exist, with a clear error naming the database when it does not."""
        if not self.exists(spec):
            raise FileNotFoundError(f"table {spec.name!r} does not exist in {self.store.uri}: run `glscl ingest` first")
        table = self.db.open_table(spec.name)
        check_schema(spec, table.schema, self.store.uri, None)
        return table

    def scan(self, spec: TableSpec, columns: list[str], where: str | None = None, limit: int | None = None) -> pa.Table:
        """Read some columns of every row (optionally filtered, at most `limit`); an absent table reads as empty."""
        if not self.exists(spec):
            fields = [f for f in spec.schema(1 if spec.needs_dim else None) if f.name in columns]
            return pa.schema(fields).empty_table()
        query = self.open_existing(spec).search().select(columns).limit(limit)
        if where:
            query = query.where(where)
        return query.to_arrow()

    def snapshot(self, spec: TableSpec, version: int | None = None) -> lancedb.table.Table:
        """The table fixed at `version` (None: its current one): rows and row ids stay where they are for a reader
        that holds it, whatever is appended or compacted later, until `glscl maintain` prunes that version."""
        table = self.open_existing(spec)
        table.checkout(table.version if version is None else version)
        return table

    def versions(self) -> dict[str, int]:
        """The current version of every glscl table present, for run reports."""
        present = set(self.table_names())
        return {
            spec.name: self.db.open_table(spec.name).version
            for spec in (*ALL_TABLES, *OPTIONAL_TABLES)
            if spec.name in present
        }

    def _rows_at(self, spec: TableSpec, version: int) -> int:
        """The table's row count at one version: a commit is checked against the version just before it, so that
        another writer's commit in between is not counted as this one's."""
        table = self.db.open_table(spec.name)
        table.checkout(version)
        return table.count_rows()

    def merge(self, spec: TableSpec, rows: pa.Table, dim: int | None = None, update: bool = False) -> MergeOutcome:
        """Insert rows whose key is new (and update matching ones when `update`), then check the row count."""
        table = self.open(spec, dim)
        if rows.num_rows == 0:
            return MergeOutcome(spec.name, 0, 0, table.version)
        rows = rows.select(table.schema.names).cast(table.schema)
        builder = table.merge_insert(list(spec.key)).when_not_matched_insert_all()
        if update:
            builder = builder.when_matched_update_all()
        result = builder.execute(rows)
        before, after = self._rows_at(spec, result.version - 1), self._rows_at(spec, result.version)
        if after != before + result.num_inserted_rows:
            raise CommitCheckError(
                f"table {spec.name!r}: {before} rows + {result.num_inserted_rows} inserted should give "
                f"{before + result.num_inserted_rows}, found {after}"
            )
        return MergeOutcome(
            spec.name, result.num_inserted_rows, result.num_updated_rows, result.version, result.num_attempts
        )


def scan_row_ids(table: lancedb.table.Table, columns: list[str], where: str | None = None) -> pa.Table:
    """Some columns of the matching rows plus `ROW_ID`, each row's address for `take_rows`."""
    query = table.search().select(columns).with_row_id(True)
    return (query.where(where) if where else query).to_arrow()


def take_rows(table: lancedb.table.Table, row_ids: np.ndarray, columns: list[str]) -> pa.Table:
    """The rows at `row_ids` (repeats allowed), in that order: LanceDB returns a take in its own order, so the rows
    are put back in the order asked for."""
    wanted = np.asarray(row_ids, dtype=np.uint64)
    unique = np.unique(wanted)
    rows = table.take_row_ids(unique.tolist()).select(columns).with_row_id().to_arrow()
    got = rows[ROW_ID].to_numpy()
    if len(got) != len(unique):
        raise KeyError(f"{len(unique) - len(got)} of {len(unique)} row ids are not in table version {table.version}")
    order = np.argsort(got)
    return rows.take(pa.array(order[np.searchsorted(got, wanted, sorter=order)]))


def stored_version(schema: pa.Schema) -> str:
    """The glscl schema version recorded in a stored table's schema ("none" when it has none)."""
    return (schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"none").decode()


def check_schema(spec: TableSpec, schema: pa.Schema, uri: str, dim: int | None) -> None:
    """Raise SchemaVersionError when a stored schema's version (or embed dim) is not the one this code writes."""
    metadata = schema.metadata or {}
    found = stored_version(schema)
    if found != str(spec.version):
        raise SchemaVersionError(
            f"table {spec.name!r} in {uri} has schema version {found}; this glscl supports version {spec.version}"
        )
    stored_dim = metadata.get(EMBED_DIM_KEY)
    if dim is not None and stored_dim is not None and int(stored_dim) != dim:
        raise SchemaVersionError(
            f"table {spec.name!r} in {uri} holds {int(stored_dim)}-d features but this model gives {dim}-d: "
            "use a separate database (--db) for each embedding size"
        )


def sql_string(value: str) -> str:
    """Quote a value as an SQL string literal for a LanceDB filter (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: list[str]) -> str:
    """`column IN (...)` over quoted string literals, for pushing an id list into a LanceDB filter."""
    if not values:
        return "FALSE"
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def check_splits(store: StoreConfig, *splits: str) -> None:
    """Fail, naming what the database holds, when it does not exist (a local folder is not created here), holds no
    ingested video, or has none in one of `splits`."""
    if missing_locally(store.uri):
        raise MissingDataError(f"no database at {store.uri}: name the one `glscl ingest` wrote with --db")
    catalog = Catalog(store)
    if not catalog.exists(VIDEOS):
        raise MissingDataError(
            f"no ingested videos in {store.uri}: run `glscl ingest` into it first, or name the database that holds "
            "them with --db"
        )
    stored = catalog.scan(VIDEOS, ["split"], f"status = {sql_string(VIDEO_OK)}")["split"].to_pylist()
    present = sorted(set(stored))
    missing = [split for split in splits if split not in present]
    if missing:
        raise MissingDataError(
            f"split {missing[0]!r} has no ingested videos in {store.uri}; splits there: {', '.join(present) or 'none'}"
        )
