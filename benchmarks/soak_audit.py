"""What a database must hold after any sequence of ingest and index runs, killed or not, once each was re-run to
the end: every video `ok` exactly once in every table or `failed` with its reason and nowhere else, every caption
and every run once, and a video index holding every ok video exactly once (segment rows too), fully covered by its
indexes.
The soak benchmark (benchmarks/soak.py) checks this after its chaos; each finding is a sentence naming the table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import lancedb

from schemas.catalog import Catalog
from schemas.tables import CAPTIONS, FRAMES, RUNS, TEXTS, VIDEO_FAILED, VIDEO_OK, VIDEOS
from workers.index.indexes import unindexed_rows
from workers.index.segment_rows import current_segment_rows


@dataclass
class Expected:
    """The content ids of the videos that should be `ok` and of those that should be `failed`, and the source ids
    whose captions should be stored."""

    ok: set[str]
    failed: set[str]
    sources: set[str]


@dataclass
class Audit:
    """Rows counted per table, and every departure from what was expected (empty: nothing lost or duplicated)."""

    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def once_each(self, table: str, ids: list[str], expected: set[str], what: str = "video") -> None:
        """Record a problem unless `ids` (a table's key column) holds each of `expected` exactly once and nothing
        else."""
        counts = Counter(ids)
        self.rows[table] = len(ids)
        duplicated = sorted(key for key, count in counts.items() if count > 1)
        missing, extra = sorted(expected - counts.keys()), sorted(counts.keys() - expected)
        for words, keys in (("more than once", duplicated), ("missing", missing), ("not expected", extra)):
            if keys:
                self.problems.append(f"{table}: {len(keys)} {what}s {words}, e.g. {keys[:3]}")


def audit_tables(catalog: Catalog, index_table: str, expected: Expected) -> Audit:
    """Check the ingest tables and the video index `index_table` against `expected`."""
    audit = Audit()
    videos = catalog.scan(VIDEOS, ["video_id", "status", "error"]).to_pylist()
    audit.once_each(VIDEOS.name, [v["video_id"] for v in videos], expected.ok | expected.failed)
    statuses = {v["video_id"]: (v["status"], v["error"]) for v in videos}
    wrong = sorted(v for v in expected.ok if v in statuses and statuses[v][0] != VIDEO_OK)
    wrong += sorted(v for v in expected.failed if v in statuses and statuses[v][0] != VIDEO_FAILED)
    if wrong:
        audit.problems.append(f"{VIDEOS.name}: {len(wrong)} videos with the wrong status, e.g. {wrong[:3]}")
    unexplained = sorted(v for v, (status, error) in statuses.items() if status == VIDEO_FAILED and not error)
    if unexplained:
        audit.problems.append(f"{VIDEOS.name}: {len(unexplained)} failed videos without a reason")
    audit.once_each(FRAMES.name, catalog.scan(FRAMES, ["video_id"]).column("video_id").to_pylist(), expected.ok)
    captions = catalog.scan(CAPTIONS, ["caption_id", "source_id"])
    caption_ids = captions.column("caption_id").to_pylist()
    audit.once_each(CAPTIONS.name, caption_ids, set(caption_ids), "caption")
    uncaptioned = sorted(expected.sources - set(captions.column("source_id").to_pylist()))
    if uncaptioned:
        audit.problems.append(f"{CAPTIONS.name}: {len(uncaptioned)} sources without captions, e.g. {uncaptioned[:3]}")
    text_ids = catalog.scan(TEXTS, ["caption_id"]).column("caption_id").to_pylist()
    audit.once_each(TEXTS.name, text_ids, set(caption_ids), "caption")
    run_ids = catalog.scan(RUNS, ["run_id"]).column("run_id").to_pylist()
    audit.once_each(RUNS.name, run_ids, set(run_ids), "run")
    index = catalog.open_table(index_table)
    audit.once_each(index_table, _column(index, "video_id"), expected.ok)
    _check_covered(audit, index)
    segments = current_segment_rows(catalog, index_table)
    if segments is not None:
        rows = segments.to_lance().to_table(columns=["video_id", "segment"]).to_pylist()
        keys = [f"{r['video_id']}/{r['segment']}" for r in rows]
        per_video = Counter(r["video_id"] for r in rows)
        audit.once_each(segments.name, keys, set(keys), "segment row")
        audit.once_each(f"{segments.name} (videos)", list(per_video), expected.ok)
        _check_covered(audit, segments)
    return audit


def _column(table: lancedb.table.Table, name: str) -> list:
    """One column of a table's latest version, read alone."""
    return table.to_lance().to_table(columns=[name]).column(name).to_pylist()


def _check_covered(audit: Audit, table: lancedb.table.Table) -> None:
    """Record a problem for each index of `table` that leaves rows out."""
    for name, rows in unindexed_rows(table).items():
        if rows:
            audit.problems.append(f"{table.name}: index {name} leaves {rows} rows out")
