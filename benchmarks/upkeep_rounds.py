"""Index upkeep as an hourly schedule runs it: a hard gallery (benchmarks/hard_gallery.py) of `--base` videos is
written and indexed, then `--rounds` rounds each add `--share` x base new videos and run the index flow's upkeep on
them (`update_indexes`: delta indexes while the drift stays within `--retrain-share`, else a retrain), while one
searcher follows the table. Per round: seconds to write the rows and to bring the indexes up to date, what upkeep
did, seconds from the round's first write until the searcher answers from the new version, query p50, and recall@10
of the two-stage search against exact GLSCL over the videos present, separately for exact top-10 members that are
base videos and members added by the rounds. At the end the vector indexes are retrained whole over the same rows
and measured again: the recall a full rebuild gets, and what it costs.

Half the queries describe base videos, half describe videos of the rounds (spread over them), each a sentence about
one event or the paragraph, encoded by the gallery's trained head.

Usage: python -m benchmarks.upkeep_rounds --root DIR [--base 100000 --rounds 10 --share 0.01] [index options]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.entry import add_int_options, measure_and_report
from benchmarks.hard_gallery import GALLERY_SPLIT, KINDS, HardConfig, HardSource, Texts, train_head
from benchmarks.search_bench import MODEL_ID, SearchBenchConfig, _rows
from glscl.checkpoint import checkpoint_hash, save_checkpoint
from glscl.model import TextEncoding
from glscl.search_vectors import fill_absent_segments
from pipelines.cli.options import add_ann_options, ann_options
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import segment_vector_width, video_index_spec
from workers.index.ann_vectors import segment_vectors
from workers.index.config import VECTOR_INDEX_TYPES, AnnConfig
from workers.index.indexes import has_vector_index, retrain_vector_indexes
from workers.index.projection import Projection, save_projection
from workers.index.segment_rows import rebuild_segment_rows
from workers.index.video_index import project_rows, update_indexes
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher

INT_OPTIONS = ("base", "rounds", "queries", "candidates", "nprobes", "chunk", "train_videos", "epochs", "seed")


@dataclass(frozen=True)
class RoundsConfig:
    """The base gallery, the rounds added to it, the hard gallery's head, and the search settings measured."""

    root: str
    base: int = 100_000
    rounds: int = 10
    share: float = 0.01
    queries: int = 100
    candidates: int = 200
    nprobes: int = 16
    chunk: int = 10_000
    head: str = "tiny"
    train_videos: int = 1024
    epochs: int = 2
    seed: int = 0
    ann: AnnConfig = field(default_factory=lambda: AnnConfig(min_rows=4096, sample_rate=64, max_iterations=25))

    @property
    def round_videos(self) -> int:
        return max(1, round(self.base * self.share))

    def chunks(self) -> list[tuple[int, int]]:
        """(first video, videos) of each generated chunk: the base in `chunk`s, then one chunk per round."""
        base = [(low, min(self.chunk, self.base - low)) for low in range(0, self.base, self.chunk)]
        return base + [(self.base + r * self.round_videos, self.round_videos) for r in range(self.rounds)]


class Gallery:
    """The hard gallery's videos chunk by chunk, the queries about some of them, and every query's exact GLSCL score
    against every video (so the exact top-10 over the videos present at any round is known)."""

    def __init__(self, config: RoundsConfig, source: HardSource) -> None:
        self.config, self.source = config, source
        chunks = config.chunks()
        total = chunks[-1][0] + chunks[-1][1]
        rng = np.random.default_rng((config.seed, 7))
        half = config.queries // 2
        targets = np.concatenate(
            [rng.choice(config.base, half, replace=False), rng.choice(np.arange(config.base, total), half, False)]
            if config.rounds
            else [rng.choice(config.base, config.queries, replace=False)]
        )
        self.targets = np.sort(targets)
        self.kinds = rng.permutation(np.resize(np.array(KINDS), len(self.targets)))
        self.text = self._texts(chunks, rng)
        self.scores = np.full((len(self.targets), total), -np.inf, np.float32)

    def _texts(self, chunks: list[tuple[int, int]], rng: np.random.Generator) -> TextEncoding:
        """The queries' texts, drawn from the layouts of their targets' chunks and encoded by the head."""
        generator, parts = self.source.generator, []
        for index, (low, count) in enumerate(chunks):
            picked = np.flatnonzero((self.targets >= low) & (self.targets < low + count))
            if len(picked) == 0:
                continue
            layout = generator.layout(GALLERY_SPLIT, index, count)
            rows = self.targets[picked] - low
            slots = np.array([rng.choice(np.flatnonzero(layout.present[r])) for r in rows.tolist()])
            slots = np.where(self.kinds[picked] == "sentence", slots, -1)
            parts.append(generator.texts(layout, rows, slots, rng))
        texts = Texts(*(np.concatenate(part) for part in zip(*parts, strict=True)))
        with torch.inference_mode():
            encoded = self.source.model.encode_text(*(torch.from_numpy(t) for t in texts))
        return TextEncoding(encoded.sentence.clone(), encoded.local.clone())

    def chunk_rows(self, index: int, ann: AnnConfig):
        """A chunk's video index rows (unprojected) and its segment vectors, recording its exact scores."""
        low, count = self.config.chunks()[index]
        video = self.source.videos(0, index, 0, count)
        with torch.inference_mode():
            self.scores[:, low : low + count] = self.source.model.score(self.text, video).numpy()
        vectors, present = segment_vectors(video, self.source.model.config.local_weight, ann)
        return _rows(range(low, low + count), video, fill_absent_segments(vectors, present)), vectors[present]

    def exact_top10(self, present: int) -> np.ndarray:
        """[queries, 10] ids of each query's exact top-10 among the first `present` videos."""
        return np.argsort(-self.scores[:, :present], axis=1, kind="stable")[:, :10]


