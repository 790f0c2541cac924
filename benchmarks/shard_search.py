"""`glscl bench shards`: one built search gallery (`glscl bench search` or `hard-search`, its `n<size>` folder)
searched by a single Searcher and by a ShardedSearcher over 1, 2, .. gallery shards (one Ray actor each, on a local
Ray or a cluster), with the same encoded queries. Per shard count: whether each query's top 10 equals the single
searcher's, recall@10 of the exact GLSCL top 10, latency p50/p95 with one client, and throughput with several.

The shards are copied from the gallery's own index (`workers.index.gallery_split`), indexed like it, and kept in its
database for later runs."""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.entry import measure_and_report
from benchmarks.search_bench import MODEL_ID
from glscl.checkpoint import checkpoint_hash, load_checkpoint
from glscl.model import TextEncoding
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import segment_vector_width, stored_segment_columns, video_index_spec
from workers.index.ann_vectors import stored_ann
from workers.index.gallery_split import copy_into_shards
from workers.index.packed_encodings import packed_slots
from workers.index.projection import load_projection
from workers.index.video_index import CheckpointIndex, update_indexes
from workers.ray_config import RayConfig
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher
from workers.search.sharded import ShardedSearchConfig, ShardedSearcher


@dataclass(frozen=True)
class ShardBenchConfig:
    """Which gallery, shard counts, queries and concurrent clients; the searchers' candidates and index cache; the
    Ray to run shard actors on (None: local) and the CPUs each reserves."""

    gallery: str
    shards: tuple[int, ...] = (1, 2)
    queries: int = 100
    clients: tuple[int, ...] = (1, 4)
    candidates: int = 200
    index_cache_gb: float | None = 4.0
    ray_address: str | None = None
    cpus_per_shard: float = 1.0
    search: dict = field(default_factory=dict)


def gallery_index(built: dict) -> CheckpointIndex:
    """The CheckpointIndex of a benchmark gallery's video index table, read back from its table and checkpoint."""
    catalog = Catalog(StoreConfig(built["store"]))
    table = catalog.open_table(built["table"])
    _, config, _ = load_checkpoint(built["checkpoint"])
    schema = table.schema
    slots = packed_slots(schema.field("encodings"), config.num_queries, config.embed_dim)
    width, segments = segment_vector_width(schema), len(stored_segment_columns(schema))
    encodings = built.get("encodings", "float16")
    sha = checkpoint_hash(built["checkpoint"])
    spec = video_index_spec(sha, MODEL_ID, config.num_queries, width, segments, slots, encodings)
    return CheckpointIndex(spec, sha, MODEL_ID, "synthetic", config.embed_dim)


def build_shards(built: dict, shards: int) -> float:
    """The gallery's index copied into `shards` gallery shards and indexed as it is (once; later runs reuse them);
    seconds spent."""
    start = time.perf_counter()
    catalog = Catalog(StoreConfig(built["store"]))
    index = gallery_index(built)
    tables = index.gallery(shards)
    if shards > 1 and not all(catalog.exists(shard.spec) for shard in tables):
        copy_into_shards(catalog, catalog.open_table(built["table"]), tables)
        ann = stored_ann(load_projection(catalog, built["table"]).ann)
        for shard in tables:
            update_indexes(catalog, catalog.open_table(shard.spec.name), ann, print)
    return time.perf_counter() - start


def _queries(folder: Path, count: int) -> tuple[list[TextEncoding], np.ndarray]:
    with np.load(folder / "reference.npz") as data:
        sentence, local, exact = data["sentence"][:count], data["local"][:count], data["exact_top10"][:count]
    encodings = [
        TextEncoding(torch.from_numpy(sentence[i : i + 1]), torch.from_numpy(local[i : i + 1]))
        for i in range(len(sentence))
    ]
    return encodings, exact


def _top10(result) -> list[str]:
    return [hit.video_id for hit in result.hits]


def _recall(found: list[list[str]], exact: np.ndarray) -> float:
    hits = [len({int(video[3:]) for video in ids} & set(row.tolist())) for ids, row in zip(found, exact, strict=True)]
    return float(np.mean(hits) / 10)


