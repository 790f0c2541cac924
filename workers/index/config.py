"""How the search indexes are built (AnnConfig): the config the index flow writes with, records beside the index,
and the query path reads back; importable without LanceDB or torch."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.tables import ENCODINGS_FORMS

VECTOR_INDEX_TYPES = ("IVF_FLAT", "IVF_PQ", "IVF_HNSW_FLAT", "IVF_HNSW_SQ", "none")
HNSW_INDEX_TYPES = ("IVF_HNSW_FLAT", "IVF_HNSW_SQ")
SEGMENT_KINDS = ("time", "peaks")


@dataclass(frozen=True)
class AnnConfig:
    """How the approximate stage is built: vector width after projection, index type and its sizes.

    IVF_FLAT is the default: it builds fastest and scores the probed partitions exactly. IVF_PQ trades that for 32x
    less index memory (one byte per 8 dims) on galleries whose vectors do not fit in RAM; IVF_SQ measured slower and
    missed some exact neighbours. The HNSW types (a graph per IVF partition, exact float distances with
    IVF_HNSW_FLAT, 8-bit with IVF_HNSW_SQ) find near neighbours without scanning whole partitions, which matters
    where the vectors do not cluster by topic (hard galleries); they default to one partition per
    `hnsw_partition_rows` rows and are searched with `SearchConfig.ef`. Below `min_rows` videos no vector index is
    built and queries scan every vector. Each video gets `segments` vectors (contiguous parts of its frames, see
    glscl.search_vectors), one plain vector column per segment with its own index, searched concurrently for row ids
    only (faster than one multivector column); a video ranks by its best segment. `segment_kind` "time" averages
    contiguous time segments, "peaks" takes single frames of distinct content
    (glscl.search_vectors.peak_frame_weights); a table's rows should share one kind. `concept_weight` scales the
    concept (local) block of both sides' vectors against its weight in the score: 1 as in the score, 0 frames
    only, which lets IVF partitions follow single events where a video's concepts mix many. `num_partitions` defaults to
    about sqrt(rows) per column; `num_sub_vectors` (IVF_PQ) to one code per 8 dimensions.

    `segment_rows` puts every (video, segment) vector in a companion table under one vector index of `index_type`
    instead of one index per column (workers/search/segment_rows.py): one ANN search per query, which halves the
    ANN time on hard galleries at equal recall; filtered queries still go through the segment columns (scanned
    exactly when they have no index). Measurements: benchmarks/RESULTS.md.

    Index runs that add videos index them in delta indexes on the trained partitions (time in proportion to the new
    videos) until more than `retrain_share` of the rows lie outside the trained base; the run that crosses it
    compacts the table and retrains the vector indexes (the segment rows: a new generation) over every row. Each
    delta index is searched on its own (p50 grew from 105 to 164 ms over 10 at hard 50k), so a run that would make
    more than `max_deltas` merges the plain deltas since the last merge and its new rows into one (time in proportion
    to their rows); merged deltas are never merged again (workers/index/delta.py).

    `encodings` is the form of the packed encodings the exact re-rank reads (workers/index/packed_encodings.py):
    float16, or int8 with a scale per frame and concept vector, half the bytes per candidate read. It is fixed
    when the table is first written; readers tell it from the column's type.
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
    segment_kind: str = "time"
    hnsw_partition_rows: int = 1_000_000
    concept_weight: float = 1.0
    segment_rows: bool = False
    retrain_share: float = 0.2
    max_deltas: int = 4
    encodings: str = "float16"

    def __post_init__(self) -> None:
        if self.encodings not in ENCODINGS_FORMS:
            raise ValueError(f"encodings must be one of {ENCODINGS_FORMS}, got {self.encodings!r}")
        if self.index_type not in VECTOR_INDEX_TYPES:
            raise ValueError(f"index_type must be one of {VECTOR_INDEX_TYPES}, got {self.index_type!r}")
        if self.vector_dim < 1:
            raise ValueError(f"vector_dim must be >= 1, got {self.vector_dim}")
        if self.segments < 1:
            raise ValueError(f"segments must be >= 1, got {self.segments}")
        if self.concept_weight < 0:
            raise ValueError(f"concept_weight must be >= 0, got {self.concept_weight}")
        if self.segment_kind not in SEGMENT_KINDS:
            raise ValueError(f"segment_kind must be one of {SEGMENT_KINDS}, got {self.segment_kind!r}")
        if not 0 <= self.retrain_share <= 1:
            raise ValueError(f"retrain_share must be within [0, 1], got {self.retrain_share}")
        if self.max_deltas < 1:
            raise ValueError(f"max_deltas must be >= 1, got {self.max_deltas}")
        if self.segment_rows and self.index_type == "none":
            raise ValueError("segment_rows (--segment-rows) needs a vector index type, got --index-type none")
