"""Schemas and the catalogue: round trips, recorded versions, refusals, and merge-on-key commits."""

import dataclasses

import lancedb
import pyarrow as pa
import pytest

from schemas.catalog import Catalog, SchemaVersionError, sql_string
from schemas.rows import frames_table, videos_table
from schemas.store import StoreConfig
from schemas.tables import ALL_TABLES, FRAMES, RUNS, SCHEMA_VERSION_KEY, VIDEOS


def frames_batch(ids, dim=4, slots=3):
    import numpy as np

    n = len(ids)
    return {
        "video_id": np.array(ids, dtype=object),
        "status": np.array(["ok"] * n, dtype=object),
        "features": np.arange(n * slots * dim, dtype=np.float32).reshape(n, slots, dim),
        "frame_mask": np.tile(np.array([True, True, False]), (n, 1)),
        "timestamps": np.tile(np.array([0.5, 1.5, 0.0], dtype=np.float32), (n, 1)),
        "vector": np.ones((n, dim), dtype=np.float32) / 2,
    }


def test_every_table_records_its_schema_version(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    for spec in ALL_TABLES:
        catalog.open(spec, dim=8)
    db = lancedb.connect(str(tmp_path / "db"))
    for spec in ALL_TABLES:
        assert db.open_table(spec.name).schema.metadata[SCHEMA_VERSION_KEY] == str(spec.version).encode()


def test_frames_round_trip_keeps_multivectors_masks_and_times(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    batch = frames_batch(["a", "b"])
    catalog.merge(FRAMES, frames_table(batch, "m", '{"policy":"uniform"}', "h", "run"), dim=4)
    rows = lancedb.connect(str(tmp_path / "db")).open_table("frames").to_arrow().sort_by("video_id").to_pylist()
    assert rows[1]["features"] == batch["features"][1].tolist()
    assert rows[0]["frame_mask"] == [True, True, False]
    assert rows[0]["timestamps"] == [0.5, 1.5, 0.0]
    assert rows[0]["num_frames"] == 2 and rows[0]["vector"] == [0.5] * 4


def test_merge_is_idempotent_on_the_key(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    rows = frames_table(frames_batch(["a", "b"]), "m", "{}", "h", "run")
    assert catalog.merge(FRAMES, rows, dim=4).inserted == 2
    assert catalog.merge(FRAMES, rows, dim=4).inserted == 0
    more = frames_table(frames_batch(["b", "c"]), "m", "{}", "h", "run")
    assert catalog.merge(FRAMES, more, dim=4).inserted == 1
    other_model = frames_table(frames_batch(["a"]), "m2", "{}", "h", "run")
    assert catalog.merge(FRAMES, other_model, dim=4).inserted == 1
    assert catalog.open(FRAMES, 4).count_rows() == 4


def test_failed_videos_keep_reason_and_null_probe_fields(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    base = {"source_id": "s", "source_path": "/p", "dataset": "d", "split": "all", "size_bytes": 0}
    table = videos_table(
        [
            {
                **base,
                "video_id": "bad",
                "status": "failed",
                "error": "empty file (0 bytes)",
                "duration_s": float("nan"),
            },
            {**base, "video_id": "good", "status": "ok", "error": "", "duration_s": 2.0, "fps": 10.0, "width": 4},
        ],
        "run",
    )
    catalog.merge(VIDEOS, table)
    rows = {r["video_id"]: r for r in catalog.open(VIDEOS).to_arrow().to_pylist()}
    assert rows["bad"]["error"] == "empty file (0 bytes)" and rows["bad"]["duration_s"] is None
    assert rows["good"]["error"] is None and rows["good"]["duration_s"] == 2.0


def test_unknown_schema_version_is_refused_with_both_versions(tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    schema = RUNS.schema().with_metadata({SCHEMA_VERSION_KEY: b"99"})
    db.create_table("runs", schema=schema)
    with pytest.raises(SchemaVersionError, match="schema version 99; this glscl supports version 1"):
        Catalog(StoreConfig(str(tmp_path / "db"))).open(RUNS)


def test_embedding_size_mismatch_is_refused(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    catalog.open(FRAMES, dim=64)
    with pytest.raises(SchemaVersionError, match="holds 64-d features but this model gives 512-d"):
        catalog.open(FRAMES, dim=512)


def test_scan_of_an_absent_table_is_empty_and_filters_quote_safely(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    assert catalog.scan(VIDEOS, ["video_id"]).num_rows == 0
    assert sql_string("it's") == "'it''s'"
    catalog.merge(FRAMES, frames_table(frames_batch(["o'brien"]), "m", "{}", "h", "run"), dim=4)
    found = catalog.scan(FRAMES, ["video_id"], f"video_id = {sql_string(chr(111) + chr(39) + 'brien')}")
    assert found.column("video_id").to_pylist() == ["o'brien"]
    assert isinstance(found, pa.Table)


def test_table_names_follow_every_page_of_the_listing(tmp_path, monkeypatch):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    names = [f"table_{i:02d}" for i in range(12)]
    for name in names:
        catalog.db.create_table(name, pa.table({"a": [1]}))
    listing = catalog.db.list_tables
    monkeypatch.setattr(catalog.db, "list_tables", lambda page_token=None: listing(page_token=page_token, limit=5))
    assert catalog.table_names() == names
    assert catalog.exists(dataclasses.replace(VIDEOS, name=names[-1]))
