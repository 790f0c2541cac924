"""The baseline users would pick instead of GLSCL, as clip-retrieval sets it up: one mean-pooled CLIP vector per video
in a vector index, a query answered by its CLIP sentence vector's nearest neighbours; no training, no re-rank.

A video's vector is `glscl.baselines.MeanPooling`'s (the masked mean of its raw, L2-normalised CLIP frame features,
normalised again) and a query's is its raw sentence vector, normalised: a gallery source gives both (`RawSource`),
before any GLSCL head. The vectors are a LanceDB table (`video_id`, `vector`) in the gallery's own database, under a
vector index of the GLSCL candidate stage's type and partition rule (`workers.index.indexes.vector_index`, the same
`min_rows`), and queries go through LanceDB with the searcher's index cache and prewarm. Beside the table, the build
keeps the exact mean-pool top-10 of every query (a matmul over the same vectors), so a report separates what the
index loses from what mean pooling ranks differently from GLSCL.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import torch

from benchmarks.search_recall import recall_fields
from glscl.baselines import MeanPooling
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.index.config import AnnConfig
from workers.index.indexes import DISTANCE, has_hnsw_index, vector_index, vector_index_name
from workers.search.candidates.base import ALL_PARTITIONS, ProbeSettings

if TYPE_CHECKING:
    from benchmarks.search_bench import SearchBenchConfig

TABLE = "mean_pool"
COLUMN = "vector"
FACTS, ARRAYS = "baseline.json", "baseline.npz"
TOP = 10


class RawSource(Protocol):
    """What the baseline needs from a gallery source: its inputs before any GLSCL head."""

    def pooled(self, size: int, chunk: int, low: int, high: int) -> np.ndarray:
        """Mean-pooled raw CLIP vectors [n, D] (`mean_pool`) of videos `low`..`high` (chunk `chunk` of `size`), the
        same videos `videos` encodes."""
        ...

    def raw_sentences(self, size: int) -> np.ndarray:
        """Raw CLIP sentence vectors [Q, D] of the queries `queries(size)` gives, in the same order."""
        ...


@torch.inference_mode()
def mean_pool(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`MeanPooling.embed_videos` of raw frame features [n, F, D] with their frame mask [n, F]: [n, D] float32."""
    return MeanPooling().embed_videos(torch.from_numpy(frames), torch.from_numpy(mask)).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def build(folder: Path, size: int, chunk: int, source: RawSource) -> tuple[dict, dict[str, np.ndarray]]:
    """Write the mean-pool table of `source`'s `size` videos into the gallery database under `folder`, chunk by chunk,
    and rank every video for every query exactly; return the facts (timed) and the arrays to keep (raw sentences and
    the exact mean-pool top-10)."""
    catalog = Catalog(StoreConfig(str(folder / "db")))
    sentences = source.raw_sentences(size)
    queries = _unit(sentences)
    best_scores = np.full((len(queries), TOP), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), TOP), np.int64)
    table, start = None, time.perf_counter()
    for index, low in enumerate(range(0, size, chunk)):
        high = min(low + chunk, size)
        pooled = source.pooled(size, index, low, high).astype(np.float32)
        rows = pa.table(
            {
                "video_id": pa.array([f"syn{i:09d}" for i in range(low, high)]),
                COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(pooled.reshape(-1)), pooled.shape[1]),
            }
        )
        if table is None:
            table = catalog.db.create_table(TABLE, rows, mode="overwrite")
        else:
            table.add(rows)
        scores = np.concatenate([best_scores, queries @ pooled.T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(low, high), (len(queries), high - low))], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]  # ties: the lower video number first
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    facts = {"store": str(folder / "db"), "table": TABLE, "rows": size, "write_s": time.perf_counter() - start}
    return facts, {"sentence": sentences, "exact_top10": best_ids}


def load_or_build(folder: Path, size: int, chunk: int, source: RawSource, ann: AnnConfig) -> dict:
    """The gallery's mean-pool table (written once, `build`), with a vector index of `ann`'s type when the GLSCL
    stage would have one (at least `ann.min_rows` videos, a type other than "none"); an index of another type is
    rebuilt, and each build timed. Returns the facts with the raw sentences and exact mean-pool top-10."""
    facts_path, arrays_path = folder / FACTS, folder / ARRAYS
    if not (facts_path.exists() and arrays_path.exists()):
        facts, arrays = build(folder, size, chunk, source)
        np.savez(arrays_path, **arrays)
        facts_path.write_text(json.dumps(facts, indent=2))
    facts = json.loads(facts_path.read_text())
    table = Catalog(StoreConfig(facts["store"])).open_table(TABLE)
    rows = table.count_rows()
    wanted = ann.index_type if ann.index_type != "none" and rows >= ann.min_rows else None
    if wanted and facts.get("index_type") != wanted:
        config = vector_index(ann, rows, table.schema.field(COLUMN).type.list_size)
        start = time.perf_counter()
        table.create_index(COLUMN, config=config, replace=True)
        facts |= {"index_type": wanted, "partitions": config.num_partitions, "index_s": time.perf_counter() - start}
        facts_path.write_text(json.dumps(facts, indent=2))
    with np.load(arrays_path) as data:
        return facts | {"sentence": data["sentence"], "exact_top10": data["exact_top10"]}


