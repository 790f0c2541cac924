"""Table upkeep on a real LanceDB database built from many small merges: compaction, index catch-up, version
pruning, the row check, a writer committing while upkeep runs, and the `glscl maintain` command."""

import json
import threading
import warnings
from collections import Counter
from datetime import timedelta

import lancedb
import pytest
from lancedb.index import BTree

from pipelines.cli import main
from pipelines.configs import MaintainConfig
from schemas.catalog import Catalog
from schemas.rows import captions_table
from schemas.store import StoreConfig
from schemas.tables import CAPTIONS
from workers.upkeep import RowCheckError, TableState, check_rows, maintain_table

ROWS_PER_COMMIT = 5


def caption_rows(commit: int) -> list[dict]:
    """ROWS_PER_COMMIT caption rows whose ids are unique to this commit number."""
    return [
        {
            "caption_id": f"c{commit:04d}-{i}",
            "video_id": f"v{commit:04d}",
            "source_id": f"s{commit:04d}",
            "dataset": "upkeep",
            "split": "train",
            "kind": "sentence",
            "order": i,
            "text": f"caption {i} of commit {commit}",
            "start_s": float(i),
            "end_s": float(i + 1),
        }
        for i in range(ROWS_PER_COMMIT)
    ]


def commit(catalog: Catalog, numbers: range) -> None:
    """One merge per number: the many small commits that ingest shards leave behind."""
    for number in numbers:
        assert catalog.merge(CAPTIONS, captions_table(caption_rows(number), "test")).inserted == ROWS_PER_COMMIT


def caption_ids(db_path) -> list[str]:
    """Every caption id stored, duplicates included."""
    table = lancedb.connect(str(db_path)).open_table(CAPTIONS.name)
    return table.search().select(["caption_id"]).limit(None).to_arrow()["caption_id"].to_pylist()


@pytest.fixture
def fragmented(tmp_path) -> Catalog:
    """A captions table of 8 commits, a key index built then, and 3 more commits the index does not cover."""
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    commit(catalog, range(8))
    catalog.open(CAPTIONS).create_index("caption_id", config=BTree())
    commit(catalog, range(8, 11))
    return catalog


def test_upkeep_compacts_indexes_new_rows_and_keeps_every_row(fragmented, tmp_path):
    ids_before = Counter(caption_ids(tmp_path / "db"))
    done = maintain_table(fragmented, CAPTIONS.name, timedelta(days=7))
    assert done.before.rows == done.after.rows == 11 * ROWS_PER_COMMIT
    assert done.before.fragments == 11 and done.after.fragments < done.before.fragments
    assert done.before.unindexed_rows == {"caption_id_idx": 3 * ROWS_PER_COMMIT}
    assert done.after.unindexed_rows == {"caption_id_idx": 0}
    assert done.after.versions > done.before.versions, "a 7-day window keeps the fresh versions"
    assert done.rows_written_meanwhile == 0
    assert Counter(caption_ids(tmp_path / "db")) == ids_before
    hit = fragmented.scan(CAPTIONS, ["text"], "caption_id = 'c0009-3'")["text"].to_pylist()
    assert hit == ["caption 3 of commit 9"]


def test_zero_retention_removes_every_older_version(fragmented):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lancedb warns that a 0 window breaks concurrent writers
        done = maintain_table(fragmented, CAPTIONS.name, timedelta(0))
    kept = [v["version"] for v in fragmented.db.open_table(CAPTIONS.name).list_versions()]
    assert done.before.versions == 13 and done.after.versions == len(kept) <= 2
    assert min(kept) > done.before.version, "every version that existed before upkeep is gone"
    assert done.after.rows == 11 * ROWS_PER_COMMIT


def test_writer_committing_during_upkeep_loses_no_rows(tmp_path):
    catalog = Catalog(StoreConfig(str(tmp_path / "db")))
    commit(catalog, range(6))
    writer_errors: list[BaseException] = []

    def write() -> None:
        try:
            commit(Catalog(catalog.store), range(100, 130))
        except BaseException as error:
            writer_errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    passes = []
    while writer.is_alive() or len(passes) < 2:
        passes.append(maintain_table(catalog, CAPTIONS.name, timedelta(hours=1)))
    writer.join()
    assert not writer_errors
    ids = caption_ids(tmp_path / "db")
    assert len(ids) == len(set(ids)) == (6 + 30) * ROWS_PER_COMMIT
    assert all(p.rows_written_meanwhile >= 0 for p in passes)
    assert sum(p.rows_written_meanwhile for p in passes) > 0, "no upkeep pass overlapped a commit"
    final = maintain_table(catalog, CAPTIONS.name, timedelta(hours=1))
    assert final.after.fragments == 1 and final.after.rows == len(ids)


def test_row_check_names_lost_and_duplicated_keys():
    state = TableState(version=3, rows=3, fragments=3, small_fragments=3, versions=3, total_bytes=0, unindexed_rows={})
    fewer = TableState(**{**state.__dict__, "version": 4, "rows": 2})
    with pytest.raises(RowCheckError, match=r"lost 1 keys \(e.g. \[\('b',\)\]\) and duplicated 1"):
        check_rows("t", state, state, Counter({("a",): 1, ("b",): 1, ("c",): 1}), Counter({("a",): 1, ("c",): 2}))
    with pytest.raises(RowCheckError, match="3 rows before upkeep, 2 after"):
        check_rows("t", state, fewer, None, None)
    grown = Counter({("a",): 1, ("b",): 1, ("c",): 1, ("d",): 1})
    more = TableState(**{**state.__dict__, "rows": 4})
    assert check_rows("t", state, more, Counter({("a",): 1, ("b",): 1, ("c",): 1}), grown) == 1


def test_negative_retention_is_refused():
    with pytest.raises(ValueError, match="retention window must be 0 or more"):
        MaintainConfig(retain_versions_older_than=timedelta(hours=-1))


@pytest.mark.usefixtures("prefect_server")
def test_cli_maintain_reports_and_records_the_run(fragmented, tmp_path, capsys):
    db = str(tmp_path / "db")
    assert main(["maintain", "--db", db, "--table", CAPTIONS.name, "--retain-hours", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [captions] = report["tables"]
    assert captions["table"] == "captions" and captions["before"]["fragments"] == 11
    assert captions["after"]["fragments"] < 11 and captions["after"]["rows"] == 11 * ROWS_PER_COMMIT
    assert report["retain_hours"] == 1 and report["table_versions"]["captions"] == captions["after"]["version"]
    runs = lancedb.connect(db).open_table("runs").to_arrow().to_pylist()
    [run] = [r for r in runs if r["run_id"] == report["run_id"]]
    assert run["flow"] == "maintain" and run["status"] == "completed"
    assert json.loads(run["counts"])["fragments_before"] == 11

    assert main(["maintain", "--db", db]) == 0
    markdown = capsys.readouterr().out
    assert "| captions | 55 |" in markdown and "| runs |" in markdown

    assert main(["maintain", "--db", db, "--table", "nope"]) == 2
    assert "no table 'nope' in" in capsys.readouterr().err