def _latency(search, queries: list[TextEncoding]) -> tuple[list[list[str]], dict[str, float]]:
    found, ms = [], []
    for query in queries:
        start = time.perf_counter()
        found.append(_top10(search(query)))
        ms.append((time.perf_counter() - start) * 1000)
    return found, {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def _throughput(search, queries: list[TextEncoding], clients: int) -> float:
    """Queries per second with `clients` threads sending the queries between them."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(search, queries))
    return len(queries) / (time.perf_counter() - start)


def run(config: ShardBenchConfig) -> dict:
    """Measure the single searcher, then each shard count, on the same queries."""
    folder = Path(config.gallery)
    built = json.loads((folder / "build.json").read_text())
    queries, exact = _queries(folder, config.queries)
    settings = SearchConfig(
        built["checkpoint"],
        StoreConfig(built["store"]),
        encode_text=False,
        candidates=config.candidates,
        index_cache_gb=config.index_cache_gb,
        prewarm=True,
        **config.search,
    )
    single = Searcher(settings)
    search = lambda query: single.search_encoded(query, k=10)  # noqa: E731
    single.search_encoded(queries[0], k=10)
    reference, latency = _latency(search, queries)
    rows = [
        {
            "searcher": "single",
            "videos": single.videos,
            "stage": single.describe()["candidate_stage"],
            "recall@10": _recall(reference, exact),
            "same_top10": 1.0,
            "latency_ms": latency,
            "qps": {str(c): _throughput(search, queries, c) for c in config.clients},
        }
    ]
    for shards in config.shards:
        build_s = build_shards(built, shards)
        ray = RayConfig(address=config.ray_address)
        sharded = ShardedSearcher(ShardedSearchConfig(settings, shards, ray, config.cpus_per_shard))
        try:
            search = lambda query, engine=sharded: engine.search_encoded(query, k=10)  # noqa: E731
            search(queries[0])
            found, latency = _latency(search, queries)
            served = {**sharded.describe(), "shards": sharded.shards}
            rows.append(
                {
                    "searcher": f"{shards} shards",
                    "videos": served["videos"],
                    "stage": ", ".join(sorted({s["candidate_stage"] for s in served["shards"]})),
                    "nodes": served["nodes"],
                    "shard_build_s": build_s,
                    "recall@10": _recall(found, exact),
                    "same_top10": float(np.mean([a == b for a, b in zip(found, reference, strict=True)])),
                    "latency_ms": latency,
                    "qps": {str(c): _throughput(search, queries, c) for c in config.clients},
                }
            )
        finally:
            sharded.close()
    return {"gallery": str(folder), "queries": len(queries), "candidates": config.candidates, "rows": rows}


def to_markdown(report: dict) -> str:
    """The rows as one table."""
    clients = list(report["rows"][0]["qps"])
    lines = [
        f"## Sharded search: {report['gallery']} ({report['queries']} queries, {report['candidates']} candidates)",
        "",
        "| searcher | videos | stage | same top 10 | recall@10 | p50 / p95 ms | "
        + " | ".join(f"q/s, {c} clients" for c in clients)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(clients),
    ]
    for row in report["rows"]:
        qps = " | ".join(f"{row['qps'][c]:.1f}" for c in clients)
        latency = row["latency_ms"]
        lines.append(
            f"| {row['searcher']} | {row['videos']} | {row['stage']} | {row['same_top10']:.3f} | "
            f"{row['recall@10']:.3f} | {latency['p50']:.1f} / {latency['p95']:.1f} | {qps} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    defaults = ShardBenchConfig(gallery="")
    parser = argparse.ArgumentParser(prog="glscl bench shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery", required=True, help="a built gallery's n<size> folder (build.json inside)")
    parser.add_argument("--shards", type=int, nargs="+", default=list(defaults.shards), help="shard counts")
    parser.add_argument("--queries", type=int, default=defaults.queries, help=f"(default {defaults.queries})")
    parser.add_argument("--clients", type=int, nargs="+", default=list(defaults.clients), help="for throughput")
    parser.add_argument("--candidates", type=int, default=defaults.candidates, help=f"(default {defaults.candidates})")
    parser.add_argument(
        "--index-cache-gb", type=float, default=defaults.index_cache_gb, help="LanceDB index cache per searcher, GiB"
    )
    parser.add_argument("--ray-address", default=None, help="a Ray cluster's address (default: a local Ray)")
    parser.add_argument(
        "--cpus-per-shard", type=float, default=defaults.cpus_per_shard, help="CPUs each shard actor reserves"
    )
    parser.add_argument("--ef", type=int, default=None, help="HNSW breadth (default: the searcher's rule)")
    parser.add_argument("--nprobes", type=int, default=None, help="IVF partitions probed (default: the searcher's)")
    parser.add_argument(
        "--in-memory-below", type=int, default=None, help="keep smaller galleries' vectors in memory (the searcher's)"
    )
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    return parser


def config_from_args(args: argparse.Namespace) -> ShardBenchConfig:
    settings = (("ef", args.ef), ("nprobes", args.nprobes), ("in_memory_below", args.in_memory_below))
    search = {name: value for name, value in settings if value is not None}
    return ShardBenchConfig(
        gallery=args.gallery,
        shards=tuple(args.shards),
        queries=args.queries,
        clients=tuple(args.clients),
        candidates=args.candidates,
        index_cache_gb=args.index_cache_gb,
        ray_address=args.ray_address,
        cpus_per_shard=args.cpus_per_shard,
        search=search,
    )


def main(argv: list[str] | None = None) -> str:
    return measure_and_report(build_parser(), lambda args: run(config_from_args(args)), to_markdown, argv)


if __name__ == "__main__":
    print(main())
