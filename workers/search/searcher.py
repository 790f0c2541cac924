"""Text-to-video search over a checkpoint's `video_index` table, in two stages: an approximate search over the
projected segment vectors (one ANN search per segment column, concurrently, for row ids only; a video ranks by
its best segment) for `candidates` videos, then the exact GLSCL score of those candidates from their packed
encodings, read by row id. Metadata is read for the top k only: on a gallery larger than memory each column
and row a query reads is a random read from disk. `exact=True` scores the whole (filtered) gallery exactly
instead; `hybrid=True` adds full-text matches on captions and fuses both rankings (RRF).

A Searcher keeps the model, text tower and table handles warm; the CLI, the HTTP API and `search()` share it.
Several threads may search with one Searcher at once: the model and text tower are only read (inference mode), and
each query reads one `IndexState` (table handles pinned at one version, with the candidate stages built on them)
from start to end. Following the tables' newest versions builds a new state on new handles and swaps it in, so a
query never mixes row ids of one version with rows of another (compaction renumbers rows).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import lancedb
import numpy as np
import pyarrow as pa
import torch

from glscl.backbone import Backbone
from glscl.backbone_config import recorded_backbone
from glscl.checkpoint import load_checkpoint
from glscl.model import TextEncoding, VideoEncoding
from glscl.similarity import pooling_weights
from schemas.catalog import ROW_ID, Catalog, sql_string, stored_version
from schemas.rows import dense
from schemas.store import missing_locally
from schemas.tables import (
    INDEX_FILTER_COLUMNS,
    INDEX_HIT_COLUMNS,
    MODEL_ID_KEY,
    VIDEO_INDEX_PREFIX,
    VIDEO_INDEX_VERSION,
    stored_segment_columns,
    video_index_name,
)
from workers.index.ann_vectors import query_vectors, stored_ann
from workers.index.packed_encodings import packed_slots, unpack_encodings
from workers.index.projection import load_projection
from workers.search.candidates.base import ALL_PARTITIONS, Candidates, CandidateStage, ProbeSettings
from workers.search.candidates.choice import candidate_stages, stages_outdated
from workers.search.config import SearchConfig
from workers.search.filters import Filter, filters_sql
from workers.search.query_text import QueryEncoder, SearchError
from workers.search.rerank import packed_scores
from workers.search.results import SearchHit, SearchResult, Stopwatch, VideoFile
from workers.search.spans import StoredFrames, frame_match_weights, span

MAX_K = 1000
RRF_OFFSET = 60
_ENCODINGS = "encodings"


def _open_video_index(
    catalog: Catalog, name: str, config: SearchConfig, checkpoint_model: str, query_model: str
) -> lancedb.table.Table:
    """The checkpoint's video index table, refused with what to do when it is missing, written by another schema
    version, or built (or queried) with another backbone than the checkpoint's."""
    tables = catalog.table_names()
    if name not in tables:
        present = [t for t in tables if t.startswith(VIDEO_INDEX_PREFIX) and not t.endswith("_projection")]
        raise SearchError(
            f"no video index for checkpoint {config.checkpoint} (sha256 {name.removeprefix(VIDEO_INDEX_PREFIX)}) "
            f"in {config.store.uri}; run `glscl index --checkpoint {config.checkpoint}` (indexes present: "
            f"{', '.join(present) or 'none'})"
        )
    table = catalog.open_table(name)
    version = stored_version(table.schema)
    if version != str(VIDEO_INDEX_VERSION):
        raise SearchError(
            f"video index {name} in {config.store.uri} has schema version {version}; this glscl reads version "
            f"{VIDEO_INDEX_VERSION}: drop {name} and {name}_projection and run `glscl index` again, or index "
            "into a new --db"
        )
    stored_model = (table.schema.metadata or {}).get(MODEL_ID_KEY.encode(), b"").decode()
    if query_model != checkpoint_model or stored_model != checkpoint_model:
        raise SearchError(
            f"the query backbone {query_model!r} does not match the checkpoint's {checkpoint_model!r} (index built "
            f"with {stored_model!r}): pass the --model, --pretrained and --backbone-seed the videos were ingested with"
        )
    return table


