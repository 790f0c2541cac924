"""How the search indexes are built (AnnConfig) and how a query is answered (SearchConfig): configs the command
line, the flows and the service share, importable without LanceDB or torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from glscl.backbone_config import BackboneConfig
from schemas.store import StoreConfig

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

    def __post_init__(self) -> None:
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
        if self.segment_rows and self.index_type == "none":
            raise ValueError("segment_rows (--segment-rows) needs a vector index type, got --index-type none")


@dataclass(frozen=True)
class SearchConfig:
    """The checkpoint and database to search, the backbone that encodes query text (None: the one the checkpoint
    records; `encode_text=False`: none, queries arrive encoded, as in the synthetic benchmarks), and the ANN
    settings.

    Galleries of at most `probe_all_below` videos probe every IVF partition: on few videos a partition holds
    loosely related ones, so partial probing loses neighbours, while probing all stays cheap. Galleries of at most
    `in_memory_below` videos keep every segment vector in memory (workers.search.candidates.in_memory, 4 x 512
    float32 per video: 160 MB at 20,000) and score all of them for an unfiltered query, which is exact on the
    segment proxy and cheaper than one LanceDB search per segment column; filtered queries still go through
    LanceDB. A searcher follows its table to the newest version at most every `refresh_s` seconds, so a running
    server sees videos indexed after it started.

    A query reads the IVF partitions it probes from LanceDB's index cache, or else from disk. `index_cache_gb`
    sizes that cache (None: LanceDB's default), which should hold every segment index, and `prewarm` loads them
    all when the searcher starts, as a server should; a one-off query skips it.

    `ef` is the candidate list an HNSW index keeps while it walks its graph (None: twice the candidates asked
    for; never fewer than them; with segment rows, the rows asked: candidates x segments): larger finds more of the
    true nearest vectors, slower. IVF indexes ignore it. `use_segment_rows` lets unfiltered queries take the
    segment rows' one index when the table has one (AnnConfig.segment_rows); False keeps them on the segment
    columns, to compare the two.

    `torch_threads` sets torch's intra-op threads for the process when the searcher is built (None: leave them).
    One by default: a query's torch work is small, and idle torch worker threads keep spinning on the cores
    LanceDB's searches and reads need; a server answers concurrent queries on its other threads. `text_threads`
    (None: torch_threads) is the thread count for encoding the query text alone, the one step that gains from a
    second core (a one-off `glscl query` takes every core there; a server, answering queries side by side, keeps
    one). The measurements
    behind these defaults are in benchmarks/RESULTS.md (two-stage search).
    """

    checkpoint: str
    store: StoreConfig = field(default_factory=StoreConfig)
    backbone: BackboneConfig | None = None
    candidates: int = 200
    nprobes: int = 32
    refine_factor: int | None = None
    ef: int | None = None
    exact_batch: int = 4096
    probe_all_below: int = 20_000
    in_memory_below: int = 20_000
    refresh_s: float = 5.0
    index_cache_gb: float | None = None
    prewarm: bool = False
    torch_threads: int | None = 1
    text_threads: int | None = None
    encode_text: bool = True
    use_segment_rows: bool = True
