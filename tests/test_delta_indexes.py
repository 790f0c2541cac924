"""Delta index upkeep (workers/index/delta.py) on a small LanceDB table: runs past `max_deltas` merge only the plain
deltas since the last merge, never an earlier merged delta, and every row stays indexed exactly once."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import IvfFlat

from workers.index.delta import add_delta_indexes, vector_drift

DIM = 8
INDEX = "vector_idx"


def _rows(start: int, count: int) -> pa.Table:
    vectors = np.random.default_rng(start).standard_normal((count, DIM)).astype(np.float32)
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + count)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
        }
    )


@pytest.fixture
def table(tmp_path) -> lancedb.table.Table:
    """512 rows under a trained two-partition IVF_FLAT index."""
    table = lancedb.connect(tmp_path).create_table("rows", _rows(0, 512))
    table.create_index("vector", config=IvfFlat(num_partitions=2))
    return table


def _segments(table: lancedb.table.Table) -> list[tuple[str, set[int]]]:
    """(segment id, fragment ids) of the vector index, in Lance's order."""
    table.checkout_latest()
    indices = [index for index in table.to_lance().describe_indices() if index.name == INDEX]
    return [(segment.uuid, set(segment.fragment_ids)) for index in indices for segment in index.segments]


def _index_run(table: lancedb.table.Table, start: int, max_deltas: int) -> int:
    """One index run as the index flow makes it: 16 new rows, then a delta index merged as `vector_drift` says."""
    table.add(_rows(start, 16))
    merge = vector_drift(table, INDEX).to_merge(max_deltas)
    add_delta_indexes(table, [INDEX], merge)
    return merge


def test_a_second_merge_leaves_the_first_merged_delta_and_every_row_indexed_once(table):
    merges = [_index_run(table, 512 + 16 * run, max_deltas=2) for run in range(3)]
    assert merges == [0, 0, 2], "the third run merges the two plain deltas"
    base, first_merged = _segments(table)

    merges = [_index_run(table, 560 + 16 * run, max_deltas=2) for run in range(3)]
    assert merges == [0, 0, 2], "no run folds the first merged delta in: the sixth merges the two plain deltas after it"
    segments = _segments(table)
    assert segments[:2] == [base, first_merged], "the base and the first merged delta are left as they are"
    assert len(segments) == 3
    drift = vector_drift(table, INDEX)
    assert (drift.deltas, drift.merged, drift.untrained, drift.rows) == (0, 2, 96, 608)

    fragments = [covered for _, covered in segments]
    assert sum(len(covered) for covered in fragments) == len(set().union(*fragments)), "no fragment in two segments"
    assert set().union(*fragments) == {fragment.fragment_id for fragment in table.to_lance().get_fragments()}
    stats = table.to_lance().stats.index_stats(INDEX)
    sizes = [sum(partition["size"] for partition in segment["partitions"]) for segment in stats["indices"]]
    assert sizes == [512, 48, 48] and stats["num_unindexed_rows"] == 0
    vectors = table.to_arrow()
    for row in (0, 520, 600):
        found = table.search(vectors["vector"][row].values.to_numpy()).nprobes(2).limit(3).to_arrow()
        assert found["id"].to_pylist().count(row) == 1, "found once, as its own nearest row"
