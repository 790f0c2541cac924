"""Search over a gallery split into shards (schemas/gallery_shards.py), each shard's Searcher in its own Ray actor,
on whichever node of the cluster Ray places it. A query is encoded once where it arrives, then answered in two
fan-outs that give the single searcher's answer:

1. every shard returns its best `candidates` videos with their proxy scores (the shards share one projection basis,
   so the scores compare); the merged list's best `candidates` are the ones the single searcher would take;
2. each shard scores its share of those exactly from its own packed encodings (they never leave the shard) and
   returns its top k with metadata; the merged top k by exact score is the answer.

Only query encodings, row ids, scores and the hits travel between processes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import ray

from glscl.backbone import Backbone
from glscl.backbone_config import recorded_backbone
from glscl.checkpoint import load_checkpoint
from glscl.model import TextEncoding
from schemas.gallery_shards import gallery_shard, shard_table_names
from schemas.tables import video_index_name
from workers.ray_config import RayConfig
from workers.ray_jobs import ensure_ray
from workers.search.candidates.base import Candidates
from workers.search.config import SearchConfig
from workers.search.filters import Filter
from workers.search.query_text import QueryEncoder, SearchError
from workers.search.results import STAGES, SearchHit, SearchResult, VideoFile
from workers.search.searcher import MAX_K, Searcher


@dataclass(frozen=True)
class ShardedSearchConfig:
    """The search settings every shard shares (`search`: checkpoint, store, candidates, probes...), how many gallery
    shards the index was built with (`glscl index --gallery-shards`), the Ray to run the shard actors on (local,
    or a cluster's address) and the CPUs each actor reserves: at most the cluster's CPUs over the shards, so more
    shards than cores (a local Ray, a small cluster) still start rather than wait for CPUs forever. Each actor
    answers up to `concurrency` queries at once on its own threads (a Searcher is thread-safe), as a server's
    single searcher does; one at a time, a shard would serialise every client."""

    search: SearchConfig
    shards: int
    ray: RayConfig = field(default_factory=RayConfig)
    cpus_per_shard: float = 1.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {self.shards}")


class ShardSearcher:
    """One gallery shard's Searcher, taking encoded queries: the body of a shard actor (plain, testable without
    Ray)."""

    def __init__(self, config: SearchConfig) -> None:
        self.searcher = Searcher(config)

    def candidates(self, encoding: TextEncoding, limit: int, filters: Sequence[Filter]) -> tuple[int, Candidates]:
        """Its best `limit` candidates and the table version their row ids belong to."""
        return self.searcher.pinned_candidates(encoding, limit, tuple(filters))

    def rerank(self, encoding: TextEncoding, version: int, row_ids: np.ndarray, k: int) -> SearchResult:
        """Its share of the merged candidates, scored exactly; the top k with metadata."""
        return self.searcher.rerank(encoding, version, row_ids, k)

    def video_file(self, video_id: str) -> VideoFile | None:
        """The source file and duration of a video of this shard (None: not indexed here)."""
        return self.searcher.video_file(video_id)

    def describe(self) -> dict[str, str | int]:
        """Its table, videos and candidate stage, and the node it runs on."""
        return {
            **self.searcher.describe(),
            "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",
        }


@dataclass(frozen=True)
class _Merged:
    """The merged first stage: each shard's row ids among the best candidates (in merged order) and its version."""

    row_ids: list[np.ndarray]
    versions: list[int]
    count: int


def merge_candidates(found: list[tuple[int, Candidates]], limit: int) -> _Merged:
    """The best `limit` candidates over all shards by proxy score (ties: lower shard, then the shard's own order),
    given back per shard."""
    scores = np.concatenate([candidates.scores for _, candidates in found]).astype(np.float64)
    shard = np.concatenate([np.full(len(candidates), i) for i, (_, candidates) in enumerate(found)])
    position = np.concatenate([np.arange(len(candidates)) for _, candidates in found])
    best = np.lexsort((position, shard, -scores))[:limit]
    rows = [candidates.row_ids[position[best][shard[best] == i]] for i, (_, candidates) in enumerate(found)]
    return _Merged(rows, [version for version, _ in found], len(best))


