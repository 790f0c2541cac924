"""Does a hit's time span point at the moment the query describes? For every sentence caption of a split that
carries its event's times, search the index with the sentence and, when the described video is among the hits,
compare its `span_s` with the event: how often they overlap, how often the span's middle lies in the event, and
their mean IoU, against chance (a span of the same frames placed at random in the same video, averaged over every
placement). Only events shorter than their video count: one that covers the whole video overlaps any span.

With `--hard`, the same scores on a hard synthetic gallery (`benchmarks.hard_gallery`), whose frames carry their
events by construction: for sentence queries about one event of a target video, the target's span both ways the
searcher has taken it, from the query's sentence against the raw frames (`workers.search.spans`, now) and from the
trained head's pooling weights over its encoded frames (`glscl.similarity.pooling_weights`, before and still the
fallback without a `frames` table); over every target, and over the targets among the query's exact top-k.

Usage: python -m benchmarks.span_overlap --db DB --checkpoint CKPT [--split val_1 --k 10 --out result.json]
(the demo's database and checkpoint: `glscl demo` prints both)
       python -m benchmarks.span_overlap --hard [--videos 2000 --queries 200 --k 10 --head-dir DIR --out result.json]
(--head-dir: where the head is trained, or reused from, e.g. a `benchmarks.hard_gallery` root's head-tiny)
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.entry import measure_and_report
from benchmarks.hard_gallery import GALLERY_SPLIT, HardConfig, HardSource, Texts, encode_videos, train_head
from benchmarks.search_bench import SearchBenchConfig
from glscl.model import GLSCL
from glscl.similarity import pooling_weights
from schemas.catalog import Catalog, sql_string
from schemas.store import StoreConfig
from schemas.tables import CAPTION_SENTENCE, CAPTIONS, VIDEOS
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher
from workers.search.spans import frame_match_weights, span

NAMES = ("overlaps", "middle_inside", "iou")


@dataclass(frozen=True)
class SpanCheck:
    """One hit of the described video: its span and the described event, in seconds, and the video's length."""

    span: tuple[float, float]
    event: tuple[float, float]
    duration: float


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two intervals share."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two intervals (a zero-length span inside an event counts as 0)."""
    union = max(a[1], b[1]) - min(a[0], b[0])
    return overlap(a, b) / union if union > 0 else 0.0


def scores(check: SpanCheck) -> dict[str, float]:
    """Overlap (0 or 1), middle in the event (0 or 1) and IoU of one span."""
    middle = (check.span[0] + check.span[1]) / 2
    return {
        "overlaps": float(overlap(check.span, check.event) > 0),
        "middle_inside": float(check.event[0] <= middle <= check.event[1]),
        "iou": iou(check.span, check.event),
    }


def chance(check: SpanCheck, steps: int = 200) -> dict[str, float]:
    """The same scores for a span of the same length placed uniformly at random in the video (mean over `steps`
    evenly spaced placements)."""
    length = check.span[1] - check.span[0]
    starts = np.linspace(0.0, max(check.duration - length, 0.0), steps)
    rows = [scores(SpanCheck((float(s), float(s) + length), check.event, check.duration)) for s in starts]
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def described_events(catalog: Catalog, split: str) -> list[dict]:
    """Sentence captions of `split` whose event is shorter than its ok video, with the video's duration."""
    captions = catalog.scan(
        CAPTIONS,
        ["video_id", "text", "start_s", "end_s"],
        f"split = {sql_string(split)} AND kind = {sql_string(CAPTION_SENTENCE)} AND start_s IS NOT NULL",
    ).to_pylist()
    durations = {
        row["video_id"]: row["duration_s"]
        for row in catalog.scan(VIDEOS, ["video_id", "duration_s"], "status = 'ok'").to_pylist()
    }
    return [
        {**c, "duration_s": durations[c["video_id"]]}
        for c in captions
        if c["video_id"] in durations and c["end_s"] - c["start_s"] < durations[c["video_id"]] - 1e-6
    ]