@dataclass(frozen=True)
class IndexState:
    """What queries read at one version of the video index: its table handle (pinned there), video count, probe
    settings and candidate stages (`workers.search.candidates.choice`), built together and never changed."""

    table: lancedb.table.Table
    videos: int
    probes: ProbeSettings
    stages: list[CandidateStage]

    def stage_for(self, where: str | None) -> CandidateStage:
        """The first candidate stage that can answer a query with this filter (or without one)."""
        return next(stage for stage in self.stages if where is None or stage.takes_filters)

    def prewarm(self) -> None:
        """Load what each candidate stage reads into memory or LanceDB's index cache (when the cache can hold it)."""
        for stage in self.stages:
            stage.prewarm()


@dataclass
class _Scored:
    """Rows scored for one query: their row ids, packed encodings and exact scores, and fused ranks in hybrid
    mode."""

    mode: str
    row_ids: np.ndarray
    encodings: pa.ChunkedArray | pa.Array
    scores: np.ndarray
    fused: np.ndarray | None = None


class Searcher:
    """Answers text queries against one checkpoint's video index; build once, query many times."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        self.model, self.model_config, meta = load_checkpoint(config.checkpoint)
        extra = meta.get("extra", {})
        if missing_locally(config.store.uri):
            raise SearchError(f"no database at {config.store.uri}: name the one `glscl index` wrote with --db")
        cache = None if config.index_cache_gb is None else int(config.index_cache_gb * 2**30)
        self.catalog = Catalog.with_index_cache(config.store, cache)
        name = video_index_name(meta["sha256"])
        if config.index_table is not None:
            if not config.index_table.startswith(name):
                raise SearchError(f"table {config.index_table} is not a video index of checkpoint {config.checkpoint}")
            name = config.index_table
        checkpoint_model = extra["backbone_model_id"]
        backbone = (config.backbone or recorded_backbone(extra)) if config.encode_text else None
        query_model = backbone.model_id if backbone else checkpoint_model
        table = _open_video_index(self.catalog, name, config, checkpoint_model, query_model)
        projection = load_projection(self.catalog, name)
        if projection is None:
            raise SearchError(f"video index {name} has no projection: run `glscl index` again")
        self.basis = torch.from_numpy(np.array(projection.basis))
        self.ann = stored_ann(projection.ann)
        self.segment_columns = stored_segment_columns(table.schema)
        self.slots = packed_slots(
            table.schema.field(_ENCODINGS), self.model_config.num_queries, self.model_config.embed_dim
        )
        self.pool = ThreadPoolExecutor(len(self.segment_columns), thread_name_prefix="segment-search")
        max_words = int(extra.get("max_words", self.model_config.max_words))
        self.query_encoder = QueryEncoder(
            self.model, Backbone(backbone) if backbone else None, max_words, config.text_threads
        )
        sampling_hash = extra.get("sampling_hash")
        self.stored_frames = StoredFrames(self.catalog, checkpoint_model, sampling_hash) if sampling_hash else None
        self._refreshing = threading.Lock()
        self.state = self._index_state(table)
        if config.prewarm:
            self.prewarm()
        self._checked = time.monotonic()

    @property
    def table(self) -> lancedb.table.Table:
        """The video index table, pinned at the version queries read now."""
        return self.state.table

    @property
    def videos(self) -> int:
        """Videos in the version of the index queries read now."""
        return self.state.videos

    @property
    def probes(self) -> ProbeSettings:
        return self.state.probes

    def stage_for(self, where: str | None) -> CandidateStage:
        """The first candidate stage that can answer a query with this filter, at the version queries read now."""
        return self.state.stage_for(where)

    def prewarm(self) -> None:
        """Load what the candidate stages of the version queries read now hold ahead of the first query."""
        self.state.prewarm()

    def _index_state(self, table: lancedb.table.Table) -> IndexState:
        """The state queries read at `table`'s version: its videos, how deep a query probes (every IVF partition of a
        small gallery) and the candidate stages a query may take."""
        videos = table.count_rows()
        nprobes = ALL_PARTITIONS if videos <= self.config.probe_all_below else self.config.nprobes
        probes = ProbeSettings(nprobes, self.config.ef, self.config.refine_factor)
        return IndexState(
            table, videos, probes, candidate_stages(self.catalog, table, self.segment_columns, self.config, self.pool)
        )

    def _follow_latest(self) -> IndexState:
        """The state a query should read: at most every `refresh_s` seconds, one thread looks for a newer version of
        the table or of its segment rows and, when there is one, builds its state on new handles (prewarmed when the
        searcher prewarms) and swaps it in; other threads go on with the state they find."""
        now = time.monotonic()
        if now - self._checked < self.config.refresh_s or not self._refreshing.acquire(blocking=False):
            return self.state
        try:
            self._checked = now
            state = self.state
            latest = self.catalog.open_table(state.table.name)
            outdated = stages_outdated(self.catalog, latest, self.config, state.stages, self.ann.segment_rows)
            if self.stored_frames is not None:
                self.stored_frames.refresh()
            if latest.version != state.table.version or outdated:
                fresh = self._index_state(latest)
                if self.config.prewarm:
                    fresh.prewarm()
                self.state = fresh
            return self.state
        finally:
            self._refreshing.release()

    def describe(self) -> dict[str, str | int]:
        """What is served: the video index table, how many videos it holds and how unfiltered queries find their
        candidates."""
        state = self.state
        return {"index": state.table.name, "videos": state.videos, "candidate_stage": state.stages[0].name}

    def video_file(self, video_id: str) -> VideoFile | None:
        """The source file and duration of an indexed video, or None for a video not in the index."""
        where = f"video_id = {sql_string(video_id)}"
        rows = self.state.table.search().where(where).select(["source_path", "duration_s"]).limit(1).to_arrow()
        if not rows.num_rows:
            return None
        return VideoFile(rows["source_path"][0].as_py() or "", rows["duration_s"][0].as_py())

    def encode(self, text: str) -> TextEncoding:
        """The query's GLSCL text encoding (`QueryEncoder.encode`)."""
        return self.query_encoder.encode(text)

    def search(
        self, text: str, k: int = 10, filters: tuple[Filter, ...] | list[Filter] = (), exact=False, hybrid=False
    ) -> SearchResult:
        """Top-k videos for `text` (see the module docstring for the modes)."""
        where = self._where(k, filters)
        state = self._follow_latest()
        watch = Stopwatch()
        encoding = self.encode(text)
        watch.lap("text")
        result = self._run(state, encoding, k, where, exact, text if hybrid else None, watch)
        result.query = text
        return result

    def search_encoded(
        self, encoding: TextEncoding, k: int = 10, filters: tuple[Filter, ...] | list[Filter] = (), exact=False
    ) -> SearchResult:
        """Top-k videos for an already encoded query (one text)."""
        where = self._where(k, filters)
        return self._run(self._follow_latest(), encoding, k, where, exact, None, Stopwatch())

    def _where(self, k: int, filters: tuple[Filter, ...] | list[Filter]) -> str | None:
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        try:
            return filters_sql(tuple(filters), self.table.schema, INDEX_FILTER_COLUMNS)
        except ValueError as error:
            raise SearchError(str(error)) from None

    def _run(
        self,
        state: IndexState,
        encoding: TextEncoding,
        k: int,
        where: str | None,
        exact: bool,
        hybrid_text: str | None,
        watch: Stopwatch,
    ) -> SearchResult:
        if exact:
            scored = self._exact(state.table, encoding, k, where, watch)
        else:
            scored = self._two_stage(state, encoding, max(k, self.config.candidates), where, hybrid_text, watch)
        hits = self._hits(state.table, encoding, scored, k)
        watch.lap("metadata")
        return SearchResult("", scored.mode, hits, len(scored.row_ids), watch.timings())

    def _two_stage(
        self,
        state: IndexState,
        encoding: TextEncoding,
        limit: int,
        where: str | None,
        hybrid_text: str | None,
        watch: Stopwatch,
    ) -> _Scored:
        """ANN candidates (and full-text matches in hybrid mode), scored exactly from their packed encodings."""
        row_ids = self.candidates(encoding, limit, where, state).row_ids
        text_ranks = {}
        if hybrid_text is not None:
            text_ids = _text_matches(state.table, hybrid_text, limit, where)
            text_ranks = {row_id: rank for rank, row_id in enumerate(text_ids.tolist(), 1)}
            row_ids = _union(row_ids, text_ids)
        watch.lap("ann")
        scored = self._scored_rows(state.table, encoding, row_ids, watch)
        if hybrid_text is None:
            return scored
        ranks = np.array([text_ranks.get(row_id, np.nan) for row_id in scored.row_ids.tolist()])
        fused = _rrf(scored.scores, ranks)
        watch.lap("rerank")
        return _Scored("hybrid", scored.row_ids, scored.encodings, scored.scores, fused)

    def _scored_rows(
        self, table: lancedb.table.Table, encoding: TextEncoding, row_ids: np.ndarray, watch: Stopwatch
    ) -> _Scored:
        """Candidates' packed encodings read by row id (rows gone since are left out) and their exact scores."""
        rows = _take(table, row_ids, [_ENCODINGS])
        row_ids = rows[ROW_ID].to_numpy()
        watch.lap("fetch")
        scores = self._score(encoding, rows[_ENCODINGS])
        watch.lap("rerank")
        return _Scored("two-stage", row_ids, rows[_ENCODINGS], scores)

    def pinned_candidates(
        self, encoding: TextEncoding, limit: int, filters: tuple[Filter, ...] | list[Filter] = ()
    ) -> tuple[int, Candidates]:
        """A gallery shard's half of a sharded query's first stage: its `limit` best candidates and the table
        version their row ids belong to, which `rerank` takes back."""
        where = self._where(min(limit, MAX_K), filters)
        state = self._follow_latest()
        return state.table.version, self.candidates(encoding, limit, where, state)

    def rerank(self, encoding: TextEncoding, version: int, row_ids: np.ndarray, k: int) -> SearchResult:
        """The top k of candidates (row ids at table `version`, as `pinned_candidates` gave them) by the exact GLSCL
        score, with metadata and spans: a gallery shard's part of a sharded query's second stage, run on its share
        of the candidates merged over every shard."""
        table = self._table_at(version)
        watch = Stopwatch()
        scored = self._scored_rows(table, encoding, np.asarray(row_ids, dtype=np.uint64), watch)
        hits = self._hits(table, encoding, scored, k)
        watch.lap("metadata")
        return SearchResult("", scored.mode, hits, len(scored.row_ids), watch.timings())

    def _table_at(self, version: int) -> lancedb.table.Table:
        """The video index table at `version`: the one queries read now, or (after a refresh) opened there."""
        table = self.state.table
        if table.version != version:
            table = self.catalog.open_table(table.name)
            table.checkout(version)
        return table

    def candidates(
        self, encoding: TextEncoding, limit: int, where: str | None, state: IndexState | None = None
    ) -> Candidates:
        """The `limit` videos whose best segment is nearest the query (rows at `state`'s version; default: the one
        queries read now), best first, from the first stage that can answer it."""
        state = state or self.state
        vector = query_vectors(encoding, self.model_config.local_weight, self.ann) @ self.basis
        return state.stage_for(where).nearest(vector[0].numpy(), limit, where, state.probes)

    def _videos(self, encodings: pa.ChunkedArray | pa.Array) -> VideoEncoding:
        return unpack_encodings(encodings, self.slots, self.model_config.num_queries, self.model_config.embed_dim)

    def _score(self, encoding: TextEncoding, encodings: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Exact scores of packed rows, unpacked and scored a block at a time (`workers.search.rerank`)."""
        return packed_scores(self.model, encoding, encodings, self.slots)

    def _exact(
        self, table: lancedb.table.Table, encoding: TextEncoding, k: int, where: str | None, watch: Stopwatch
    ) -> _Scored:
        """Score every (filtered) row exactly, streaming batches and keeping the running top-k."""
        query = table.search().select([_ENCODINGS]).with_row_id(True)
        if where:
            query = query.where(where)
        best_ids = np.zeros(0, dtype=np.uint64)
        best_scores = np.zeros(0, dtype=np.float32)
        best_encodings = pa.array([], table.schema.field(_ENCODINGS).type)
        for batch in query.to_batches(self.config.exact_batch):
            watch.lap("fetch")
            if batch.num_rows == 0:
                continue
            scores = np.concatenate([best_scores, self._score(encoding, batch[_ENCODINGS])])
            keep = np.argsort(-scores, kind="stable")[:k]
            best_ids = np.concatenate([best_ids, batch[ROW_ID].to_numpy()])[keep]
            best_encodings = pa.concat_arrays([best_encodings, batch[_ENCODINGS]]).take(pa.array(keep))
            best_scores = scores[keep]
            watch.lap("rerank")
        watch.lap("fetch")
        return _Scored("exact", best_ids, best_encodings, best_scores)

    @torch.inference_mode()
    def _hits(self, table: lancedb.table.Table, encoding: TextEncoding, scored: _Scored, k: int) -> list[SearchHit]:
        """The top k as hits, with their metadata and encodings (unpacked now, for these rows only) and time spans."""
        row_ids, scores, fused = scored.row_ids, scored.scores, scored.fused
        ranking = fused if fused is not None else scores
        order = np.argsort(-ranking, kind="stable")[:k]
        meta = _take(table, row_ids[order], list(INDEX_HIT_COLUMNS))
        found = {row_id: index for index, row_id in enumerate(meta[ROW_ID].to_pylist())}
        order = np.array([i for i in order.tolist() if int(row_ids[i]) in found], dtype=np.int64)
        if len(order) == 0:
            return []
        rows = [found[int(row_ids[index])] for index in order.tolist()]
        video = self._videos(scored.encodings.take(pa.array(order)))
        weights = self._span_weights(encoding, video, [meta["video_id"][row].as_py() for row in rows])
        timestamps = dense(meta["timestamps"], meta.num_rows, self.slots)
        hits = []
        for rank, (index, row) in enumerate(zip(order.tolist(), rows, strict=True)):
            duration = meta["duration_s"][row].as_py()
            hits.append(
                SearchHit(
                    rank=rank + 1,
                    video_id=meta["video_id"][row].as_py(),
                    score=float(scores[index]),
                    source_path=meta["source_path"][row].as_py(),
                    dataset=meta["dataset"][row].as_py(),
                    split=meta["split"][row].as_py(),
                    duration_s=duration,
                    span_s=span(weights[rank], timestamps[row], video.mask[rank].numpy(), duration),
                    text=meta["text"][row].as_py(),
                    fused=None if fused is None else float(fused[index]),
                )
            )
        return hits

    def _span_weights(self, encoding: TextEncoding, video: VideoEncoding, video_ids: list[str]) -> np.ndarray:
        """How well the query matches each frame of the hits (`video`, in rank order; `workers.search.spans`):
        against their stored CLIP frames, or the GLSCL pooling weights when those are not in the database."""
        stored = self.stored_frames.read(video_ids, self.slots) if self.stored_frames else None
        if stored is not None:
            return frame_match_weights(encoding.sentence[0].float().numpy(), *stored)
        sentence = encoding.sentence.expand(len(video_ids), -1)
        return pooling_weights(sentence, video.frames, video.mask, self.model_config.global_temperature).numpy()


def _text_matches(table: lancedb.table.Table, text: str, limit: int, where: str | None) -> np.ndarray:
    """Row ids of the best full-text matches on the caption text, best first."""
    query = table.search(text, query_type="fts", fts_columns="text").limit(limit)
    if where:
        query = query.where(where, prefilter=True)
    return query.with_row_id(True).select([ROW_ID, "_score"]).to_arrow()[ROW_ID].to_numpy()


def _take(table: lancedb.table.Table, row_ids: np.ndarray, columns: list[str]) -> pa.Table:
    """Some columns of rows by row id, in the order asked (LanceDB returns them in row-id order); rows gone since
    the ids were read are left out."""
    if len(row_ids) == 0:
        empty = table.schema.empty_table().select(columns)
        return empty.append_column(ROW_ID, pa.array([], pa.uint64()))
    rows = table.take_row_ids(row_ids.tolist()).select(columns).with_row_id().to_arrow()
    position = {row_id: index for index, row_id in enumerate(rows[ROW_ID].to_pylist())}
    return rows.take(pa.array([position[r] for r in row_ids.tolist() if r in position], pa.int64()))


def _union(vector_ids: np.ndarray, text_ids: np.ndarray) -> np.ndarray:
    """Row ids of both rankings, each once: the vector candidates, then text matches not among them."""
    seen = set(vector_ids.tolist())
    extra = np.array([row_id for row_id in text_ids.tolist() if row_id not in seen], dtype=vector_ids.dtype)
    return np.concatenate([vector_ids, extra])


def _rrf(scores: np.ndarray, text_rank: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of the exact GLSCL ranking and the full-text ranking (NaN: no text term)."""
    glscl_rank = np.empty(len(scores), dtype=np.float64)
    glscl_rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    text_term = np.where(np.isnan(text_rank), 0.0, 1.0 / (RRF_OFFSET + np.nan_to_num(text_rank)))
    return 1.0 / (RRF_OFFSET + glscl_rank) + text_term
