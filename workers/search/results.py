"""What a search returns: ranked hits with their time spans, the mode and where the time went per stage."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VideoFile:
    """Where an indexed video's source file is ("" when it has none) and how long it lasts (None: unknown)."""

    source_path: str
    duration_s: float | None


@dataclass
class SearchHit:
    """One ranked video: its exact GLSCL score, the fused rank score in hybrid mode, and where the text matches
    best in time (`workers.search.spans`)."""

    rank: int
    video_id: str
    score: float
    source_path: str
    dataset: str
    split: str
    duration_s: float | None
    span_s: tuple[float, float] | None
    text: str
    fused: float | None = None


STAGES = ("text", "ann", "fetch", "rerank", "metadata")


class Stopwatch:
    """Milliseconds per search stage (`STAGES`, all present, 0 when a stage did not run) and the total: each lap
    charges the time since the previous lap to a stage."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.ms = dict.fromkeys(STAGES, 0.0)

    def lap(self, stage: str) -> None:
        """Charge the time since the last lap to `stage`."""
        now = time.perf_counter()
        self.ms[stage] += (now - self.last) * 1000
        self.last = now

    def timings(self) -> dict[str, float]:
        """The stages and the total since the stopwatch started."""
        return {**self.ms, "total": (time.perf_counter() - self.start) * 1000}


@dataclass
class SearchResult:
    """Ranked hits plus how they were found and where the time went, in milliseconds: `text` (CLIP text tower and
    GLSCL text side; 0 for an encoded query), `ann` (candidate search, with full-text matching in hybrid mode;
    0 in exact mode), `fetch` (reading the candidates' encodings, or streaming every row in exact mode), `rerank`
    (exact GLSCL scores), `metadata` (the top k's metadata and time spans) and `total`."""

    query: str
    mode: str
    hits: list[SearchHit]
    candidates: int
    timings_ms: dict[str, float]

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)