def merge_hits(results: list[SearchResult], k: int) -> list[SearchHit]:
    """The top k of the shards' hits by exact score (ties: lower shard, then the shard's rank), ranked again."""
    hits = [(hit, i) for i, result in enumerate(results) for hit in result.hits]
    hits.sort(key=lambda pair: (-pair[0].score, pair[1], pair[0].rank))
    return [replace(hit, rank=rank) for rank, (hit, _) in enumerate(hits[:k], 1)]


class ShardedSearcher:
    """Answers text queries over every gallery shard of one checkpoint's video index, one Ray actor per shard."""

    def __init__(self, config: ShardedSearchConfig) -> None:
        self.config = config
        search = config.search
        model, model_config, meta = load_checkpoint(search.checkpoint)
        extra = meta.get("extra", {})
        backbone = (search.backbone or recorded_backbone(extra)) if search.encode_text else None
        max_words = int(extra.get("max_words", model_config.max_words))
        self.query_encoder = QueryEncoder(
            model, Backbone(backbone) if backbone else None, max_words, search.text_threads
        )
        ensure_ray(config.ray)
        cpus = min(config.cpus_per_shard, ray.cluster_resources().get("CPU", 1.0) / config.shards)
        options = {"num_cpus": cpus, "max_concurrency": config.concurrency, "scheduling_strategy": "SPREAD"}
        actor = ray.remote(ShardSearcher).options(**options)
        tables = shard_table_names(video_index_name(meta["sha256"]), config.shards)
        shard_search = replace(search, encode_text=False, backbone=None)
        self.actors = [actor.remote(replace(shard_search, index_table=table)) for table in tables]
        self.shards = ray.get([shard.describe.remote() for shard in self.actors])

    @property
    def videos(self) -> int:
        """Videos over every shard, as the shards last described them."""
        return sum(int(shard["videos"]) for shard in self.shards)

    def describe(self) -> dict[str, str | int]:
        """What is served (as the single searcher says it, for /health): the gallery's videos and candidate stage,
        its shard count and the Ray nodes they run on; `shards` holds each shard's table, videos, stage and node."""
        self.shards = ray.get([shard.describe.remote() for shard in self.actors])
        return {
            "index": self.shards[0]["index"].rsplit("_shard", 1)[0],
            "videos": self.videos,
            "candidate_stage": self.shards[0]["candidate_stage"],
            "gallery_shards": len(self.shards),
            "nodes": len({shard["node"] for shard in self.shards}),
        }

    def video_file(self, video_id: str) -> VideoFile | None:
        """The source file and duration of an indexed video, from the shard that holds it."""
        return ray.get(self.actors[gallery_shard(video_id, len(self.actors))].video_file.remote(video_id))

    def search(
        self, text: str, k: int = 10, filters: Sequence[Filter] = (), exact: bool = False, hybrid: bool = False
    ) -> SearchResult:
        """Top-k videos for `text` over every shard (two-stage; see the module docstring). Exact and hybrid search
        read one table, so a sharded gallery refuses them."""
        if exact or hybrid:
            raise SearchError("a gallery split into shards answers two-stage queries only: leave out exact and hybrid")
        start = time.perf_counter()
        encoding = self.query_encoder.encode(text)
        text_ms = (time.perf_counter() - start) * 1000
        result = self.search_encoded(encoding, k, filters)
        result.query = text
        result.timings_ms["text"] = text_ms
        result.timings_ms["total"] += text_ms
        return result

    def search_encoded(self, encoding: TextEncoding, k: int = 10, filters: Sequence[Filter] = ()) -> SearchResult:
        """Top-k videos for an already encoded query over every shard."""
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        start = time.perf_counter()
        limit = max(k, self.config.search.candidates)
        found = ray.get([shard.candidates.remote(encoding, limit, tuple(filters)) for shard in self.actors])
        merged = merge_candidates(found, limit)
        candidates_at = time.perf_counter()
        asked = [
            shard.rerank.remote(encoding, version, rows, k)
            for shard, version, rows in zip(self.actors, merged.versions, merged.row_ids, strict=True)
            if len(rows)
        ]
        results = ray.get(asked)
        hits = merge_hits(results, k)
        end = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        timings["ann"] = (candidates_at - start) * 1000
        timings["rerank"] = (end - candidates_at) * 1000
        timings["total"] = (end - start) * 1000
        return SearchResult("", "sharded", hits, merged.count, timings)

    def close(self) -> None:
        """Stop the shard actors."""
        for shard in self.actors:
            ray.kill(shard)
