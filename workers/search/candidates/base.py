"""The contract every candidate stage keeps, and the probe settings all of them read from one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

ALL_PARTITIONS = 1 << 20  # LanceDB clamps nprobes to the index's partition count


@dataclass(frozen=True)
class ProbeSettings:
    """How deep an ANN search looks: IVF partitions probed, the HNSW candidate list (`ef`; None: a rule of the rows
    asked) and the exact refine of IVF_PQ/SQ distances (None: off)."""

    nprobes: int
    ef: int | None = None
    refine_factor: int | None = None

    def ef_for(self, rows: int, widen: int) -> int:
        """The HNSW breadth for a search asking `rows` rows: the set ef, else `widen` x rows, never below rows."""
        return max(rows, self.ef or widen * rows)


@dataclass(frozen=True)
class Candidates:
    """Row ids of a query's best videos, best first, and each one's proxy score: the inner product of its best
    segment vector with the query vector (exact for a scan, the index's estimate otherwise). Scores of tables
    projected on one basis (the gallery shards of one index) compare, so shards' candidates merge by them."""

    row_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.row_ids)


class CandidateStage(ABC):
    """Row ids of the video index's best videos for a query vector, best first."""

    takes_filters = False  # whether it can answer a query with a metadata filter

    @property
    @abstractmethod
    def name(self) -> str:
        """What the stage is called in /health and reports."""

    @abstractmethod
    def nearest(self, query: np.ndarray, limit: int, where: str | None, probes: ProbeSettings) -> Candidates:
        """The `limit` videos nearest `query` (rows of the video index table), best first."""

    def breadth(self, limit: int, probes: ProbeSettings) -> int | None:
        """The HNSW breadth a search for `limit` videos uses (None: no graph is searched)."""
        return None

    def prewarm(self) -> None:  # noqa: B027 (optional: most stages have nothing to load ahead)
        """Load what the stage reads into memory or LanceDB's index cache ahead of the first query."""


def first_distinct(ids: np.ndarray, distances: np.ndarray, limit: int) -> Candidates:
    """Hits (several per video, in any order) folded to the `limit` videos with the nearest best hit, best first;
    LanceDB's dot distance is 1 - the inner product, which the scores give back."""
    order = np.argsort(distances, kind="stable")
    ids, distances = ids[order], distances[order]
    _, first = np.unique(ids, return_index=True)
    keep = np.sort(first)[:limit]
    return Candidates(ids[keep], 1.0 - distances[keep])
