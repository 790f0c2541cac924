"""The segment-rows candidate stage: one ANN search over a companion table that holds every (video, segment) vector
of a video index as a row (built by `workers.index.segment_rows`). Its rows carry the video id, not the video
table's row id, because compacting the video table renumbers rows: the stage maps companion rows to video rows in
memory (`RowMap`), joined on the id whenever either table changes. Unfiltered queries only."""

from __future__ import annotations

from dataclasses import dataclass

import lancedb
import numpy as np
import pyarrow as pa

from schemas.catalog import ROW_ID
from schemas.tables import SEGMENT_ROW_VECTOR
from workers.index.indexes import DISTANCE, has_hnsw_index, vector_index_name
from workers.search.candidates.base import Candidates, CandidateStage, ProbeSettings, first_distinct


@dataclass(frozen=True)
class RowMap:
    """Companion row ids (sorted) and the video table row id each belongs to, at one version of both tables."""

    segment_rows: np.ndarray
    video_rows: np.ndarray

    @classmethod
    def load(cls, companion: lancedb.table.Table, videos: lancedb.table.Table) -> RowMap:
        """Join both tables' current rows on the video id (companion rows of videos gone from the video table are
        left out)."""
        segments = companion.search().select(["video_id"]).with_row_id(True).to_arrow()
        video_rows = videos.search().select(["video_id"]).with_row_id(True).to_arrow()
        joined = pa.table({"video_id": segments["video_id"], "segment_row": segments[ROW_ID]}).join(
            pa.table({"video_id": video_rows["video_id"], "video_row": video_rows[ROW_ID]}),
            "video_id",
            join_type="inner",
        )
        order = np.argsort(joined["segment_row"].to_numpy(), kind="stable")
        return cls(joined["segment_row"].to_numpy()[order], joined["video_row"].to_numpy()[order])

    def videos(self, segment_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The video row of each companion row, in order, and which of `segment_rows` the map holds (the others are
        left out)."""
        if len(self.segment_rows) == 0:
            return self.video_rows, np.zeros(len(segment_rows), dtype=bool)
        at = np.minimum(np.searchsorted(self.segment_rows, segment_rows), len(self.segment_rows) - 1)
        held = self.segment_rows[at] == segment_rows
        return self.video_rows[at[held]], held


class SegmentRows(CandidateStage):
    """One generation of a video index's segment rows and its row map."""

    name = "segment rows"

    def __init__(self, table: lancedb.table.Table, rows: RowMap, segments: int) -> None:
        self.table = table
        self.rows = rows
        self.segments = segments
        self.hnsw = has_hnsw_index(table, [SEGMENT_ROW_VECTOR])

    @classmethod
    def load(cls, companion: lancedb.table.Table, videos: lancedb.table.Table, segments: int) -> SegmentRows:
        """The stage over `companion`, its rows mapped to the rows of the video index `videos` as they are now."""
        return cls(companion, RowMap.load(companion, videos), segments)

    def breadth(self, limit: int, probes: ProbeSettings) -> int | None:
        return probes.ef_for(limit * self.segments, widen=1) if self.hnsw else None

    def nearest(self, query: np.ndarray, limit: int, where: str | None, probes: ProbeSettings) -> Candidates:
        """The `limit` videos (video table rows) whose best segment is nearest `query`, best first. Asks for
        `limit` x segments rows, enough for `limit` videos even when every segment of each lands near the query."""
        asked = limit * self.segments
        search = self.table.search(query, vector_column_name=SEGMENT_ROW_VECTOR).distance_type(DISTANCE).limit(asked)
        search = search.nprobes(probes.nprobes)
        if self.hnsw:
            search = search.ef(probes.ef_for(asked, widen=1))
        hits = search.with_row_id(True).select([ROW_ID, "_distance"]).to_arrow()
        videos, held = self.rows.videos(hits[ROW_ID].to_numpy())
        return first_distinct(videos, hits["_distance"].to_numpy()[held], limit)

    def prewarm(self) -> None:
        """Its one vector index into LanceDB's index cache."""
        self.table.prewarm_index(vector_index_name(SEGMENT_ROW_VECTOR))
