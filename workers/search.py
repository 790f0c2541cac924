"""Text-to-video search over a checkpoint's `video_index` table, in two stages: an approximate search over the
projected segment vectors (ANN index, or a flat scan on small tables; a video ranks by its best segment) for
`candidates` videos, then the exact GLSCL score of those candidates from their stored encodings. `exact=True`
scores the whole (filtered) gallery exactly instead; `hybrid=True` adds full-text matches on captions and fuses
both rankings (RRF).

A Searcher keeps the model, text tower and table handles warm; the CLI, the HTTP API and `search()` share it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch

from glscl.backbone import Backbone, BackboneConfig
from glscl.checkpoint import load_checkpoint
from glscl.model import TextEncoding, VideoEncoding
from glscl.search_vectors import text_search_vectors
from glscl.similarity import pooling_weights
from schemas.catalog import Catalog, StoreConfig
from schemas.tables import INDEX_FILTER_COLUMNS, MODEL_ID_KEY, VIDEO_INDEX_PREFIX, video_index_name
from workers.ann import DISTANCE, has_vector_index
from workers.features import dense
from workers.filters import Filter, filters_sql
from workers.video_index import load_projection

MAX_K = 1000
RRF_OFFSET = 60
ALL_PARTITIONS = 1 << 20  # LanceDB clamps nprobes to the index's partition count
_META_COLUMNS = ["video_id", "source_path", "dataset", "split", "duration_s", "text"]
_RERANK_COLUMNS = ["frames", "frame_mask", "timestamps", "local"]


class SearchError(ValueError):
    """A query that cannot be answered as asked: empty text, k out of range, bad filter, mismatched index."""


@dataclass(frozen=True)
class SearchConfig:
    """The checkpoint and database to search, the backbone that encodes query text (None: queries arrive
    already encoded, as in the synthetic benchmarks), and the ANN settings.

    Galleries of at most `probe_all_below` videos probe every IVF partition: on few videos a partition holds
    loosely related ones, so partial probing loses neighbours, while probing all is still cheap (12 ms at 5k
    videos here, six times faster than LanceDB's flat multivector scan). A searcher follows its table to the
    newest version at most every `refresh_s` seconds, so a running server sees videos indexed after it started.
    """

    checkpoint: str
    store: StoreConfig = field(default_factory=StoreConfig)
    backbone: BackboneConfig | None = field(default_factory=BackboneConfig)
    candidates: int = 200
    nprobes: int = 32
    refine_factor: int | None = None
    exact_batch: int = 4096
    probe_all_below: int = 20_000
    refresh_s: float = 5.0


@dataclass
class SearchHit:
    """One ranked video: its exact GLSCL score, the fused rank score in hybrid mode, and where the text matches
    best in time (the frames the text-conditioned pooling weighs most)."""

    rank: int
    video_id: str
    score: float
    source_path: str
    dataset: str
    split: str
    duration_s: float | None
    span_s: tuple[float, float] | None
    text: str
    fused: float | None = None


@dataclass
class SearchResult:
    """Ranked hits plus how they were found and where the time went (milliseconds)."""

    query: str
    mode: str
    hits: list[SearchHit]
    candidates: int
    timings_ms: dict[str, float]

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


def _span(weights: np.ndarray, timestamps: np.ndarray, mask: np.ndarray) -> tuple[float, float] | None:
    """Contiguous frames around the most-weighted one that keep at least half its weight, as seconds."""
    if not mask.any():
        return None
    peak = int(np.argmax(np.where(mask, weights, -np.inf)))
    keep = mask & (weights >= 0.5 * weights[peak])
    low = high = peak
    while low > 0 and keep[low - 1]:
        low -= 1
    while high + 1 < len(keep) and keep[high + 1]:
        high += 1
    return float(timestamps[low]), float(timestamps[high])


class Searcher:
    """Answers text queries against one checkpoint's video index; build once, query many times."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.model, self.model_config, meta = load_checkpoint(config.checkpoint)
        extra = meta.get("extra", {})
        self.catalog = Catalog(config.store)
        name = video_index_name(meta["sha256"])
        tables = self.catalog.db.list_tables().tables
        if name not in tables:
            present = [t for t in tables if t.startswith(VIDEO_INDEX_PREFIX) and not t.endswith("_projection")]
            raise SearchError(
                f"no video index for checkpoint {config.checkpoint} (sha256 {meta['sha256'][:16]}) in "
                f"{config.store.uri}; run `glscl index --checkpoint {config.checkpoint}` (indexes present: "
                f"{', '.join(present) or 'none'})"
            )
        self.table = self.catalog.db.open_table(name)
        stored_model = (self.table.schema.metadata or {}).get(MODEL_ID_KEY.encode(), b"").decode()
        backbone_id = config.backbone.model_id if config.backbone else extra["backbone_model_id"]
        if backbone_id != extra["backbone_model_id"] or stored_model != extra["backbone_model_id"]:
            raise SearchError(
                f"the query backbone {backbone_id!r} does not match the checkpoint's "
                f"{extra['backbone_model_id']!r} (index built with {stored_model!r}): pass the --model, "
                "--pretrained and --backbone-seed the videos were ingested with"
            )
        projection = load_projection(self.catalog, name)
        if projection is None:
            raise SearchError(f"video index {name} has no projection: run `glscl index` again")
        self.basis = torch.from_numpy(np.array(projection.basis))
        self.max_words = int(extra.get("max_words", self.model_config.max_words))
        self.backbone = Backbone(config.backbone) if config.backbone else None
        self._read_index_state()
        self._checked = time.monotonic()

    def _read_index_state(self) -> None:
        """Whether the table has a vector index yet, and how many partitions a query probes."""
        self.has_vector_index = has_vector_index(self.table)
        small = self.table.count_rows() <= self.config.probe_all_below
        self.nprobes = ALL_PARTITIONS if small else self.config.nprobes

    def _follow_latest(self) -> None:
        """Move to the table's newest version (at most every `refresh_s` seconds) and re-read its index state."""
        now = time.monotonic()
        if now - self._checked < self.config.refresh_s:
            return
        self._checked = now
        version = self.table.version
        self.table.checkout_latest()
        if self.table.version != version:
            self._read_index_state()

    def encode(self, text: str) -> TextEncoding:
        """The query's GLSCL text encoding (CLIP text tower, then the GLSCL text side)."""
        if not text or not text.strip():
            raise SearchError("the query text is empty")
        if self.backbone is None:
            raise SearchError("this searcher has no text backbone: it only takes encoded queries")
        sentence, tokens, mask = self.backbone.encode_texts([text.strip()], self.max_words)
        with torch.inference_mode():
            return self.model.encode_text(torch.from_numpy(sentence), torch.from_numpy(tokens), torch.from_numpy(mask))

    def search(
        self, text: str, k: int = 10, filters: tuple[Filter, ...] | list[Filter] = (), exact=False, hybrid=False
    ) -> SearchResult:
        """Top-k videos for `text` (see the module docstring for the modes)."""
        where = self._where(k, filters)
        start = time.perf_counter()
        encoding = self.encode(text)
        encode_ms = (time.perf_counter() - start) * 1000
        result = self._run(encoding, k, where, exact, text if hybrid else None)
        result.query = text
        result.timings_ms = {"encode_text": encode_ms, **result.timings_ms}
        result.timings_ms["total"] += encode_ms
        return result

    def search_encoded(
        self, encoding: TextEncoding, k: int = 10, filters: tuple[Filter, ...] | list[Filter] = (), exact=False
    ) -> SearchResult:
        """Top-k videos for an already encoded query (one text)."""
        return self._run(encoding, k, self._where(k, filters), exact, None)

    def _where(self, k: int, filters: tuple[Filter, ...] | list[Filter]) -> str | None:
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        try:
            return filters_sql(tuple(filters), self.table.schema, INDEX_FILTER_COLUMNS)
        except ValueError as error:
            raise SearchError(str(error)) from None

    def _run(self, encoding: TextEncoding, k: int, where: str | None, exact: bool, hybrid_text: str | None):
        self._follow_latest()
        start = time.perf_counter()
        timings = {}
        if exact:
            rows, scores = self._exact(encoding, k, where)
            mode, fused = "exact", None
        else:
            limit = max(k, self.config.candidates)
            rows = self._candidates(encoding, limit, where)
            if hybrid_text is not None:
                rows = _union(rows, self._text_matches(hybrid_text, limit, where))
            timings["candidates"] = (time.perf_counter() - start) * 1000
            scores = self._rerank(encoding, rows)
            mode, fused = ("hybrid", _rrf(scores, rows)) if hybrid_text is not None else ("two-stage", None)
        timings["rerank"] = (time.perf_counter() - start) * 1000 - sum(timings.values())
        hits = self._hits(encoding, rows, scores, fused, k)
        timings["total"] = (time.perf_counter() - start) * 1000
        return SearchResult("", mode, hits, rows.num_rows, timings)

    def _candidates(self, encoding: TextEncoding, limit: int, where: str | None) -> pa.Table:
        vector = text_search_vectors(encoding.sentence, encoding.local, self.model_config.local_weight) @ self.basis
        query = self.table.search(vector[0].numpy(), vector_column_name="vector").distance_type(DISTANCE).limit(limit)
        if self.has_vector_index:
            query = query.nprobes(self.nprobes)
            if self.config.refine_factor:
                query = query.refine_factor(self.config.refine_factor)
        if where:
            query = query.where(where, prefilter=True)
        return query.select(_META_COLUMNS + _RERANK_COLUMNS + ["_distance"]).to_arrow().drop_columns(["_distance"])

    def _text_matches(self, text: str, limit: int, where: str | None) -> pa.Table:
        query = self.table.search(text, query_type="fts", fts_columns="text").limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(_META_COLUMNS + _RERANK_COLUMNS + ["_score"]).to_arrow()
        return rows.append_column("text_rank", pa.array(np.arange(1, rows.num_rows + 1, dtype=np.int64)))

    def _videos(self, rows: pa.Table) -> VideoEncoding:
        n = rows.num_rows
        slots = len(rows["frame_mask"][0]) if n else 0
        frames = torch.from_numpy(dense(rows["frames"], n, slots, -1))
        mask = torch.from_numpy(dense(rows["frame_mask"], n, slots, dtype=bool))
        local = torch.from_numpy(dense(rows["local"], n, self.model_config.num_queries, -1))
        return VideoEncoding(frames, mask, local)

    @torch.inference_mode()
    def _rerank(self, encoding: TextEncoding, rows: pa.Table) -> np.ndarray:
        if rows.num_rows == 0:
            return np.zeros(0, dtype=np.float32)
        count = rows.num_rows
        text = TextEncoding(encoding.sentence.expand(count, -1), encoding.local.expand(count, -1, -1))
        return self.model.pair_scores(text, self._videos(rows)).numpy()

    @torch.inference_mode()
    def _exact(self, encoding: TextEncoding, k: int, where: str | None) -> tuple[pa.Table, np.ndarray]:
        """Score every (filtered) row exactly, streaming batches and keeping the running top-k."""
        query = self.table.search().select(_META_COLUMNS + _RERANK_COLUMNS)
        if where:
            query = query.where(where)
        best_rows, best_scores = [], np.zeros(0, dtype=np.float32)
        for batch in query.to_batches(self.config.exact_batch):
            rows = pa.Table.from_batches([batch])
            if rows.num_rows == 0:
                continue
            scores = self._rerank(encoding, rows)
            best_rows.append(rows)
            merged = pa.concat_tables(best_rows)
            all_scores = np.concatenate([best_scores, scores])
            keep = np.argsort(-all_scores, kind="stable")[:k]
            best_rows, best_scores = [merged.take(pa.array(keep))], all_scores[keep]
        rows = best_rows[0] if best_rows else self.table.schema.empty_table().select(_META_COLUMNS + _RERANK_COLUMNS)
        return rows, best_scores

    @torch.inference_mode()
    def _hits(
        self, encoding: TextEncoding, rows: pa.Table, scores: np.ndarray, fused: np.ndarray | None, k: int
    ) -> list[SearchHit]:
        ranking = fused if fused is not None else scores
        order = np.argsort(-ranking, kind="stable")[:k]
        if len(order) == 0:
            return []
        top = rows.take(pa.array(order, pa.int64()))
        video = self._videos(top)
        sentence = encoding.sentence.expand(top.num_rows, -1)
        weights = pooling_weights(sentence, video.frames, video.mask, self.model_config.global_temperature).numpy()
        mask = video.mask.numpy()
        timestamps = dense(top["timestamps"], top.num_rows, mask.shape[1])
        return [
            SearchHit(
                rank=rank + 1,
                video_id=top["video_id"][rank].as_py(),
                score=float(scores[index]),
                source_path=top["source_path"][rank].as_py(),
                dataset=top["dataset"][rank].as_py(),
                split=top["split"][rank].as_py(),
                duration_s=top["duration_s"][rank].as_py(),
                span_s=_span(weights[rank], timestamps[rank], mask[rank]),
                text=top["text"][rank].as_py(),
                fused=None if fused is None else float(fused[index]),
            )
            for rank, index in enumerate(order)
        ]


def _union(first: pa.Table, second: pa.Table) -> pa.Table:
    """Rows of both tables, each video once, keeping `text_rank` from the full-text side (null where absent)."""
    ranks = dict(zip(second["video_id"].to_pylist(), second["text_rank"].to_pylist(), strict=True))
    seen = set(first["video_id"].to_pylist())
    extra = second.filter(pa.array([vid not in seen for vid in second["video_id"].to_pylist()], pa.bool_()))
    merged = pa.concat_tables([first, extra.select(first.column_names)])
    return merged.append_column("text_rank", pa.array([ranks.get(v) for v in merged["video_id"].to_pylist()]))


def _rrf(scores: np.ndarray, rows: pa.Table) -> np.ndarray:
    """Reciprocal-rank fusion of the exact GLSCL ranking and the full-text ranking (absent: no text term)."""
    glscl_rank = np.empty(len(scores), dtype=np.float64)
    glscl_rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    text_rank = rows["text_rank"].to_numpy(zero_copy_only=False).astype(np.float64)
    text_term = np.where(np.isnan(text_rank), 0.0, 1.0 / (RRF_OFFSET + np.nan_to_num(text_rank)))
    return 1.0 / (RRF_OFFSET + glscl_rank) + text_term
