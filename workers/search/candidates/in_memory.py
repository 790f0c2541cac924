"""The candidate stage of a small gallery, in memory: every segment vector of every video held as one float32
matrix, so an unfiltered query scores all of them with one matrix product instead of one LanceDB search per
segment column. It ranks videos by their best segment exactly as the ANN stage does, with no partition to miss,
and on a few thousand videos it costs a fraction of LanceDB's fixed cost per search (benchmarks/RESULTS.md)."""

from __future__ import annotations

import lancedb
import numpy as np
import torch

from schemas.catalog import ROW_ID
from workers.index.ann_vectors import stacked_segments
from workers.search.candidates.base import Candidates, CandidateStage, ProbeSettings


class InMemory(CandidateStage):
    """Row ids [N] and segment vectors [N, S, d] of one version of a video index table."""

    name = "in-memory scan"

    def __init__(self, row_ids: np.ndarray, vectors: torch.Tensor) -> None:
        self.row_ids = row_ids
        self.vectors = vectors

    @classmethod
    def load(cls, table: lancedb.table.Table, columns: list[str]) -> InMemory:
        """Read every row's segment vector columns (and row id) from `table` at its current version."""
        rows = table.search().select(columns).with_row_id(True).to_arrow()
        vectors = torch.from_numpy(stacked_segments(rows, columns).astype(np.float32, copy=False))
        return cls(rows[ROW_ID].to_numpy(), vectors)

    @property
    def nbytes(self) -> int:
        """Memory the vectors hold."""
        return self.vectors.numel() * self.vectors.element_size()

    @torch.inference_mode()
    def nearest(self, query: np.ndarray, limit: int, where: str | None, probes: ProbeSettings) -> Candidates:
        """The `limit` videos whose best segment has the largest inner product with `query`, best first
        (unfiltered queries only; nothing is probed)."""
        if len(self.row_ids) == 0:
            return Candidates(self.row_ids, np.zeros(0, dtype=np.float32))
        best = (self.vectors @ torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))).amax(1)
        top = torch.topk(best, min(limit, best.shape[0]), sorted=True)
        return Candidates(self.row_ids[top.indices.numpy()], top.values.numpy())
