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


class CandidateStage(ABC):
    """Row ids of the video index's best videos for a query vector, best first."""

    takes_filters = False  # whether it can answer a query with a metadata filter

    @property
    @abstractmethod
    def name(self) -> str:
        """What the stage is called in /health and reports."""

    @abstractmethod
    def nearest(self, query: np.ndarray, limit: int, where: str | None, probes: ProbeSettings) -> np.ndarray:
        """Row ids of the `limit` videos nearest `query` (rows of the video index table), best first."""

    def breadth(self, limit: int, probes: ProbeSettings) -> int | None:
        """The HNSW breadth a search for `limit` videos uses (None: no graph is searched)."""
        return None

    def prewarm(self) -> None:  # noqa: B027 (optional: most stages have nothing to load ahead)
        """Load what the stage reads into memory or LanceDB's index cache ahead of the first query."""


def first_distinct(ids: np.ndarray, limit: int) -> np.ndarray:
    """The first `limit` distinct ids of `ids`, in the order they first appear (hits best first, several per video,
    folded to videos ranked by their best hit)."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)][:limit]
