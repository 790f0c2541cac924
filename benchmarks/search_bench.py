"""Two-stage search against exhaustive exact GLSCL scoring: recall@1/@10 of the exact top-k and per-query
latency p50/p95, at several gallery sizes, over a swept (candidates, nprobes) grid; beside it the baseline users would
pick instead (one mean-pooled CLIP vector per video in a LanceDB vector index of the same type, `benchmarks.mean_pool`,
`--no-baseline` skips it), the per-query time of an exhaustive X-Pool-style head (timed on a slice, extrapolated) and
of the text side (CLIP text tower and GLSCL text side, over the query's real length and over all `max_words`
positions). Each gallery's `side_by_side` rows (printed as Markdown) put the methods in one table, with the load
average they ran at, and how often each finds the query's own target video.

Per query the sweep times the text side (a fixed 12-word query through the CLIP text tower and a paper-size GLSCL
head, as the searcher runs it), the search of the query's synthetic encoding, and both together.

Galleries are synthetic *encoded* video_index tables written straight to LanceDB (no decoding, no video
encoder): each video has two events drawn around shared topics; its encoded frames (CLIP-like norm 10) show
the first event in the first half and the second in the second half, its K concept vectors are noisy random
rotations of the events. A query describes one event of a target video. The exact top-k is computed while
the gallery is written, with the same scorer the search uses, on the same float16 values. These galleries suit the
candidate stage (events aligned to its time segments, a random head); `benchmarks/hard_gallery.py` builds hard ones
(events anywhere, 1-8 per video, F = 64 with frame masks, a trained head) through the same `build` and `sweep`, from
a `GallerySource`.

Usage: python -m benchmarks.search_bench --root DIR [--sizes 5000 100000 1000000] [--queries 100]
       python -m benchmarks.search_bench --text-only [--max-words 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import torch

from benchmarks import mean_pool
from benchmarks.compact_encodings import stored_exactness
from benchmarks.mean_pool import RawSource
from benchmarks.search_recall import recall_fields
from glscl import onednn
from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig
from glscl.baselines import XPoolHead
from glscl.checkpoint import checkpoint_hash, load_checkpoint, save_checkpoint
from glscl.config import HEAD_PRESETS, GLSCLConfig
from glscl.model import GLSCL, TextEncoding, VideoEncoding
from glscl.scoring_cost.timing import cpu_name
from glscl.search_vectors import fill_absent_segments
from pipelines.cli.options import add_ann_options, ann_options
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import ENCODINGS_FORMS, video_index_spec
from workers.index.ann_vectors import segment_vectors
from workers.index.config import VECTOR_INDEX_TYPES, AnnConfig
from workers.index.indexes import index_health
from workers.index.packed_encodings import packed_slots, unpack_encodings
from workers.index.projection import Projection, save_projection
from workers.index.video_index import project_rows, update_indexes, video_index_table
from workers.plots import new_figure, save_figure
from workers.search.candidates.base import ALL_PARTITIONS
from workers.search.config import SearchConfig
from workers.search.query_text import torch_threads
from workers.search.searcher import Searcher

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MODEL_ID = "ViT-B-32@random-seed0"  # a real text tower (random weights): `glscl serve` can take text over a gallery
FRAME_NORM = 10.0
TEXT_NORM = 8.0
QUERY = "a man in a red jacket climbs a steep wall then waves"


@dataclass(frozen=True)
class SearchBenchConfig:
    """Gallery shapes, query count, the ANN grid to sweep and where to write."""

    root: str
    sizes: tuple[int, ...] = (5000, 100_000, 1_000_000)
    dim: int = 512
    num_queries: int = 8
    frames: int = 16
    vector_dim: int = 512
    queries: int = 100
    topics: int = 2000
    candidates: tuple[int, ...] = (50, 100, 200)
    nprobes: tuple[int, ...] = (16, 32, 64)
    refine_factors: tuple[int, ...] = (0,)
    efs: tuple[int, ...] = (0,)
    compare_columns: bool = False
    probe_all_below: int = SearchConfig.probe_all_below
    in_memory_below: int = SearchConfig.in_memory_below
    text_threads: int | None = None
    index_cache_gb: float = 10.0
    chunk: int = 20_000
    xpool_slice: int = 10_000
    exact_mode_max: int = 100_000
    baseline: bool = True
    seed: int = 0
    output: str = "benchmarks/search_results.json"
    text_model: str = "ViT-B-32"
    max_words: int = 32
    ann: AnnConfig = field(default_factory=lambda: AnnConfig(min_rows=4096, sample_rate=64, max_iterations=25))


class Generator:
    """Deterministic synthetic encodings: per chunk, events first (cheap, so query targets can be drawn up front),
    then frames and concept vectors. Noise levels are relative: sigma = noise norm / signal norm."""

    def __init__(self, config: SearchBenchConfig) -> None:
        self.config = config
        base = np.random.default_rng(config.seed)
        self.topics = _unit(base.standard_normal((config.topics, config.dim), dtype=np.float32))
        self.rotations = base.standard_normal((config.num_queries, config.dim, config.dim), dtype=np.float32)
        self.rotations /= math.sqrt(config.dim)

    def events(self, chunk: int, n: int) -> np.ndarray:
        """[n, 2, D] unit event vectors of the chunk's videos, each near one of the shared topics."""
        rng = np.random.default_rng((self.config.seed, chunk, 0))
        topic = self.topics[rng.integers(0, self.config.topics, (n, 2))]
        return _noisy(topic, 0.8, rng)

    def concepts(self, mixed: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
        """K unit concept vectors per row: noisy fixed random rotations of `mixed` [..., D] -> [..., K, D]."""
        return _noisy(np.stack([mixed @ r for r in self.rotations], axis=-2), sigma, rng)

    def stream(self, chunk: int) -> np.random.Generator:
        """The chunk's seeded stream of frames, then concept vectors."""
        return np.random.default_rng((self.config.seed, chunk, 1))

    def frames(self, events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Encoded frames [n, F, D] (the first event in the first half, the second in the second), rounded through
        float16 as the table stores them."""
        frames = self.config.frames
        half = np.repeat(np.array([0, 1]), [frames // 2, frames - frames // 2])
        return (FRAME_NORM * _noisy(events[:, half], 0.5, rng)).astype(np.float16).astype(np.float32)

    def videos(self, chunk: int, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoded frames [n, F, D] and concepts [n, K, D], rounded through float16 as the table stores them."""
        rng = self.stream(chunk)
        encoded = self.frames(events, rng)
        local = self.concepts(events.sum(1), 0.5, rng)
        return encoded, local.astype(np.float16).astype(np.float32)

    def query(self, events: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A text about one event of a video (and a little of the other): sentence [D] and concepts [K, D]."""
        event = events[rng.integers(0, 2)]
        sentence = TEXT_NORM * _noisy(event, 0.5, rng)
        return sentence, self.concepts(event + 0.5 * events.sum(0), 0.6, rng)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _noisy(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """unit(x + noise) with |noise| about sigma * |x| (isotropic Gaussian)."""
    scale = sigma * np.linalg.norm(x, axis=-1, keepdims=True) / math.sqrt(x.shape[-1])
    return _unit(x + scale * rng.standard_normal(x.shape, dtype=np.float32))


class GallerySource(RawSource, Protocol):
    """What `build` needs from a gallery generator: the head that scores it, queries and encoded videos; and, for the
    mean-pool baseline (`benchmarks.mean_pool`), the same videos and queries before the head (`RawSource`)."""

    name: str

    def head(self) -> GLSCL:
        """The GLSCL head (in eval mode) whose checkpoint the gallery is indexed under and scored with."""
        ...

    def queries(self, size: int) -> tuple[TextEncoding, np.ndarray, np.ndarray]:
        """Encoded queries about videos of a `size`-video gallery, their target video ids and kinds (str)."""
        ...

    def videos(self, size: int, chunk: int, low: int, high: int) -> VideoEncoding:
        """Encoded videos `low`..`high` (chunk `chunk` of `size`), deterministic for a seed, with frames and concepts
        rounded through float16 as the table stores them (the exact reference is computed on these values)."""
        ...


class FriendlySource:
    """The friendly gallery: `Generator`'s two half-video events, scored by a randomly initialised head."""

    name = "friendly"

    def __init__(self, config: SearchBenchConfig) -> None:
        self.config = config
        self.generator = Generator(config)

    def head(self) -> GLSCL:
        """A paper-size head with this config's widths, randomly initialised from the seed."""
        config = self.config
        torch.manual_seed(config.seed)
        return GLSCL(GLSCLConfig(embed_dim=config.dim, num_queries=config.num_queries, max_frames=config.frames)).eval()

    def queries(self, size: int) -> tuple[TextEncoding, np.ndarray, np.ndarray]:
        """One sentence query (about one event) per random target video."""
        config, generator = self.config, self.generator
        rng = np.random.default_rng((config.seed, size, 2))
        targets = np.sort(rng.choice(size, config.queries, replace=False))
        sentences, locals_ = [], []
        for target in targets:
            chunk, offset = divmod(int(target), config.chunk)
            events = generator.events(chunk, min(config.chunk, size - chunk * config.chunk))[offset]
            sentence, local = generator.query(events, rng)
            sentences.append(sentence)
            locals_.append(local)
        text = TextEncoding(torch.from_numpy(np.stack(sentences)), torch.from_numpy(np.stack(locals_)))
        return text, targets, np.full(len(targets), "sentence")

    def videos(self, size: int, chunk: int, low: int, high: int) -> VideoEncoding:
        """The chunk's frames (every one valid) and concepts."""
        frames, local = self.generator.videos(chunk, self.generator.events(chunk, high - low))
        mask = torch.ones(frames.shape[:2], dtype=torch.bool)
        return VideoEncoding(torch.from_numpy(frames), mask, torch.from_numpy(local))

    def pooled(self, size: int, chunk: int, low: int, high: int) -> np.ndarray:
        """The chunk's frames mean-pooled. This gallery draws its frames as the head's encodings, with no raw features
        before them, so the baseline pools the very frames the head scores."""
        generator = self.generator
        frames = generator.frames(generator.events(chunk, high - low), generator.stream(chunk))
        return mean_pool.mean_pool(frames, np.ones(frames.shape[:2], dtype=bool))

    def raw_sentences(self, size: int) -> np.ndarray:
        """The queries' sentence vectors (the head passes them through as they are)."""
        return self.queries(size)[0].sentence.numpy()


class StoredSource:
    """The galleries under another root read back (head, queries, stored encodings), to index the same videos
    another way (another segment kind or count) without generating and encoding them again."""

    def __init__(self, root: str, name: str) -> None:
        self.root, self.name = Path(root), name
        model, _, _ = load_checkpoint(next(self.root.glob("n*/checkpoint")))
        self.model = model.eval()

    def _built(self, size: int) -> dict:
        return json.loads((self.root / f"n{size}" / "build.json").read_text())

    def head(self) -> GLSCL:
        """The head the stored galleries were scored with (every size has the same one)."""
        return self.model

    def queries(self, size: int) -> tuple[TextEncoding, np.ndarray, np.ndarray]:
        """The stored gallery's queries, targets and kinds."""
        with np.load(self.root / f"n{size}" / "reference.npz") as data:
            text = TextEncoding(torch.from_numpy(data["sentence"]), torch.from_numpy(data["local"]))
            return text, data["targets"], data["kinds"]

    def videos(self, size: int, chunk: int, low: int, high: int) -> VideoEncoding:
        """Rows `low`..`high` of the stored table (written in id order, checked), unpacked."""
        built = self._built(size)
        table = Catalog(StoreConfig(built["store"])).open_table(built["table"])
        rows = table.search().select(["video_id", "encodings"]).offset(low).limit(high - low).to_arrow()
        if rows["video_id"].to_pylist() != [f"syn{i:09d}" for i in range(low, high)]:
            raise ValueError(f"{built['table']} does not hold videos {low}..{high} in order")
        concepts, dim = self.model.config.num_queries, self.model.config.embed_dim
        slots = packed_slots(table.schema.field("encodings"), concepts, dim)
        return unpack_encodings(rows["encodings"], slots, concepts, dim)

    def pooled(self, size: int, chunk: int, low: int, high: int) -> np.ndarray:
        """Rows `low`..`high` of the stored gallery's mean-pool table."""
        return mean_pool.read_pooled(self.root / f"n{size}", low, high)

    def raw_sentences(self, size: int) -> np.ndarray:
        """The raw sentence vectors the stored gallery's mean-pool baseline was built with."""
        return mean_pool.read_sentences(self.root / f"n{size}")


def _rows(ids: range, video: VideoEncoding, segments: torch.Tensor, encodings: str = "float16") -> pa.Table:
    """Unprojected rows (segment vectors [N, S, W] in the `SEARCH_VECTOR` column, encodings packed in the form
    `encodings`), built by the product's own `video_index_table` from synthetic metadata."""
    n, slots = video.mask.shape
    stamp = pa.array([time.time_ns() // 1000] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    meta = pa.table(
        {
            "video_id": pa.array([f"syn{i:09d}" for i in ids]),
            "dataset": pa.array(["synthetic"] * n),
            "split": pa.array(["val" if i % 2 else "test" for i in ids]),
            "source_path": pa.array([""] * n),
            "duration_s": pa.array(np.full(n, float(slots))),
            "ingested_at": stamp,
        }
    )
    timestamps = np.tile(np.arange(slots, dtype=np.float32), (n, 1))
    texts = [f"synthetic video {i}" for i in ids]
    return video_index_table(meta, texts, video, timestamps, segments.numpy(), "search-bench", encodings)


def load_or_build(config: SearchBenchConfig, size: int, source: GallerySource) -> dict:
    """The gallery of `size` videos under `root`, written once (later runs reuse its tables and reference), with
    its indexes brought to `config.ann` (a vector index of another type is rebuilt, and the build timed); with
    `config.baseline`, its mean-pool table too (`benchmarks.mean_pool`, under "baseline")."""
    folder = Path(config.root) / f"n{size}"
    facts, arrays = folder / "build.json", folder / "reference.npz"
    if not (facts.exists() and arrays.exists()):
        built = build(config, size, folder, source)
        reference = {key: built.pop(key) for key in ("sentence", "local", "targets", "kinds", "exact_top10")}
        np.savez(arrays, **reference)
        facts.write_text(json.dumps(built, indent=2))
    built = json.loads(facts.read_text())
    if built.get("encodings", "float16") != config.ann.encodings:
        raise ValueError(
            f"{folder} holds a gallery with {built.get('encodings', 'float16')} encodings: --encodings "
            f"{config.ann.encodings} needs another --root"
        )
    catalog = Catalog(StoreConfig(built["store"]))
    table = catalog.open_table(built["table"])
    start = time.perf_counter()
    update = update_indexes(catalog, table, config.ann, print)
    if update.vector_indexes_built:
        built |= {"index_s": time.perf_counter() - start, "actions": update.actions}
        facts.write_text(json.dumps(built, indent=2))
    built["health"] = asdict(index_health(table))
    with np.load(arrays) as data:
        built["text"] = TextEncoding(torch.from_numpy(data["sentence"]), torch.from_numpy(data["local"]))
        built["exact_top10"] = data["exact_top10"]
        built["targets"] = data["targets"]
        built["kinds"] = data["kinds"]
    if config.baseline:
        built["baseline"] = mean_pool.load_or_build(folder, size, config.chunk, source, config.ann)
    return built


def build(config: SearchBenchConfig, size: int, folder: Path, source: GallerySource) -> dict:
    """Write `source`'s gallery of `size` videos with its checkpoint; return the queries and their exact top-10.

    The table is new and every id is written once, so chunks are appended (`add`) rather than merged on the key
    as the index flow does, which re-reads the growing table's keys at every chunk (slower at 1M videos, see
    benchmarks/RESULTS.md)."""
    model = source.head()
    model_config = model.config
    extra = {"backbone_model_id": MODEL_ID, "sampling_hash": "synthetic", "max_words": 32, "kind": "paragraph"}
    checkpoint = save_checkpoint(folder / "checkpoint", model, model_config, extra)
    dim, concepts, slots = model_config.embed_dim, model_config.num_queries, model_config.max_frames
    width = min(config.vector_dim, (1 + concepts) * dim)
    spec = video_index_spec(
        checkpoint_hash(checkpoint), MODEL_ID, concepts, width, config.ann.segments, slots, config.ann.encodings
    )
    catalog = Catalog(StoreConfig(str(folder / "db")))
    table = catalog.open(spec, dim)
    text, targets, kinds = source.queries(size)
    queries = len(targets)
    best_scores = torch.full((queries, 10), -math.inf)
    best_ids = torch.zeros((queries, 10), dtype=torch.long)
    projection, start = None, time.perf_counter()
    with torch.inference_mode():
        for chunk, low in enumerate(range(0, size, config.chunk)):
            high = min(low + config.chunk, size)
            video = source.videos(size, chunk, low, high)
            scores = model.score(text, video)
            merged = torch.cat([best_scores, scores], 1)
            ids = torch.cat([best_ids, torch.arange(low, high).expand(queries, -1)], 1)
            best_scores, order = merged.topk(10, dim=1)
            best_ids = ids.gather(1, order)
            vectors, present = segment_vectors(video, model_config.local_weight, config.ann)
            if projection is None:
                projection = Projection.fit(vectors[present], width, config.ann)
                save_projection(catalog, spec.name, projection)
            rows = _rows(range(low, high), video, fill_absent_segments(vectors, present), config.ann.encodings)
            table.add(project_rows(rows, projection.basis, spec, dim))
            print(f"  n={size}: {high}/{size} videos written ({time.perf_counter() - start:.0f} s)", flush=True)
    return {
        "checkpoint": str(checkpoint),
        "store": str(folder / "db"),
        "table": spec.name,
        "sentence": text.sentence.numpy(),
        "local": text.local.numpy(),
        "targets": targets,
        "kinds": kinds,
        "exact_top10": best_ids.numpy(),
        "write_s": time.perf_counter() - start,
        "captured_energy": projection.captured_energy,
        "encodings": config.ann.encodings,
    }


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _p50_p95(values: list[float]) -> dict[str, float]:
    return {"p50": _percentile(values, 50), "p95": _percentile(values, 95)}


class TextSide:
    """A query's text side as the searcher runs it: CLIP text tower (random weights: the same work as real ones),
    then the GLSCL text side of a paper-size head, in inference mode."""

    def __init__(self, model_name: str, max_words: int) -> None:
        self.backbone = Backbone(BackboneConfig(model_name=model_name))
        self.model = GLSCL(GLSCLConfig(embed_dim=self.backbone.embed_dim, **HEAD_PRESETS["paper"])).eval()
        self.max_words = max_words

    @torch.inference_mode()
    def __call__(self, text: str, trim: bool = True) -> tuple[float, float]:
        """Milliseconds of the text tower and of the GLSCL text side for `text`, trimmed or over every position."""
        start = time.perf_counter()
        sentence, tokens, mask = self.backbone.text_features(self.backbone.tokenize([text], self.max_words), trim)
        middle = time.perf_counter()
        self.model.encode_text(sentence, tokens, mask, trim)
        return (middle - start) * 1000, (time.perf_counter() - middle) * 1000

    @torch.inference_mode()
    def tower(self, text: str) -> float:
        """Milliseconds of the text tower alone for `text`, trimmed: the mean-pool baseline's whole text side."""
        start = time.perf_counter()
        self.backbone.text_features(self.backbone.tokenize([text], self.max_words), True)
        return (time.perf_counter() - start) * 1000


def text_side_ms(text_side: TextSide, repeats: int = 30) -> dict:
    """p50/p95 milliseconds of the text tower, the GLSCL text side and both, for `QUERY` one at a time, over the
    real length (trimmed) and over all `max_words` positions (full), with 1 torch thread (the searcher's default)
    and with 2, with the products in oneDNN (as the searcher runs them) and, under `_pytorch_linear` keys, in
    PyTorch's own modules (`glscl.onednn.disabled`); the process's thread count is restored afterwards."""
    threads_before = torch.get_num_threads()
    tokens = int(text_side.backbone.tokenize([QUERY], text_side.max_words).argmax()) + 1
    report: dict = {"query": QUERY, "words": len(QUERY.split()), "tokens": tokens, "max_words": text_side.max_words}
    for engine, suffix in ((contextlib.nullcontext, ""), (onednn.disabled, "_pytorch_linear")):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for trim in (False, True):
                with engine():
                    runs = [text_side(QUERY, trim) for _ in range(repeats + 3)][3:]
                report[f"{'trimmed' if trim else 'full'}_{threads}_threads{suffix}"] = {
                    "tower": _p50_p95([tower for tower, _ in runs]),
                    "glscl_text_side": _p50_p95([side for _, side in runs]),
                    "text": _p50_p95([tower + side for tower, side in runs]),
                }
    torch.set_num_threads(threads_before)
    return report


def sweep(config: SearchBenchConfig, built: dict, size: int, text_side: TextSide) -> list[dict]:
    """Recall and latency of the two-stage search for every (candidates, nprobes, refine factor) setting, with the
    text side of each query timed before its search (`QUERY`, trimmed), as `Searcher.search` runs them."""
    text, exact = built["text"], built["exact_top10"]
    store = StoreConfig(built["store"])
    single = [TextEncoding(text.sentence[i : i + 1], text.local[i : i + 1]) for i in range(len(exact))]
    rows, seen = [], set()
    grid = [
        (c, n, r, ef, use_rows)
        for use_rows in ((True, False) if config.compare_columns else (True,))
        for ef in config.efs
        for r in config.refine_factors
        for n in config.nprobes
        for c in config.candidates
    ]
    for candidates, nprobes, refine, ef, use_rows in grid:
        settings = SearchConfig(
            built["checkpoint"],
            store,
            candidates=candidates,
            nprobes=nprobes,
            refine_factor=refine or None,
            ef=ef or None,
            encode_text=False,
            use_segment_rows=use_rows,
        )
        searcher = Searcher(
            replace(
                settings,
                probe_all_below=config.probe_all_below,
                in_memory_below=config.in_memory_below,
                index_cache_gb=config.index_cache_gb,
                prewarm=True,
            )
        )
        probes = "all" if searcher.probes.nprobes == ALL_PARTITIONS else nprobes
        ef_used = searcher.stage_for(None).breadth(candidates, searcher.probes)
        stage = searcher.describe()["candidate_stage"]
        if (candidates, probes, refine, ef_used, stage) in seen:
            continue
        seen.add((candidates, probes, refine, ef_used, stage))
        searcher.search_encoded(single[0], 10)
        latencies, texts, totals, found, stages = [], [], [], [], []
        for encoding in single:
            start = time.perf_counter()
            with torch_threads(config.text_threads):
                text_side(QUERY)
            middle = time.perf_counter()
            result = searcher.search_encoded(encoding, 10)
            end = time.perf_counter()
            texts.append((middle - start) * 1000)
            latencies.append((end - middle) * 1000)
            totals.append((end - start) * 1000)
            stages.append(result.timings_ms)
            found.append([int(hit.video_id[3:]) for hit in result.hits])
        row = {
            "videos": size,
            "candidates": candidates,
            "nprobes": probes,
            "refine_factor": refine,
            "index_type": config.ann.index_type,
            "candidate_stage": stage,
            "ef": ef_used,
            **recall_fields(found, exact, built["targets"], built["kinds"]),
            "p50_ms": _percentile(latencies, 50),
            "p95_ms": _percentile(latencies, 95),
            "text_p50_ms": _percentile(texts, 50),
            "text_p95_ms": _percentile(texts, 95),
            "total_p50_ms": _percentile(totals, 50),
            "total_p95_ms": _percentile(totals, 95),
            "stages_p50_ms": {stage: statistics.median(t[stage] for t in stages) for stage in stages[0]},
            "load_avg_1m": os.getloadavg()[0],
        }
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows


def exact_mode_ms(config: SearchBenchConfig, built: dict) -> float:
    """Median per-query time of the Searcher's exhaustive exact mode (streams every row), over 3 queries."""
    searcher = Searcher(SearchConfig(built["checkpoint"], StoreConfig(built["store"]), encode_text=False))
    text = built["text"]
    times = []
    for i in range(3):
        start = time.perf_counter()
        searcher.search_encoded(TextEncoding(text.sentence[i : i + 1], text.local[i : i + 1]), 10, exact=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def xpool_ms_per_video(config: SearchBenchConfig) -> float:
    """Per-query milliseconds per gallery video of an exhaustive X-Pool-style head (one query, per-video
    projections included, as it must at query time), timed on a slice."""
    generator = Generator(config)
    frames, _ = generator.videos(0, generator.events(0, config.xpool_slice))
    videos = torch.from_numpy(frames)
    mask = torch.ones(videos.shape[:2], dtype=torch.bool)
    head = XPoolHead(dim=config.dim).eval()
    text = torch.randn(1, config.dim)
    with torch.inference_mode():
        head.score(text, videos[:1000], mask[:1000])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            head.score(text, videos, mask, text_block=1, video_block=1024)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times) / config.xpool_slice


def plot_references(axis: Axes, entry: dict, label: str) -> None:
    """The comparisons of one gallery on a recall@10 vs p50 plot: the mean-pool ANN baseline's settings (crosses) and
    exhaustive exact GLSCL (a star at recall 1); reports written before the baseline have no crosses."""
    rows = entry.get("baseline", {}).get("sweep", [])
    if rows:
        axis.plot([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], "x", label=f"{label}, mean-pool ANN")
    if "exact_mode_ms_per_query" in entry:
        axis.plot([entry["exact_mode_ms_per_query"]], [1.0], "*", markersize=10, label=f"{label}, exhaustive exact")


def plot_sweep(report: dict, path: Path) -> Path:
    """Recall@10 against p50 latency for every swept setting, one series per gallery size, beside the mean-pool
    baseline and exhaustive exact GLSCL, as a PNG."""
    figure, axis = new_figure(size=(9, 4.5))
    for entry in report["sizes"]:
        rows = sorted(entry["sweep"], key=lambda r: r["p50_ms"])
        label = f"{entry['videos']:,} videos"
        axis.plot([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], "o", label=f"{label}, two-stage")
        plot_references(axis, entry, label)
    axis.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    axis.axvline(50, color="grey", linestyle="--", linewidth=0.8)
    axis.set(xlabel="p50 latency per query (ms)", ylabel="recall@10 of the exact GLSCL top-10", xscale="log")
    axis.set_title(f"{report['gallery']} galleries, two-stage search (ANN + exact re-rank) vs mean-pool ANN")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(figure, path)


def side_by_side(entry: dict) -> list[dict]:
    """One row per method on one gallery: the mean-pool ANN baseline and the two-stage search at each setting, the
    exact mean-pool ranking (no latency: a matmul in memory), exhaustive exact GLSCL (the Searcher's exact mode) and
    the exhaustive X-Pool-style head (its cost only, extrapolated: a random head, so no recall)."""
    columns = ("recall@10", "target@1", "target@10", "p50_ms", "p95_ms", "total_p50_ms", "load_avg_1m")

    def row(method: str, settings: str, values: dict) -> dict:
        return {"method": method, "settings": settings} | {column: values.get(column) for column in columns}

    rows = []
    baseline = entry.get("baseline")
    if baseline:
        for r in baseline["sweep"]:
            probes = f"nprobes {r['nprobes']}" if r["nprobes"] is not None else "no index: every vector"
            settings = f"{r['index_type']}, {probes}" + (f", ef {r['ef']}" if r["ef"] else "")
            rows.append(row("mean-pool ANN", settings, r))
        rows.append(row("mean-pool exact", "every video, in memory", baseline["exact"]))
    for r in entry["sweep"]:
        settings = f"{r['index_type']} {r['candidate_stage']}, candidates {r['candidates']}, nprobes {r['nprobes']}"
        rows.append(row("GLSCL two-stage", settings + (f", ef {r['ef']}" if r["ef"] else ""), r))
    if "exact_mode_ms_per_query" in entry:
        exact = entry["exact_glscl"] | {"recall@10": 1.0, "p50_ms": entry["exact_mode_ms_per_query"]}
        rows.append(row("GLSCL exhaustive exact", "Searcher exact mode, median of 3 queries", exact))
    xpool = {"p50_ms": entry["xpool_exhaustive_ms_per_query"]}
    rows.append(row("X-Pool-style exhaustive", "time per video on a slice x videos", xpool))
    return rows


def side_by_side_markdown(report: dict) -> str:
    """The side-by-side rows of every gallery in the report as Markdown tables, with the load average they ran at."""

    def cell(value: object) -> str:
        return "" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = []
    for entry in report["sizes"]:
        load = ", ".join(f"{value:.2f}" for value in entry["load_avg"])
        lines += [
            f"{report['gallery']} gallery, {entry['videos']:,} videos (load average 1/5/15 min at the end: {load}):",
            "",
            "| method | settings | recall@10 of exact GLSCL | target@1 | target@10 | p50 ms | p95 ms "
            "| p50 ms with text | load 1 min |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in entry["side_by_side"]:
            lines.append("| " + " | ".join(cell(value) for value in row.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def baseline_entry(config: SearchBenchConfig, built: dict, text_side: TextSide) -> dict:
    """The mean-pool baseline of one gallery for the report: its build facts, the scores of the exact mean-pool
    ranking and its ANN sweep, whose text side is the CLIP tower alone."""
    baseline = built["baseline"]

    def tower_ms() -> float:
        with torch_threads(config.text_threads):
            return text_side.tower(QUERY)

    facts = {key: value for key, value in baseline.items() if key not in ("sentence", "exact_top10")}
    exact = recall_fields(baseline["exact_top10"], built["exact_top10"], built["targets"], built["kinds"])
    return facts | {"exact": exact, "sweep": mean_pool.sweep(config, built, baseline, tower_ms)}


def run_search_bench(config: SearchBenchConfig, source: GallerySource | None = None) -> dict:
    """Build each gallery of `source` (the friendly one by default), sweep the grid, time the baselines; write JSON
    and return it."""
    source = source or FriendlySource(config)
    torch.manual_seed(config.seed)
    xpool_per_video = xpool_ms_per_video(config)
    text_side = TextSide(config.text_model, config.max_words)
    report: dict = {
        "gallery": source.name,
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "config": {k: v for k, v in asdict(config).items() if k != "ann"} | {"ann": asdict(config.ann)},
        "text_side_ms": text_side_ms(text_side),
        "xpool_ms_per_video": xpool_per_video,
        "sizes": [],
    }
    for size in config.sizes:
        print(f"gallery of {size} videos", flush=True)
        built = load_or_build(config, size, source)
        entry = {
            "videos": size,
            "write_s": built["write_s"],
            "index_s": built["index_s"],
            "actions": built["actions"],
            "captured_energy": built["captured_energy"],
            "health": built["health"],
            "sweep": sweep(config, built, size, text_side),
            "exact_glscl": recall_fields(built["exact_top10"], built["exact_top10"], built["targets"], built["kinds"]),
            "xpool_exhaustive_ms_per_query": xpool_per_video * size,
        }
        if config.ann.encodings != "float16":
            entry["stored_exactness"] = stored_exactness(built, config.chunk)
        if config.baseline:
            entry["baseline"] = baseline_entry(config, built, text_side)
        if size <= config.exact_mode_max:
            entry["exact_mode_ms_per_query"] = exact_mode_ms(config, built)
        entry["load_avg"] = list(os.getloadavg())
        entry["side_by_side"] = side_by_side(entry)
        report["sizes"].append(entry)
        Path(config.output).write_text(json.dumps(report, indent=2, default=str))
    plot_sweep(report, Path(config.output).with_suffix(".png"))
    return report


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; defaults come from `SearchBenchConfig`."""
    d = SearchBenchConfig(root="")
    parser = argparse.ArgumentParser(prog="glscl bench search", description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="folder for the galleries (tens of GB at 1M videos; delete them after)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(d.sizes), help=f"gallery sizes in videos (default {d.sizes})"
    )
    parser.add_argument("--queries", type=int, default=d.queries, help=f"queries per gallery (default {d.queries})")
    parser.add_argument("--frames", type=int, default=d.frames, help=f"frames per video (default {d.frames})")
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=list(d.candidates),
        help=f"ANN candidates re-ranked exactly, swept (default {d.candidates})",
    )
    parser.add_argument(
        "--nprobes", type=int, nargs="+", default=list(d.nprobes), help=f"IVF partitions probed (default {d.nprobes})"
    )
    parser.add_argument(
        "--refine-factors",
        type=int,
        nargs="+",
        default=list(d.refine_factors),
        help="LanceDB refine factors swept; 0: no refine step (default 0)",
    )
    parser.add_argument(
        "--efs",
        type=int,
        nargs="+",
        default=list(d.efs),
        help="HNSW candidate lists swept; 0: twice the candidates (default 0)",
    )
    parser.add_argument(
        "--text-threads",
        type=int,
        default=d.text_threads,
        help="torch threads for each query's text side in the sweep (default: the searcher's, 1)",
    )
    parser.add_argument(
        "--in-memory-below",
        type=int,
        default=d.in_memory_below,
        help=f"galleries of at most this many videos find candidates in memory; 0: always through the vector index "
        f"(default {d.in_memory_below})",
    )
    parser.add_argument(
        "--index-cache-gb",
        type=float,
        default=d.index_cache_gb,
        help=f"searcher's LanceDB index cache (default {d.index_cache_gb})",
    )
    parser.add_argument(
        "--vector-dim",
        type=int,
        default=d.vector_dim,
        help=f"ANN vector width after projection (default {d.vector_dim})",
    )
    add_ann_options(parser, d.ann, VECTOR_INDEX_TYPES[:-1])
    parser.add_argument(
        "--encodings",
        choices=ENCODINGS_FORMS,
        default=d.ann.encodings,
        help="form of the packed encodings the galleries store for the re-rank; other than float16, each gallery's "
        f"report adds how its exact top-10 from them matches the float one's (default {d.ann.encodings})",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=d.baseline,
        help="build and query the mean-pool ANN baseline beside the two-stage search (default on)",
    )
    parser.add_argument(
        "--compare-columns",
        action="store_true",
        help="sweep every setting a second time on the segment columns' indexes instead of the segment rows",
    )
    parser.add_argument(
        "--xpool-slice",
        type=int,
        default=d.xpool_slice,
        help=f"videos the X-Pool-style baseline is timed on (default {d.xpool_slice})",
    )
    parser.add_argument("--build-only", action="store_true", help="write the galleries and stop")
    parser.add_argument("--text-only", action="store_true", help="time the text side only and print it")
    parser.add_argument(
        "--max-words",
        type=int,
        default=d.max_words,
        help=f"query token positions (default {d.max_words}, the ingest default)",
    )
    parser.add_argument(
        "--output", default=d.output, help=f"report JSON; a PNG is written beside it (default {d.output})"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.text_only:
        print(json.dumps(text_side_ms(TextSide(SearchBenchConfig.text_model, args.max_words)), indent=2))
        return
    if not args.root:
        parser.error("--root is required unless --text-only")
    config = config_from_args(args)
    if args.build_only:
        source = FriendlySource(config)
        for size in config.sizes:
            load_or_build(config, size, source)
        return
    report = run_search_bench(config)
    print(json.dumps({k: v for k, v in report.items() if k != "sizes"}, indent=2))
    print(side_by_side_markdown(report))


def config_from_args(args: argparse.Namespace) -> SearchBenchConfig:
    """The benchmark config `build_parser`'s options ask for."""
    return SearchBenchConfig(
        root=args.root,
        sizes=tuple(args.sizes),
        queries=args.queries,
        frames=args.frames,
        candidates=tuple(args.candidates),
        nprobes=tuple(args.nprobes),
        refine_factors=tuple(args.refine_factors),
        efs=tuple(args.efs),
        compare_columns=args.compare_columns,
        in_memory_below=args.in_memory_below,
        text_threads=args.text_threads,
        index_cache_gb=args.index_cache_gb,
        output=args.output,
        max_words=args.max_words,
        xpool_slice=args.xpool_slice,
        vector_dim=args.vector_dim,
        baseline=args.baseline,
        ann=replace(ann_options(args, SearchBenchConfig(root="").ann), encodings=args.encodings),
    )


if __name__ == "__main__":
    main()