def summary(checks: list[SpanCheck]) -> dict:
    """Mean scores of `checks` and of chance for the same span lengths, and the spans' mean length in seconds and as a
    share of their video."""
    if not checks:
        return {"span": {}, "chance": {}, "mean_span_s": 0.0, "mean_share": 0.0}
    measured = [scores(check) for check in checks]
    random = [chance(check) for check in checks]
    return {
        "span": {name: float(np.mean([m[name] for m in measured])) for name in NAMES},
        "chance": {name: float(np.mean([r[name] for r in random])) for name in NAMES},
        "mean_span_s": float(np.mean([check.span[1] - check.span[0] for check in checks])),
        "mean_share": float(np.mean([(check.span[1] - check.span[0]) / check.duration for check in checks])),
    }


def run(args: argparse.Namespace) -> dict:
    """The demo's spans (`run_demo`), or with `--hard` a hard gallery's (`run_hard`)."""
    if args.hard:
        return run_hard(args)
    if not (args.db and args.checkpoint):
        build_parser().error("--db and --checkpoint are required without --hard")
    return run_demo(args)


def run_demo(args: argparse.Namespace) -> dict:
    """Search every described event's sentence; score the spans of the hits that are its video."""
    store = StoreConfig(args.db)
    searcher = Searcher(SearchConfig(checkpoint=args.checkpoint, store=store))
    events = described_events(Catalog(store), args.split)
    checks = []
    for caption in events:
        result = searcher.search(caption["text"], k=args.k, exact=True)
        for hit in result.hits:
            if hit.video_id == caption["video_id"] and hit.span_s is not None:
                checks.append(SpanCheck(hit.span_s, (caption["start_s"], caption["end_s"]), caption["duration_s"]))
    spans = [check.span for check in checks]
    distinct = sorted({(round(a, 2), round(b, 2)) for a, b in spans})
    measured = summary(checks)
    return {
        "queries": len(events),
        "hits_of_the_described_video": len(checks),
        "span": measured["span"],
        "chance": measured["chance"],
        "mean_span_s": measured["mean_span_s"],
        "distinct_spans": len(distinct),
        "most_common_spans": _most_common(spans),
    }


@dataclass(frozen=True)
class HardSpans:
    """One sentence query of a hard gallery: its target video, the target's span from the raw frames (now) and from
    the head's pooling weights (before) as checks against the described event, and whether the target is in the
    query's exact top-k."""

    video: int
    frames: SpanCheck
    pooling: SpanCheck
    in_top_k: bool


def frame_times(duration: np.ndarray, valid: np.ndarray, slots: int) -> np.ndarray:
    """[n, slots] sampling times of a hard gallery's frames, the middle of each of `valid` equal parts of the video
    (the times `HardGenerator.coverage` puts the events on)."""
    return (np.arange(slots) + 0.5) * (duration / valid)[:, None]


