"""Which candidate stages a searcher holds for a video index, in the order it tries them: a query takes the first
that can answer it (one that takes filters, when it has one). Adding a stage is one file beside this one and one
line here."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lancedb

from schemas.catalog import Catalog
from workers.index.segment_rows import current_segment_rows
from workers.search.candidates.base import CandidateStage
from workers.search.candidates.in_memory import InMemory
from workers.search.candidates.segment_columns import SegmentColumns
from workers.search.candidates.segment_rows import SegmentRows
from workers.search.config import SearchConfig


def candidate_stages(
    catalog: Catalog, table: lancedb.table.Table, columns: list[str], config: SearchConfig, pool: ThreadPoolExecutor
) -> list[CandidateStage]:
    """A small gallery's segment vectors in memory; else the segment rows' one index when the table has a complete
    generation of them (and the config wants it); the segment columns always, last (they take filters)."""
    stages: list[CandidateStage] = []
    if table.count_rows() <= config.in_memory_below:
        stages.append(InMemory.load(table, columns))
    elif config.use_segment_rows and (companion := current_segment_rows(catalog, table.name)) is not None:
        stages.append(SegmentRows.load(companion, table, len(columns)))
    stages.append(SegmentColumns(table, columns, pool))
    return stages


def stages_outdated(
    catalog: Catalog, table: lancedb.table.Table, config: SearchConfig, stages: list[CandidateStage], rows_built: bool
) -> bool:
    """Whether the stages would be chosen differently, or read other rows, though the video table has not changed: a
    newer complete generation of segment rows than the one served (or a first one) appeared, or videos were appended
    to the one served. Looked for only where the index records it is built with segment rows (`rows_built`): a
    generation completes, and an index run appends to it, after the video table's last change."""
    in_memory = any(isinstance(stage, InMemory) for stage in stages)
    if not (rows_built and config.use_segment_rows) or in_memory:
        return False
    companion = current_segment_rows(catalog, table.name)
    serving = next(
        ((stage.table.name, stage.table.version) for stage in stages if isinstance(stage, SegmentRows)), None
    )
    return companion is not None and (companion.name, companion.version) != serving
