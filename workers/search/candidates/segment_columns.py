"""The candidate stage over the video index's own segment columns: one LanceDB search per segment column (through
its vector index when there is one, else a scan), hits folded to videos by their best segment. The only stage that
takes metadata filters (prefiltered), so every query can fall back on it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lancedb
import numpy as np
import pyarrow as pa

from schemas.catalog import ROW_ID
from workers.index.indexes import DISTANCE, has_hnsw_index, has_vector_index, vector_index_name
from workers.search.candidates.base import Candidates, CandidateStage, ProbeSettings, first_distinct


class SegmentColumns(CandidateStage):
    """The segment columns of one video index table, searched in parallel."""

    takes_filters = True

    def __init__(self, table: lancedb.table.Table, columns: list[str], pool: ThreadPoolExecutor) -> None:
        self.table = table
        self.columns = columns
        self.pool = pool
        self.indexed = has_vector_index(table)
        self.hnsw = self.indexed and has_hnsw_index(table)

    @property
    def name(self) -> str:
        return "vector index" if self.indexed else "scan"

    def breadth(self, limit: int, probes: ProbeSettings) -> int | None:
        return probes.ef_for(limit, widen=2) if self.hnsw else None

    def nearest(self, query: np.ndarray, limit: int, where: str | None, probes: ProbeSettings) -> Candidates:
        """The `limit` videos whose best segment is nearest the query, best first."""
        parts = list(self.pool.map(lambda column: self._hits(query, column, limit, where, probes), self.columns))
        hits = pa.concat_tables(parts)
        return first_distinct(hits[ROW_ID].to_numpy(), hits["_distance"].to_numpy(), limit)

    def _hits(self, vector: np.ndarray, column: str, limit: int, where: str | None, probes: ProbeSettings) -> pa.Table:
        """Row ids and distances of the `limit` nearest rows by one segment column."""
        query = self.table.search(vector, vector_column_name=column).distance_type(DISTANCE).limit(limit)
        if self.indexed:
            query = query.nprobes(probes.nprobes)
            if self.hnsw:
                query = query.ef(probes.ef_for(limit, widen=2))
            if probes.refine_factor:
                query = query.refine_factor(probes.refine_factor)
        if where:
            query = query.where(where, prefilter=True)
        return query.with_row_id(True).select([ROW_ID, "_distance"]).to_arrow()

    def prewarm(self) -> None:
        """Every segment column's vector index into LanceDB's index cache."""
        if self.indexed:
            for column in self.columns:
                self.table.prewarm_index(vector_index_name(column))