def hard_queries(source: HardSource, size: int, queries: int) -> tuple[np.ndarray, np.ndarray, Texts, np.ndarray]:
    """`queries` random targets among the gallery's `size` videos, each with one random event shorter than it:
    targets, the events' (start, end) s [Q, 2], their sentences, and the targets' durations."""
    generator, chunk = source.generator, source.bench.chunk
    rng = generator._rng(GALLERY_SPLIT, size, 3)
    targets = np.sort(rng.choice(size, queries, replace=False))
    kept, events, texts, durations = [], [], [], []
    for index in np.unique(targets // chunk).tolist():
        low = index * chunk
        layout = generator.layout(GALLERY_SPLIT, index, min(chunk, size - low))
        rows, slots = [], []
        for row in (targets[targets // chunk == index] - low).tolist():
            short = layout.present[row] & (layout.end[row] - layout.start[row] < layout.duration[row] - 1e-6)
            if short.any():
                rows.append(row)
                slots.append(int(rng.choice(np.flatnonzero(short))))
        rows_a, slots_a = np.array(rows, np.int64), np.array(slots, np.int64)
        kept.append(rows_a + low)
        events.append(np.stack([layout.start[rows_a, slots_a], layout.end[rows_a, slots_a]], axis=1))
        texts.append(generator.texts(layout, rows_a, slots_a, rng))
        durations.append(layout.duration[rows_a])
    sentences = Texts(*(np.concatenate(field) for field in zip(*texts, strict=True)))
    return np.concatenate(kept), np.concatenate(events), sentences, np.concatenate(durations)


@torch.inference_mode()
def hard_spans(source: HardSource, size: int, queries: int, k: int) -> list[HardSpans]:
    """Every query's target span both ways, from one pass over the gallery's raw frames: each batch encoded by the
    head (as the index stores it) and scored against every query, the targets' raw and encoded frames kept."""
    model: GLSCL = source.head()
    targets, events, texts, durations = hard_queries(source, size, queries)
    text = model.encode_text(*(torch.from_numpy(t) for t in texts))
    chunk, slots = source.bench.chunk, source.hard.frames
    scores, raw, encoded = [], {}, {}
    for index, low in enumerate(range(0, size, chunk)):
        first = low
        for frames, mask in source._raw_frames(index, low, min(low + chunk, size)):
            video = encode_videos(model, frames, mask, source.hard.encode_batch)
            scores.append(model.score(text, video).numpy())
            for target in targets[(targets >= first) & (targets < first + len(mask))].tolist():
                raw[target] = frames[target - first], mask[target - first]
                encoded[target] = video.frames[target - first]
            first += len(mask)
    top = np.argsort(-np.concatenate(scores, axis=1), axis=1, kind="stable")[:, :k]
    frames = np.stack([raw[t][0] for t in targets.tolist()])
    mask = np.stack([raw[t][1] for t in targets.tolist()])
    times = frame_times(durations, mask.sum(1), slots)
    before = pooling_weights(
        text.sentence,
        torch.stack([encoded[t] for t in targets.tolist()]),
        torch.from_numpy(mask),
        model.config.global_temperature,
    ).numpy()
    result = []
    for q, (target, event, duration) in enumerate(
        zip(targets.tolist(), events.tolist(), durations.tolist(), strict=True)
    ):
        now = frame_match_weights(texts.sentence[q], frames[q : q + 1], mask[q : q + 1])[0]
        result.append(
            HardSpans(
                video=target,
                frames=SpanCheck(span(now, times[q], mask[q], duration), tuple(event), duration),
                pooling=SpanCheck(span(before[q], times[q], mask[q], duration), tuple(event), duration),
                in_top_k=target in top[q].tolist(),
            )
        )
    return result


HARD_ROWS = {"pooling": "pooling weights (before)", "frames": "raw CLIP frames (now)"}


def run_hard(args: argparse.Namespace) -> dict:
    """Train (or load) the hard gallery's head, take every query's target span both ways, score them."""
    bench = SearchBenchConfig(root="", frames=HardConfig().frames, chunk=10_000, queries=args.queries)
    hard = HardConfig()
    folder = contextlib.nullcontext(args.head_dir) if args.head_dir else tempfile.TemporaryDirectory(prefix="head-")
    with folder as head_dir:
        model, facts = train_head(bench, hard, Path(head_dir))
    checks = hard_spans(HardSource(bench, hard, model), args.videos, args.queries, args.k)
    events = [c.frames for c in checks]
    return {
        "gallery": "hard",
        "videos": args.videos,
        "queries": len(checks),
        "k": args.k,
        "targets_in_top_k": sum(c.in_top_k for c in checks),
        "mean_event_share": float(np.mean([(c.event[1] - c.event[0]) / c.duration for c in events])),
        "mean_duration_s": float(np.mean([c.duration for c in events])),
        "head": {key: facts[key] for key in ("head", "train_videos", "steps", "train_s", "trained")},
        "rows": hard_rows(checks, args.k),
    }


def hard_rows(checks: list[HardSpans], k: int) -> list[dict]:
    """Each path's summary (before, now) over every target and over the targets among the exact top-k."""
    subsets = {"every target": checks, f"targets in the exact top-{k}": [c for c in checks if c.in_top_k]}
    rows = []
    for path, label in HARD_ROWS.items():
        for scored, subset in subsets.items():
            chosen = [getattr(check, path) for check in subset]
            rows.append({"span_from": label, "scored": scored, "spans": len(chosen)} | summary(chosen))
    return rows


def _most_common(spans: list[tuple[float, float]], top: int = 3) -> list[list]:
    counts: dict[tuple[float, float], int] = {}
    for a, b in spans:
        key = (round(a, 2), round(b, 2))
        counts[key] = counts.get(key, 0) + 1
    return [[list(key), n] for key, n in sorted(counts.items(), key=lambda item: -item[1])[:top]]


def to_markdown(result: dict) -> str:
    """The span's scores beside chance, as a Markdown table (the hard gallery's: `hard_markdown`)."""
    if result.get("gallery") == "hard":
        return hard_markdown(result)
    lines = [
        f"{result['queries']} sentence queries whose event is part of its video; "
        f"{result['hits_of_the_described_video']} hits of the described video; mean span "
        f"{result['mean_span_s']:.2f} s, {result['distinct_spans']} distinct spans, most common "
        f"{result['most_common_spans']}",
        "",
        "| | span overlaps the event | span's middle in the event | mean IoU |",
        "|---|---:|---:|---:|",
    ]
    for name in ("span", "chance"):
        row = result[name]
        if row:
            lines.append(f"| {name} | {row['overlaps']:.2f} | {row['middle_inside']:.2f} | {row['iou']:.2f} |")
    return "\n".join(lines)


def hard_markdown(result: dict) -> str:
    """The hard gallery's rows, each score beside its chance, in the form of RESULTS.md's demo table."""
    pooling = result["head"]["trained"]["pooling"]
    lines = [
        f"{result['queries']} sentence queries about one event of a target among {result['videos']:,} hard videos "
        f"(mean {result['mean_duration_s']:.0f} s; the event {100 * result['mean_event_share']:.0f}% of it on "
        f"average); {result['targets_in_top_k']} targets in their query's exact top-{result['k']}; the head's pooling "
        f"puts {pooling['event_weight']:.2f} of its weight on the event's frames (validation)",
        "",
        "| span from | scored | spans | overlaps the event | its middle in the event | mean IoU | mean length |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        span_, random = row["span"], row["chance"]
        cells = [f"{span_[n]:.2f} (chance {random[n]:.2f})" if span_ else "-" for n in NAMES]
        length = f"{row['mean_span_s']:.1f} s ({100 * row['mean_share']:.0f}% of the video)"
        lines.append(f"| {row['span_from']} | {row['scored']} | {row['spans']} | {' | '.join(cells)} | {length} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="glscl bench span", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="the database `glscl index` wrote (required without --hard)")
    parser.add_argument("--checkpoint", help="the indexed checkpoint (required without --hard)")
    parser.add_argument("--split", default="val_1", help="split whose sentence captions are the queries")
    parser.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    parser.add_argument("--out", default=None, help="JSON file to write the result to")
    parser.add_argument("--hard", action="store_true", help="measure on a hard synthetic gallery instead")
    parser.add_argument("--videos", type=int, default=2000, help="--hard: gallery size (default 2000)")
    parser.add_argument("--queries", type=int, default=200, help="--hard: sentence queries (default 200)")
    parser.add_argument(
        "--head-dir",
        help="--hard: folder of the trained head, reused when it holds one (train.json), else trained there "
        "(default: trained in a temporary folder); a head of the same gallery settings, e.g. a hard_gallery root's "
        "head-tiny",
    )
    return parser


def main(argv: list[str] | None = None) -> str:
    """Command-line entry: the scores as Markdown (and JSON with --out)."""
    return measure_and_report(build_parser(), run, to_markdown, argv)


if __name__ == "__main__":
    print(main())
