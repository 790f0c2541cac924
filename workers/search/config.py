"""How a query is answered (SearchConfig): a config the command line, the flows and the service share, importable
without LanceDB or torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from glscl.backbone_config import BackboneConfig
from schemas.store import StoreConfig


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

    `index_table` names one gallery shard's table of the checkpoint's video index (schemas/gallery_shards.py) for a
    searcher that serves that shard alone (None: the checkpoint's unsharded index).
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
    index_table: str | None = None
