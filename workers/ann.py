"""Indexes of a `video_index` table: the ANN vector index, the full-text index on caption text and scalar
indexes on filter columns; created on first use and brought up to date (new rows indexed, fragments
compacted) on later runs, since LanceDB does not index appended rows by itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import lancedb
from lancedb.index import FTS, Bitmap, BTree, IvfFlat, IvfHnswSq, IvfPq

VECTOR_INDEX_TYPES = ("IVF_FLAT", "IVF_PQ", "IVF_HNSW_SQ", "none")
# LanceDB's names in list_indices() for the types above.
_STORED_TYPE = {"IVF_FLAT": "IvfFlat", "IVF_PQ": "IvfPq", "IVF_HNSW_SQ": "IvfHnswSq"}
SCALAR_INDEXES = {"video_id": "btree", "dataset": "bitmap", "split": "bitmap", "duration_s": "btree"}
_BITMAP = "bitmap"


@dataclass(frozen=True)
class AnnConfig:
    """How the approximate stage is built: vector width after projection, index type and its sizes.

    IVF_FLAT is the default because it measured best here: on 100k 512-d vectors it builds in 7 s where IVF_PQ
    (64 sub-vectors) takes 250 s on 2 cores, and it scores the probed partitions exactly (7 ms for 32 of 316
    partitions). IVF_PQ trades that for 32x less index memory on galleries whose vectors do not fit in RAM.
    Below `min_rows` videos no vector index is built and queries scan every vector (LanceDB's flat multivector
    scan takes 80 ms at 5k videos here, where the index probed in full takes 12 ms, so the index comes early).
    `num_partitions` defaults to about sqrt(segment vectors); `num_sub_vectors` (IVF_PQ) to one code per 8
    dimensions. Each video gets `segments` vectors (contiguous parts of its frames, see glscl.search_vectors),
    a LanceDB multivector column searched by its best segment, which LanceDB supports with cosine distance
    only; every segment vector has the same norm before projection, so cosine ranks as the inner product does.
    """

    vector_dim: int = 512
    index_type: str = "IVF_FLAT"
    min_rows: int = 1_000
    num_partitions: int | None = None
    num_sub_vectors: int | None = None
    sample_rate: int = 256
    max_iterations: int = 50
    projection_sample: int = 20_000
    segments: int = 4

    def __post_init__(self) -> None:
        if self.index_type not in VECTOR_INDEX_TYPES:
            raise ValueError(f"index_type must be one of {VECTOR_INDEX_TYPES}, got {self.index_type!r}")
        if self.vector_dim < 1:
            raise ValueError(f"vector_dim must be >= 1, got {self.vector_dim}")
        if self.segments < 1:
            raise ValueError(f"segments must be >= 1, got {self.segments}")


@dataclass
class IndexHealth:
    """What a person checks after indexing: rows, fragments, and rows not yet covered by each index."""

    rows: int
    fragments: int
    small_fragments: int
    unindexed: dict[str, int]


DISTANCE = "cosine"


def _vector_index(config: AnnConfig, rows: int, dim: int):
    ivf = {
        "distance_type": DISTANCE,
        "num_partitions": config.num_partitions or max(1, round(math.sqrt(rows * config.segments))),
        "sample_rate": config.sample_rate,
        "max_iterations": config.max_iterations,
    }
    if config.index_type == "IVF_FLAT":
        return IvfFlat(**ivf)
    if config.index_type == "IVF_HNSW_SQ":
        return IvfHnswSq(**ivf)
    sub_vectors = config.num_sub_vectors or max(1, dim // 8)
    if dim % sub_vectors:
        raise ValueError(f"num_sub_vectors {sub_vectors} must divide the vector width {dim}")
    return IvfPq(num_sub_vectors=sub_vectors, **ivf)


def _index_types(table: lancedb.table.Table) -> dict[str, str]:
    """Indexed column -> LanceDB's index type name."""
    return {column: str(index.index_type) for index in table.list_indices() for column in index.columns}


def ensure_indexes(table: lancedb.table.Table, config: AnnConfig, dim: int) -> list[str]:
    """Create missing indexes, rebuild the vector index when another type is asked for, and fold new rows into
    existing indexes (the vector index is retrained instead, see `retrain_vector_index`); returns what was
    done, in words. A table whose indexes already cover every row is left as it is."""
    done = []
    rows = table.count_rows()
    indexed = _index_types(table)
    vector_type = indexed.get("vector")
    wanted = _STORED_TYPE.get(config.index_type)
    rebuild = wanted and rows >= config.min_rows and vector_type != wanted
    if indexed and any(index_health(table).unindexed.values()):
        table.optimize()
        done.append("optimised existing indexes and compacted fragments")
        if vector_type and not rebuild:
            done.append(retrain_vector_index(table, config, dim))
    if rebuild:
        table.create_index("vector", config=_vector_index(config, rows, dim), replace=True)
        done.append(
            f"built {config.index_type} vector index over {rows} rows"
            + (f" (was {vector_type})" if vector_type else "")
        )
    if "text" not in indexed:
        table.create_index("text", config=FTS(with_position=False))
        done.append("built full-text index on text")
    for column, kind in SCALAR_INDEXES.items():
        if column not in indexed:
            table.create_index(column, config=Bitmap() if kind == _BITMAP else BTree())
            done.append(f"built {kind} index on {column}")
    return done


def has_vector_index(table: lancedb.table.Table) -> bool:
    """Whether the table's `vector` column has an index (else queries scan every vector)."""
    return "vector" in _index_types(table)


def retrain_vector_index(table: lancedb.table.Table, config: AnnConfig, dim: int) -> str:
    """Retrain the vector index over every row, keeping its type.

    LanceDB's `optimize` folds new rows into the existing IVF partitions and remaps them when it compacts
    fragments; for this multivector index that measurably loses recall (100k videos: the ANN's coverage of the
    exact top-10 at nprobes 16 fell from 0.988 to 0.89 after one compaction, and came back with a retrain, 19 s
    here). So every optimize of a video index is followed by a retrain (about 5 minutes at 1M videos on 2 cores).
    """
    stored = _index_types(table)["vector"]
    kind = next(name for name, value in _STORED_TYPE.items() if value == stored)
    rows = table.count_rows()
    table.create_index("vector", config=_vector_index(replace(config, index_type=kind), rows, dim), replace=True)
    return f"retrained {kind} vector index over {rows} rows"


def index_health(table: lancedb.table.Table) -> IndexHealth:
    """Row and fragment counts and unindexed rows per index (LanceDB's own statistics)."""
    stats = table.stats()
    fragments = stats["fragment_stats"]
    unindexed = {}
    for index in table.list_indices():
        index_stats = table.index_stats(index.name)
        unindexed[index.name] = int(index_stats.num_unindexed_rows) if index_stats else 0
    return IndexHealth(
        rows=int(stats["num_rows"]),
        fragments=int(fragments["num_fragments"]),
        small_fragments=int(fragments["num_small_fragments"]),
        unindexed=unindexed,
    )
