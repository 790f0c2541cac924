"""Does a hit's time span point at the moment the query describes? For every sentence caption of a split that
carries its event's times, search the index with the sentence and, when the described video is among the hits,
compare its `span_s` with the event: how often they overlap, how often the span's middle lies in the event, and
their mean IoU, against chance (a span of the same frames placed at random in the same video, averaged over every
placement). Only events shorter than their video count: one that covers the whole video overlaps any span.

Usage: python -m benchmarks.span_overlap --db DB --checkpoint CKPT [--split val_1 --k 10 --out result.json]
(the demo's database and checkpoint: `glscl demo` prints both)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from benchmarks.entry import measure_and_report
from schemas.catalog import Catalog, sql_string
from schemas.store import StoreConfig
from schemas.tables import CAPTION_SENTENCE, CAPTIONS, VIDEOS
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher


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


def run(args: argparse.Namespace) -> dict:
    """Search every described event's sentence; score the spans of the hits that are its video."""
    store = StoreConfig(args.db)
    searcher = Searcher(SearchConfig(checkpoint=args.checkpoint, store=store))
    events = described_events(Catalog(store), args.split)
    checks, spans = [], []
    for caption in events:
        result = searcher.search(caption["text"], k=args.k, exact=True)
        for hit in result.hits:
            if hit.video_id == caption["video_id"] and hit.span_s is not None:
                check = SpanCheck(hit.span_s, (caption["start_s"], caption["end_s"]), caption["duration_s"])
                checks.append(check)
                spans.append(hit.span_s)
    measured = [scores(check) for check in checks]
    random = [chance(check) for check in checks]
    names = ("overlaps", "middle_inside", "iou")
    distinct = sorted({(round(a, 2), round(b, 2)) for a, b in spans})
    return {
        "queries": len(events),
        "hits_of_the_described_video": len(checks),
        "span": {name: float(np.mean([m[name] for m in measured])) for name in names} if checks else {},
        "chance": {name: float(np.mean([r[name] for r in random])) for name in names} if checks else {},
        "mean_span_s": float(np.mean([b - a for a, b in spans])) if spans else 0.0,
        "distinct_spans": len(distinct),
        "most_common_spans": _most_common(spans),
    }


def _most_common(spans: list[tuple[float, float]], top: int = 3) -> list[list]:
    counts: dict[tuple[float, float], int] = {}
    for a, b in spans:
        key = (round(a, 2), round(b, 2))
        counts[key] = counts.get(key, 0) + 1
    return [[list(key), n] for key, n in sorted(counts.items(), key=lambda item: -item[1])[:top]]


def to_markdown(result: dict) -> str:
    """The span's scores beside chance, as a Markdown table."""
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


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="glscl bench span", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the database `glscl index` wrote")
    parser.add_argument("--checkpoint", required=True, help="the indexed checkpoint")
    parser.add_argument("--split", default="val_1", help="split whose sentence captions are the queries")
    parser.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    parser.add_argument("--out", default=None, help="JSON file to write the result to")
    return parser


def main(argv: list[str] | None = None) -> str:
    """Command-line entry: the scores as Markdown (and JSON with --out)."""
    return measure_and_report(build_parser(), run, to_markdown, argv)


if __name__ == "__main__":
    print(main())
