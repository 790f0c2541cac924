"""Incremental index upkeep: rows added since a vector index was trained go into a delta index (Lance's
`optimize_indices` with `num_indices_to_merge=0`: new rows assigned to the trained IVF partitions, a small graph
per partition for HNSW), so an index run costs time in proportion to its new rows, not to the gallery. Full-text
and scalar indexes fold new rows in. How far a vector index has drifted from its training is the share of the
table's rows outside its trained base (its largest segment); past `AnnConfig.retrain_share` the caller retrains.

LanceDB's Python API optimises every index of a table at once and always merges; the per-index, delta form is
pylance's, on the same dataset (`Table.to_lance`)."""

from __future__ import annotations

from dataclasses import dataclass

import lancedb


@dataclass(frozen=True)
class Drift:
    """Rows of a table outside its vector index's trained base, and their share of the table."""

    untrained: int
    rows: int
    deltas: int

    @property
    def share(self) -> float:
        return self.untrained / self.rows if self.rows else 0.0

    def to_merge(self, max_deltas: int) -> int:
        """How many delta indexes the next one should merge with: all of them when one more would make more than
        `max_deltas`, else none."""
        return self.deltas if self.deltas >= max_deltas else 0

    def describe(self) -> str:
        """In words, for index reports."""
        return f"{self.untrained} of {self.rows} rows ({self.share:.1%}) outside the trained base, {self.deltas} deltas"


def vector_drift(table: lancedb.table.Table, index_name: str) -> Drift:
    """How far the named vector index of `table` (at its latest version) has drifted from its training: the rows
    outside its largest segment (rows added since it was trained, in delta indexes or not indexed at all)."""
    table.checkout_latest()
    dataset = table.to_lance()
    fragment_rows = {fragment.fragment_id: fragment.count_rows() for fragment in dataset.get_fragments()}
    segments = [index for index in dataset.list_indices() if index["name"] == index_name]
    covered = [sum(fragment_rows.get(f, 0) for f in index["fragment_ids"]) for index in segments]
    rows = sum(fragment_rows.values())
    return Drift(rows - max(covered, default=0), rows, max(len(segments) - 1, 0))


def add_delta_indexes(table: lancedb.table.Table, index_names: list[str], merge: int = 0) -> None:
    """Index the rows the named vector indexes do not cover yet as one new delta index each, with the trained
    partitions (no training; the base is never rewritten), merged with the latest `merge` deltas."""
    if index_names:
        table.checkout_latest()
        table.to_lance().optimize.optimize_indices(num_indices_to_merge=merge, index_names=index_names)
        table.checkout_latest()


def fold_into_indexes(table: lancedb.table.Table, index_names: list[str]) -> None:
    """Fold the rows the named (full-text and scalar) indexes do not cover yet into them."""
    if index_names:
        table.checkout_latest()
        table.to_lance().optimize.optimize_indices(index_names=index_names)
        table.checkout_latest()