def measure(searcher: Searcher, gallery: Gallery, present: int, base: int) -> dict:
    """Recall@10 of the searcher against exact GLSCL over the videos present (all, base members, round members) and
    the search p50 (candidates and re-rank; no text side)."""
    exact = gallery.exact_top10(present)
    found = {"all": [0, 0], "base": [0, 0], "new": [0, 0]}
    seconds = []
    for i in range(len(gallery.targets)):
        query = TextEncoding(gallery.text.sentence[i : i + 1], gallery.text.local[i : i + 1])
        start = time.perf_counter()
        hits = searcher.search_encoded(query, k=10).hits
        seconds.append(time.perf_counter() - start)
        returned = {int(hit.video_id.removeprefix("syn")) for hit in hits}
        for video in exact[i].tolist():
            for part in ("all", "base" if video < base else "new"):
                found[part][0] += video in returned
                found[part][1] += 1
    recall = {part: round(hit / total, 4) if total else None for part, (hit, total) in found.items()}
    return {"recall10": recall, "p50_ms": round(1000 * float(np.median(seconds)), 1)}


def run(config: RoundsConfig) -> dict:
    """Build the base, run the rounds, retrain at the end; the per-round table and the totals."""
    root = Path(config.root)
    bench = SearchBenchConfig(root=config.root, frames=64, queries=config.queries, chunk=config.chunk, ann=config.ann)
    hard = HardConfig(head=config.head, train_videos=config.train_videos, epochs=config.epochs)
    model, _ = train_head(bench, hard, root / f"head-{hard.head}")
    gallery = Gallery(config, HardSource(bench, hard, model))
    head = model.config
    extra = {"backbone_model_id": MODEL_ID, "sampling_hash": "synthetic", "max_words": 32, "kind": "paragraph"}
    checkpoint = save_checkpoint(root / "checkpoint", model, head, extra)
    width = min(config.ann.vector_dim, (1 + head.num_queries) * head.embed_dim)
    spec = video_index_spec(checkpoint_hash(checkpoint), MODEL_ID, head.num_queries, width, config.ann.segments, 64)
    store = StoreConfig(str(root / "db"))
    catalog = Catalog(store)
    table = catalog.open(spec, head.embed_dim)
    if table.count_rows():
        raise ValueError(f"{store.uri} already holds a gallery: give an empty --root")
    base_chunks = -(-config.base // config.chunk)
    start, projection = time.perf_counter(), None
    for chunk in range(base_chunks):
        rows, vectors = gallery.chunk_rows(chunk, config.ann)
        if projection is None:
            projection = Projection.fit(vectors, width, config.ann)
            save_projection(catalog, spec.name, projection)
        table.add(project_rows(rows, projection.basis, spec, head.embed_dim))
        print(f"base: {table.count_rows()}/{config.base} videos written", flush=True)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    actions = update_indexes(catalog, table, config.ann, print).actions
    index_s = time.perf_counter() - start
    report = {"config": asdict(config), "base_write_s": round(write_s, 1), "base_index_s": round(index_s, 1)}
    report["rounds"] = []
    settings = SearchConfig(
        str(checkpoint), store, candidates=config.candidates, nprobes=config.nprobes, encode_text=False
    )
    settings = replace(settings, refresh_s=0.0, probe_all_below=0, in_memory_below=0, prewarm=False)
    settings = replace(settings, use_segment_rows=config.ann.segment_rows)
    searcher = Searcher(settings)
    report["base"] = measure(searcher, gallery, config.base, config.base) | {"actions": actions}
    print(json.dumps(report["base"]), flush=True)
    for r in range(config.rounds):
        start = time.perf_counter()
        rows, _ = gallery.chunk_rows(base_chunks + r, config.ann)
        catalog.merge(spec, project_rows(rows, projection.basis, spec, head.embed_dim), head.embed_dim)
        written = time.perf_counter()
        table = catalog.open_existing(spec)
        actions = update_indexes(catalog, table, config.ann, print).actions
        indexed = time.perf_counter()
        searcher.search_encoded(TextEncoding(gallery.text.sentence[:1], gallery.text.local[:1]), k=10)
        searchable = time.perf_counter()
        present = config.base + (r + 1) * config.round_videos
        measured = measure(searcher, gallery, present, config.base)
        row = {
            "round": r + 1,
            "videos": present,
            "write_s": round(written - start, 2),
            "index_s": round(indexed - written, 2),
            "searchable_s": round(searchable - start, 2),
            "actions": actions,
            **measured,
        }
        report["rounds"].append(row)
        print(json.dumps(row), flush=True)
    report["rebuild"] = rebuild(catalog, spec.name, config.ann) | measure(
        Searcher(settings), gallery, catalog.open_table(spec.name).count_rows(), config.base
    )
    print(json.dumps(report["rebuild"]), flush=True)
    return report


def rebuild(catalog: Catalog, name: str, ann: AnnConfig) -> dict:
    """Retrain the table's vector indexes whole over every row (compacted first), as a run past the retrain share
    does; returns the seconds it took."""
    table = catalog.open_table(name)
    start = time.perf_counter()
    table.optimize()
    actions = []
    if has_vector_index(table):
        actions.append(retrain_vector_indexes(table, ann, segment_vector_width(table.schema)))
    if ann.segment_rows:
        actions.append(rebuild_segment_rows(catalog, table, ann, print))
    return {"rebuild_s": round(time.perf_counter() - start, 1), "actions": actions}


def to_markdown(report: dict) -> str:
    """The round table, with the base before and the full rebuild after."""
    config = report["config"]
    lines = [
        f"## index upkeep: hard gallery of {config['base']} videos, {config['rounds']} rounds of "
        f"+{config['share']:.0%}, {config['candidates']} candidates, nprobes {config['nprobes']}",
        "",
        f"Base: written in {report['base_write_s']} s, indexed in {report['base_index_s']} s, "
        f"recall@10 {report['base']['recall10']['all']}, p50 {report['base']['p50_ms']} ms.",
        "",
        "| round | videos | write s | index s | searchable after s | recall@10 all | base | new | p50 ms | upkeep |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rounds"]:
        recall = row["recall10"]
        lines.append(
            f"| {row['round']} | {row['videos']} | {row['write_s']} | {row['index_s']} | {row['searchable_s']} | "
            f"{recall['all']} | {recall['base']} | {recall['new']} | {row['p50_ms']} | {'; '.join(row['actions'])} |"
        )
    final = report["rebuild"]
    lines += [
        "",
        f"Full rebuild of the same rows: {final['rebuild_s']} s; recall@10 {final['recall10']['all']} (base "
        f"{final['recall10']['base']}, new {final['recall10']['new']}), p50 {final['p50_ms']} ms.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The rounds' options, the head's, and `glscl index`'s ANN options."""
    defaults = RoundsConfig(root="")
    parser = argparse.ArgumentParser(prog="glscl bench upkeep", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder for the head, the gallery and its database")
    add_int_options(parser, defaults, INT_OPTIONS)
    parser.add_argument("--share", type=float, default=defaults.share, help="new videos per round, a share of the base")
    parser.add_argument("--head", default=defaults.head, help=f"head preset trained (default {defaults.head})")
    parser.add_argument("--vector-dim", type=int, default=defaults.ann.vector_dim, help="ANN vector width")
    add_ann_options(parser, defaults.ann, VECTOR_INDEX_TYPES[:-1])
    parser.add_argument("--out", help="also write the report as JSON to this file")
    return parser


def config_from_args(args: argparse.Namespace) -> RoundsConfig:
    defaults = RoundsConfig(root="")
    ann = replace(ann_options(args, defaults.ann), vector_dim=args.vector_dim)
    options = {name: getattr(args, name) for name in INT_OPTIONS}
    return RoundsConfig(args.root, share=args.share, head=args.head, ann=ann, **options)


def main(argv: list[str] | None = None) -> str:
    """Command-line entry: run the rounds, print the table."""
    return measure_and_report(build_parser(), lambda args: run(config_from_args(args)), to_markdown, argv)


if __name__ == "__main__":
    print(main())
