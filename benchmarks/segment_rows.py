"""The candidate stage with one ANN graph over every (video, segment) vector, measured on a built benchmark gallery.

The video index keeps a video's S segment vectors in S columns, so a query runs S LanceDB searches (one per
column) and a video ranks by its best segment. Here every segment vector is a row of one vectors-only table with
one graph (IVF_HNSW_SQ with a single partition): one search per query, whose `limit` rows are folded to their first
C distinct videos. Reported per setting: candidate coverage (the share of the exact top 10 among the C candidates,
which is what the exact re-rank then recovers, so recall@10 after it) and the search's latency; and, for
reference, the coverage of an exact scan of the same vectors.

Usage, on a gallery written by `benchmarks.hard_gallery` or `benchmarks.search_bench` (ROOT/nSIZE):
  python -m benchmarks.segment_rows --gallery ROOT/n100000 --db /tmp/rows --settings 200:1600:1600 --output R.json
The table and its graph are built once into --db (17 minutes for 800,000 rows of 1,024 dims on 2 cores) and reused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import torch
from lancedb.index import IvfHnswSq

from glscl.model import TextEncoding
from schemas.store import StoreConfig
from workers.search.ann_vectors import query_vectors
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher

VIDEO, VECTOR = "video", "vector"


def gallery_queries(gallery: Path) -> tuple[Searcher, np.ndarray, np.ndarray]:
    """The gallery's searcher, its queries' projected ANN vectors [Q, d] and their exact top 10 [Q, 10]."""
    built = json.loads((gallery / "build.json").read_text())
    settings = SearchConfig(built["checkpoint"], StoreConfig(built["store"]), encode_text=False, in_memory_below=0)
    searcher = Searcher(settings)
    with np.load(gallery / "reference.npz") as reference:
        text = TextEncoding(torch.from_numpy(reference["sentence"]), torch.from_numpy(reference["local"]))
        exact = reference["exact_top10"]
    vectors = query_vectors(text, searcher.model_config.local_weight, searcher.ann) @ searcher.basis
    return searcher, vectors.numpy().astype(np.float32), exact


def segment_rows(searcher: Searcher) -> tuple[np.ndarray, np.ndarray]:
    """Every segment vector of the gallery as a row [N * S, d], and the number of the video each belongs to."""
    rows = searcher.table.search().select(["video_id", *searcher.segment_columns]).to_arrow()
    count, columns = rows.num_rows, searcher.segment_columns
    parts = [rows[column].combine_chunks().flatten().to_numpy().reshape(count, -1) for column in columns]
    vectors = np.stack(parts, axis=1)
    videos = np.array([int(video_id[3:]) for video_id in rows["video_id"].to_pylist()], dtype=np.int64)
    return vectors.reshape(-1, vectors.shape[2]).astype(np.float32), np.repeat(videos, len(columns))


def rows_table(db: lancedb.DBConnection, name: str, vectors: np.ndarray, videos: np.ndarray) -> float:
    """Write the rows and build their one graph; the build's seconds."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    table = db.create_table(name, pa.table({VIDEO: videos, VECTOR: column}))
    start = time.perf_counter()
    table.create_index(VECTOR, config=IvfHnswSq(distance_type="dot", num_partitions=1))
    return time.perf_counter() - start


def exact_coverage(queries: np.ndarray, vectors: np.ndarray, videos: np.ndarray, exact: np.ndarray, c: int) -> float:
    """Coverage of the exact top 10 by the C videos whose best segment is nearest, with no index."""
    scores = torch.from_numpy(queries) @ torch.from_numpy(vectors).T
    index = torch.from_numpy(videos).expand(len(queries), -1)
    best = torch.full((len(queries), int(videos.max()) + 1), -torch.inf).scatter_reduce(1, index, scores, "amax")
    top = best.topk(c, dim=1).indices.numpy()
    return float(np.mean([len(set(top[i]) & set(exact[i])) / 10 for i in range(len(queries))]))


def sweep(table: lancedb.table.Table, queries: np.ndarray, exact: np.ndarray, c: int, limit: int, ef: int) -> dict:
    """Coverage and latency of one setting: `limit` nearest rows (graph search breadth `ef`) folded to C videos."""
    latencies, coverage = [], []
    for query, top10 in zip(queries, exact, strict=True):
        start = time.perf_counter()
        hits = table.search(query).distance_type("dot").limit(limit).ef(ef).select([VIDEO]).to_arrow()
        videos = hits[VIDEO].to_numpy()
        _, first = np.unique(videos, return_index=True)
        candidates = videos[np.sort(first)][:c]
        latencies.append((time.perf_counter() - start) * 1000)
        coverage.append(len(set(candidates.tolist()) & set(top10.tolist())) / 10)
    return {
        "candidates": c,
        "limit": limit,
        "ef": ef,
        "coverage": float(np.mean(coverage)),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
    }


def _setting(text: str) -> tuple[int, int, int]:
    """'200:1600:1600' -> (candidates, limit, ef)."""
    try:
        c, limit, ef = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CANDIDATES:LIMIT:EF such as 200:1600:1600, got {text!r}") from None
    if not 0 < c <= limit <= ef:
        raise argparse.ArgumentTypeError(f"need 0 < candidates <= limit <= ef, got {text!r}")
    return c, limit, ef


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", required=True, type=Path, help="a built gallery folder (ROOT/nSIZE)")
    parser.add_argument("--db", required=True, help="LanceDB folder for the segment rows (built once, reused)")
    parser.add_argument("--table", default="segment_rows", help="table name in --db (default segment_rows)")
    parser.add_argument(
        "--settings",
        type=_setting,
        nargs="+",
        default=[(100, 400, 400), (200, 800, 800), (200, 1200, 1200), (200, 1600, 1600)],
        help="CANDIDATES:LIMIT:EF settings (default 100:400:400 200:800:800 200:1200:1200 200:1600:1600)",
    )
    parser.add_argument("--output", required=True, help="JSON report")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) the segment rows' graph, sweep the settings and write the report."""
    args = build_parser().parse_args(argv)
    searcher, queries, exact = gallery_queries(args.gallery)
    db = lancedb.connect(args.db)
    vectors, videos = segment_rows(searcher)
    report: dict = {"gallery": str(args.gallery), "rows": len(videos), "dim": vectors.shape[1], "queries": len(exact)}
    if args.table not in db.table_names():
        report["index_build_s"] = rows_table(db, args.table, vectors, videos)
    candidates = sorted({c for c, _, _ in args.settings})
    report["exact_scan_coverage"] = {c: exact_coverage(queries, vectors, videos, exact, c) for c in candidates}
    del vectors
    table = db.open_table(args.table)
    report["settings"] = []
    for c, limit, ef in args.settings:
        report["settings"].append(sweep(table, queries, exact, c, limit, ef))
        print(json.dumps(report["settings"][-1]), flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
