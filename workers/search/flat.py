"""The candidate stage of a small gallery, in memory: every segment vector of every video held as one float32
matrix, so an unfiltered query scores all of them with one matrix product instead of one LanceDB search per
segment column. It ranks videos by their best segment exactly as the ANN stage does, with no partition to miss,
and on a few thousand videos it costs a fraction of LanceDB's fixed cost per search (benchmarks/RESULTS.md)."""

from __future__ import annotations

from dataclasses import dataclass

import lancedb
import numpy as np
import pyarrow as pa
import torch

_ROW_ID = "_rowid"


@dataclass(frozen=True)
class FlatSegments:
    """Row ids [N] and segment vectors [N, S, d] of one version of a video index table."""

    row_ids: np.ndarray
    vectors: torch.Tensor

    @classmethod
    def load(cls, table: lancedb.table.Table, columns: list[str]) -> FlatSegments:
        """Read every row's segment vector columns (and row id) from `table` at its current version."""
        rows = table.search().select(columns).with_row_id(True).to_arrow()
        vectors = torch.from_numpy(stacked_segments(rows, columns).astype(np.float32, copy=False))
        return cls(rows[_ROW_ID].to_numpy(), vectors)

    @property
    def nbytes(self) -> int:
        """Memory the vectors hold."""
        return self.vectors.numel() * self.vectors.element_size()

    @torch.inference_mode()
    def nearest(self, query: np.ndarray, limit: int) -> np.ndarray:
        """Row ids of the `limit` videos whose best segment has the largest inner product with `query`, best
        first."""
        if len(self.row_ids) == 0:
            return self.row_ids
        best = (self.vectors @ torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))).amax(1)
        order = torch.topk(best, min(limit, best.shape[0]), sorted=True).indices.numpy()
        return self.row_ids[order]


def stacked_segments(rows: pa.Table | pa.RecordBatch, columns: list[str]) -> np.ndarray:
    """The segment vector columns of some video index rows as one [rows, segments, width] array."""
    arrays = [rows[column] for column in columns]
    arrays = [array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array for array in arrays]
    return np.stack([array.flatten().to_numpy().reshape(rows.num_rows, -1) for array in arrays], axis=1)


def first_distinct(ids: np.ndarray, limit: int) -> np.ndarray:
    """The first `limit` distinct ids of `ids`, in the order they first appear (hits best first, several per video,
    folded to videos ranked by their best hit)."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)][:limit]
