"""Indexes of a `video_index` table: one ANN vector index per segment vector column, the full-text index on
caption text and scalar indexes on filter columns; created on first use and brought up to date (new rows
indexed, fragments compacted) on later runs, since LanceDB does not index appended rows by itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import lancedb
from lancedb.index import FTS, Bitmap, BTree, IvfFlat, IvfHnswFlat, IvfHnswSq, IvfPq

from schemas.tables import stored_segment_columns
from workers.index.config import HNSW_INDEX_TYPES, AnnConfig
from workers.index.delta import add_delta_indexes, fold_into_indexes, vector_drift

# LanceDB's names in list_indices() for the types above.
_STORED_TYPE = {"IVF_FLAT": "IvfFlat", "IVF_PQ": "IvfPq", "IVF_HNSW_FLAT": "IvfHnswFlat", "IVF_HNSW_SQ": "IvfHnswSq"}
SCALAR_INDEXES = {"video_id": "btree", "dataset": "bitmap", "split": "bitmap", "duration_s": "btree"}
_BITMAP = "bitmap"


@dataclass
class IndexHealth:
    """What a person checks after indexing: rows, fragments, and rows not yet covered by each index."""

    rows: int
    fragments: int
    small_fragments: int
    unindexed: dict[str, int]


DISTANCE = "dot"


def _default_partitions(config: AnnConfig, rows: int) -> int:
    """About sqrt(rows) IVF partitions, scanned whole when probed; one HNSW graph per `hnsw_partition_rows`."""
    if config.index_type in HNSW_INDEX_TYPES:
        return max(1, round(rows / config.hnsw_partition_rows))
    return max(1, round(math.sqrt(rows)))


def vector_index(config: AnnConfig, rows: int, dim: int) -> IvfFlat | IvfPq | IvfHnswFlat | IvfHnswSq:
    """LanceDB's index config for `rows` vectors of `dim` dims under `config`."""
    ivf = {
        "distance_type": DISTANCE,
        "num_partitions": config.num_partitions or _default_partitions(config, rows),
        "sample_rate": config.sample_rate,
        "max_iterations": config.max_iterations,
    }
    if config.index_type == "IVF_FLAT":
        return IvfFlat(**ivf)
    if config.index_type == "IVF_HNSW_FLAT":
        return IvfHnswFlat(**ivf)
    if config.index_type == "IVF_HNSW_SQ":
        return IvfHnswSq(**ivf)
    sub_vectors = config.num_sub_vectors or max(1, dim // 8)
    if dim % sub_vectors:
        raise ValueError(f"num_sub_vectors {sub_vectors} must divide the vector width {dim}")
    return IvfPq(num_sub_vectors=sub_vectors, **ivf)


def _index_types(table: lancedb.table.Table) -> dict[str, str]:
    """Indexed column -> LanceDB's index type name."""
    return {column: str(index.index_type) for index in table.list_indices() for column in index.columns}


@dataclass
class IndexUpdate:
    """What `ensure_indexes` did, in words, and whether it (re)built the vector indexes with the asked settings."""

    actions: list[str]
    vector_indexes_built: bool


def ensure_indexes(table: lancedb.table.Table, config: AnnConfig, dim: int) -> IndexUpdate:
    """Create missing indexes, rebuild the vector indexes when another type is asked for, and bring existing
    indexes up to date with new rows: in proportion to the new rows while the vector indexes' drift from their
    training stays within `config.retrain_share` (delta indexes, workers/index/delta.py), else by compacting and
    retraining them over every row (`retrain_vector_indexes`). A table whose indexes cover every row is left as it
    is. With `config.segment_rows` no per-column vector index is built (the companion's one index serves unfiltered
    queries, workers/search/segment_rows.py)."""
    done = []
    built = False
    rows = table.count_rows()
    indexed = _index_types(table)
    columns = stored_segment_columns(table.schema)
    vector_types = {indexed.get(column) for column in columns}
    wanted = None if config.segment_rows else _STORED_TYPE.get(config.index_type)
    rebuild = wanted and rows >= config.min_rows and vector_types != {wanted}
    unindexed = unindexed_rows(table) if indexed else {}
    if any(unindexed.values()):
        vectors = [vector_index_name(column) for column in columns if column in indexed]
        drift = vector_drift(table, vectors[0]) if vectors else None
        if rebuild or drift is None or drift.share <= config.retrain_share:
            new_rows = max(unindexed.values())
            merge = drift.to_merge(config.max_deltas) if drift else 0
            if not rebuild:
                add_delta_indexes(table, vectors, merge)
            fold_into_indexes(table, [name for name in unindexed if name not in vectors])
            merged = f"; {drift.merged_words(merge)}" if merge else ""
            done.append(
                f"indexed {new_rows} new rows incrementally"
                + (f" (vector indexes: delta indexes, {drift.describe()}{merged})" if drift and not rebuild else "")
            )
        else:
            table.optimize()
            done.append("optimised existing indexes and compacted fragments")
            retrained = retrain_vector_indexes(table, config, dim)
            done.append(f"{retrained}: {drift.describe()}, over the retrain share {config.retrain_share:.0%}")
            built = True
    if rebuild:
        for column in columns:
            table.create_index(column, config=vector_index(config, rows, dim), replace=True)
        built = True
        was = ", ".join(sorted(str(kind) for kind in vector_types if kind))
        done.append(
            f"built {config.index_type} vector indexes on {len(columns)} segment columns over {rows} rows"
            + (f" (was {was})" if was else "")
        )
    if "text" not in indexed:
        table.create_index("text", config=FTS(with_position=False))
        done.append("built full-text index on text")
    for column, kind in SCALAR_INDEXES.items():
        if column not in indexed:
            table.create_index(column, config=Bitmap() if kind == _BITMAP else BTree())
            done.append(f"built {kind} index on {column}")
    return IndexUpdate(done, built)


def ensure_id_lookup(table: lancedb.table.Table) -> list[str]:
    """A BTREE index on a feature table's `video_id` (`frames`): a search reads its hits' stored frames by id for
    their time spans (workers/search/spans.py), a few milliseconds with it, a scan of the table without."""
    if "video_id" in _index_types(table):
        return []
    table.create_index("video_id", config=BTree())
    return [f"built btree index on {table.name}.video_id"]


def indexed_columns(table: lancedb.table.Table) -> dict[str, list[str]]:
    """The columns of a `video_index` table that have an index, by kind: vector, fts and scalar."""
    kinds: dict[str, list[str]] = {"vector": [], "fts": [], "scalar": []}
    segments = set(stored_segment_columns(table.schema))
    for column, kind in sorted(_index_types(table).items()):
        kinds["vector" if column in segments else "fts" if kind == "FTS" else "scalar"].append(column)
    return kinds


def vector_index_name(column: str) -> str:
    """LanceDB's name for the index it builds on `column`."""
    return f"{column}_idx"


def has_hnsw_index(table: lancedb.table.Table, columns: list[str] | None = None) -> bool:
    """Whether the vector indexes of `columns` (None: the segment columns) are HNSW graphs (searched with an
    `ef`)."""
    indexed = _index_types(table)
    hnsw = {_STORED_TYPE[kind] for kind in HNSW_INDEX_TYPES}
    return any(indexed.get(column) in hnsw for column in columns or stored_segment_columns(table.schema))


def has_vector_index(table: lancedb.table.Table) -> bool:
    """Whether every segment vector column has an index (else queries scan every vector)."""
    indexed, columns = _index_types(table), stored_segment_columns(table.schema)
    return bool(columns) and all(column in indexed for column in columns)


def retrain_vector_indexes(table: lancedb.table.Table, config: AnnConfig, dim: int) -> str:
    """Retrain every segment column's vector index over every row, keeping its type.

    LanceDB's `optimize` folds new rows into the existing IVF partitions and remaps them when it compacts
    fragments; for these indexes that measurably loses recall, and a retrain restores it (benchmarks/RESULTS.md).
    So every optimize of a video index is followed by a retrain.
    """
    indexed = _index_types(table)
    rows = table.count_rows()
    kinds = set()
    for column in stored_segment_columns(table.schema):
        kind = next(name for name, value in _STORED_TYPE.items() if value == indexed[column])
        table.create_index(column, config=vector_index(replace(config, index_type=kind), rows, dim), replace=True)
        kinds.add(kind)
    return f"retrained {', '.join(sorted(kinds))} vector indexes over {rows} rows"


def index_health(table: lancedb.table.Table) -> IndexHealth:
    """Row and fragment counts and unindexed rows per index (LanceDB's own statistics)."""
    stats = table.stats()
    fragments = stats["fragment_stats"]
    return IndexHealth(
        rows=int(stats["num_rows"]),
        fragments=int(fragments["num_fragments"]),
        small_fragments=int(fragments["num_small_fragments"]),
        unindexed=unindexed_rows(table),
    )


def unindexed_rows(table: lancedb.table.Table) -> dict[str, int]:
    """Rows each index of the table does not cover yet, by index name (LanceDB's own statistics)."""
    unindexed = {}
    for index in table.list_indices():
        index_stats = table.index_stats(index.name)
        unindexed[index.name] = int(index_stats.num_unindexed_rows) if index_stats else 0
    return unindexed


def combined_health(healths: list[IndexHealth]) -> IndexHealth:
    """The health of several tables (the gallery shards of one index) as one: counts summed, index by index."""
    unindexed: dict[str, int] = {}
    for health in healths:
        for name, rows in health.unindexed.items():
            unindexed[name] = unindexed.get(name, 0) + rows
    return IndexHealth(
        rows=sum(h.rows for h in healths),
        fragments=sum(h.fragments for h in healths),
        small_fragments=sum(h.small_fragments for h in healths),
        unindexed=unindexed,
    )