def read_pooled(folder: Path, low: int, high: int) -> np.ndarray:
    """Videos `low`..`high` of the mean-pool table of the gallery under `folder` (written in id order, checked)."""
    catalog = Catalog(StoreConfig(str(folder / "db")))
    if TABLE not in catalog.table_names():
        raise FileNotFoundError(f"{folder} has no mean-pool table (built with --no-baseline): pass --no-baseline")
    rows = catalog.open_table(TABLE).search().select(["video_id", COLUMN]).offset(low).limit(high - low).to_arrow()
    if rows["video_id"].to_pylist() != [f"syn{i:09d}" for i in range(low, high)]:
        raise ValueError(f"{folder}'s {TABLE} table does not hold videos {low}..{high} in order")
    return np.stack(rows[COLUMN].to_numpy(zero_copy_only=False))


def read_sentences(folder: Path) -> np.ndarray:
    """The raw sentence vectors the mean-pool baseline of the gallery under `folder` was built with."""
    with np.load(folder / ARRAYS) as data:
        return data["sentence"]


class MeanPoolIndex:
    """The mean-pool table as a search service would hold it: opened once with its own LanceDB index cache, the
    vector index prewarmed, top-10 queries by dot product on unit vectors (cosine)."""

    def __init__(self, store: str, index_cache_gb: float) -> None:
        catalog = Catalog.with_index_cache(StoreConfig(store), int(index_cache_gb * 2**30))
        self.table = catalog.open_table(TABLE)
        self.videos = self.table.count_rows()
        self.indexed = bool(self.table.list_indices())
        self.hnsw = self.indexed and has_hnsw_index(self.table, [COLUMN])
        if self.indexed:
            self.table.prewarm_index(vector_index_name(COLUMN))

    def nearest(self, sentence: np.ndarray, probes: ProbeSettings) -> list[int]:
        """Video numbers of the `TOP` videos nearest the normalised `sentence`, best first."""
        search = self.table.search(_unit(sentence), vector_column_name=COLUMN).distance_type(DISTANCE).limit(TOP)
        if self.indexed:
            search = search.nprobes(probes.nprobes)
            if self.hnsw:
                search = search.ef(probes.ef_for(TOP, widen=2))
            if probes.refine_factor:
                search = search.refine_factor(probes.refine_factor)
        hits = search.select(["video_id", "_distance"]).to_arrow()
        return [int(video[3:]) for video in hits["video_id"].to_pylist()]


def _latency(prefix: str, values: list[float]) -> dict[str, float]:
    return {f"{prefix}p50_ms": float(np.percentile(values, 50)), f"{prefix}p95_ms": float(np.percentile(values, 95))}


def sweep(config: SearchBenchConfig, built: dict, baseline: dict, text_ms: Callable[[], float]) -> list[dict]:
    """Recall and latency of the mean-pool ANN query for each (nprobes, refine factor, ef) the two-stage sweep takes
    (every partition probed at most `probe_all_below` videos, as the searcher does; settings that change nothing, an
    ef without HNSW or any setting without an index, run once), with a query's text side (`text_ms`: the CLIP text
    tower alone) timed before each search."""
    index = MeanPoolIndex(baseline["store"], config.index_cache_gb)
    exact, own = built["exact_top10"], baseline["exact_top10"]
    sentences, rows, seen = baseline["sentence"], [], set()
    for nprobes in config.nprobes:
        for refine in config.refine_factors:
            for ef in config.efs:
                probes = ProbeSettings(
                    ALL_PARTITIONS if index.videos <= config.probe_all_below else nprobes, ef or None, refine or None
                )
                ef_used = probes.ef_for(TOP, widen=2) if index.hnsw else None
                shown = ("all" if probes.nprobes == ALL_PARTITIONS else nprobes, refine, ef_used)
                key = shown if index.indexed else "scan"
                if key in seen:
                    continue
                seen.add(key)
                index.nearest(sentences[0], probes)
                found, searches, texts = [], [], []
                for sentence in sentences:
                    texts.append(text_ms())
                    start = time.perf_counter()
                    found.append(index.nearest(sentence, probes))
                    searches.append((time.perf_counter() - start) * 1000)
                row = {
                    "method": "mean-pool ANN",
                    "videos": index.videos,
                    "index_type": baseline.get("index_type", "scan"),
                    "partitions": baseline.get("partitions"),
                    "nprobes": shown[0] if index.indexed else None,
                    "refine_factor": refine if index.indexed else 0,
                    "ef": ef_used,
                    **recall_fields(found, exact, built["targets"], built["kinds"]),
                    "own_recall@10": statistics.mean(
                        len(set(hits) & set(own[i].tolist())) / TOP for i, hits in enumerate(found)
                    ),
                    **_latency("", searches),
                    **_latency("text_", texts),
                    **_latency("total_", [t + s for t, s in zip(texts, searches, strict=True)]),
                    "load_avg_1m": os.getloadavg()[0],
                }
                print(f"  {row}", flush=True)
                rows.append(row)
    return rows
