"""Incremental index upkeep: rows added since a vector index was trained go into a delta index (Lance's
`optimize_indices` with `num_indices_to_merge=0`: new rows assigned to the trained IVF partitions, a small graph
per partition for HNSW), so an index run costs time in proportion to its new rows, not to the gallery. Full-text
and scalar indexes fold new rows in. How far a vector index has drifted from its training is the share of the
table's rows outside its trained base (its largest segment); past `AnnConfig.retrain_share` the caller retrains.

Deltas pile up one per run, each searched on its own, so a run past `AnnConfig.max_deltas` merges them with its new
rows into one merged delta. Only plain deltas (made by a run without a merge, their segment ids recorded in the
table's metadata) are ever merged; a merged delta is left as it is. Folding it into the next merge makes that merge
cost in proportion to every row since the retrain (143 s against 51 s at 100k videos), and at 100k videos the merge
that folded the first merged delta in cut the new videos' recall@10 from 0.98 to 0.81 (issue 25). Lance merges the
latest N segments, so a merge takes the plain deltas after the last other segment.

LanceDB's Python API optimises every index of a table at once and always merges; the per-index, delta form is
pylance's, on the same dataset (`Table.to_lance`)."""

from __future__ import annotations

from dataclasses import dataclass

import lance
import lancedb
from lance.indices import IndexSegmentDescription

PLAIN_DELTAS_KEY = "glscl.plain_deltas."
"""Table metadata key prefix, + index name: comma-separated segment ids of that index's plain deltas."""


@dataclass(frozen=True)
class Drift:
    """Rows of a table outside its vector index's trained base, and their share of the table; the plain deltas a
    merge may fold (those after the last other segment) and the merged deltas, left as they are."""

    untrained: int
    rows: int
    deltas: int
    merged: int = 0

    @property
    def share(self) -> float:
        return self.untrained / self.rows if self.rows else 0.0

    def to_merge(self, max_deltas: int) -> int:
        """How many plain deltas the next delta should merge with: all of them when one more would make more than
        `max_deltas`, else none."""
        return self.deltas if self.deltas >= max_deltas else 0

    def describe(self) -> str:
        """In words, for index reports."""
        return (
            f"{self.untrained} of {self.rows} rows ({self.share:.1%}) outside the trained base, {self.deltas} deltas"
            f" and {self.merged} merged deltas"
        )

    def merged_words(self, merge: int) -> str:
        """What a run that merges `merge` plain deltas does to the segments, in words."""
        kept = f"; {self.merged} earlier merged deltas kept as they are" if self.merged else ""
        return f"merged the {merge} deltas since the last merge with the new rows into one{kept}"


def _segments(dataset: lance.LanceDataset, index_name: str) -> list[IndexSegmentDescription]:
    """The named index's segments, in Lance's order (the latest last)."""
    return [segment for index in dataset.describe_indices() if index.name == index_name for segment in index.segments]


def _plain_deltas(dataset: lance.LanceDataset, index_name: str) -> set[str]:
    return set(filter(None, dataset.metadata.get(PLAIN_DELTAS_KEY + index_name, "").split(",")))


def vector_drift(table: lancedb.table.Table, index_name: str) -> Drift:
    """How far the named vector index of `table` (at its latest version) has drifted from its training: the rows
    outside its largest segment (rows added since it was trained, in delta indexes or not indexed at all), and its
    other segments: plain deltas after the last segment that is not one, and the rest (merged deltas)."""
    table.checkout_latest()
    dataset = table.to_lance()
    fragment_rows = {fragment.fragment_id: fragment.count_rows() for fragment in dataset.get_fragments()}
    segments = _segments(dataset, index_name)
    covered = [sum(fragment_rows.get(f, 0) for f in segment.fragment_ids) for segment in segments]
    rows = sum(fragment_rows.values())
    if not segments:
        return Drift(rows, rows, 0)
    base = covered.index(max(covered))
    plain = _plain_deltas(dataset, index_name)
    trailing = 0
    for position in range(len(segments) - 1, base, -1):
        if segments[position].uuid not in plain:
            break
        trailing += 1
    return Drift(rows - covered[base], rows, trailing, len(segments) - 1 - trailing)


def add_delta_indexes(table: lancedb.table.Table, index_names: list[str], merge: int = 0) -> None:
    """Index the rows the named vector indexes do not cover yet as one new delta index each, with the trained
    partitions (no training; the base is never rewritten), merged with the latest `merge` deltas (plain ones:
    `vector_drift`). Records a new plain delta's segment id in the table's metadata (a merged one is not recorded,
    so no later merge folds it again) and forgets the ids of segments gone."""
    if not index_names:
        return
    table.checkout_latest()
    dataset = table.to_lance()
    before = {name: {segment.uuid for segment in _segments(dataset, name)} for name in index_names}
    dataset.optimize.optimize_indices(num_indices_to_merge=merge, index_names=index_names)
    table.checkout_latest()
    dataset = table.to_lance()
    record = {}
    for name in index_names:
        present = {segment.uuid for segment in _segments(dataset, name)}
        plain = _plain_deltas(dataset, name) & present
        if not merge:
            plain |= present - before[name]
        record[PLAIN_DELTAS_KEY + name] = ",".join(sorted(plain))
    dataset.update_metadata(record)
    table.checkout_latest()


def fold_into_indexes(table: lancedb.table.Table, index_names: list[str]) -> None:
    """Fold the rows the named (full-text and scalar) indexes do not cover yet into them."""
    if index_names:
        table.checkout_latest()
        table.to_lance().optimize.optimize_indices(index_names=index_names)
        table.checkout_latest()
