"""The maintain flow: table upkeep, one task per table (workers/upkeep.py). Compacts the small fragments that every
ingest commit leaves, brings indexes up to date (the open-source build never indexes new rows by itself) and
removes old table versions, reporting each table before and after, and checking that no row was lost or duplicated
on the way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.artifacts import publish_summary
from pipelines.configs import MaintainConfig
from pipelines.runs import RunRecorder
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.upkeep import TableUpkeep, maintain_table


@dataclass
class MaintainSummary:
    """The outcome of a maintain run: one entry per table, the retention window, and the table versions after."""

    run_id: str
    retain_hours: float
    tables: list[TableUpkeep]
    table_versions: dict[str, int]
    seconds: float

    def to_markdown(self) -> str:
        """A short human-readable report, one table row per maintained table."""
        lines = [
            f"## maintain run {self.run_id}",
            "",
            f"- kept versions younger than {self.retain_hours:g} h; {self.seconds:.2f} s in all",
            "",
            "| table | rows | fragments | versions | unindexed rows | bytes | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in self.tables:
            unindexed = ", ".join(
                f"{name} {t.before.unindexed_rows[name]} -> {t.after.unindexed_rows.get(name, 0)}"
                for name in t.before.unindexed_rows
            )
            lines.append(
                f"| {t.table} | {t.after.rows} | {t.before.fragments} -> {t.after.fragments} | "
                f"{t.before.versions} -> {t.after.versions} | {unindexed or 'no index'} | "
                f"{t.before.total_bytes} -> {t.after.total_bytes} | {t.seconds:.2f} |"
            )
        return "\n".join(lines)


@task(cache_policy=NO_CACHE)
def upkeep(store: StoreConfig, name: str, retain: timedelta) -> TableUpkeep:
    """One table's upkeep as a Prefect task, so each table shows up (and fails) on its own."""
    return maintain_table(Catalog(store), name, retain)


def _counts(done: list[TableUpkeep]) -> dict[str, int]:
    return {
        "tables": len(done),
        "rows": sum(t.after.rows for t in done),
        "fragments_before": sum(t.before.fragments for t in done),
        "fragments_after": sum(t.after.fragments for t in done),
        "versions_before": sum(t.before.versions for t in done),
        "versions_after": sum(t.after.versions for t in done),
        "unindexed_rows_before": sum(sum(t.before.unindexed_rows.values()) for t in done),
        "unindexed_rows_after": sum(sum(t.after.unindexed_rows.values()) for t in done),
    }


@flow(name="glscl-maintain")
def maintain_flow(config: MaintainConfig) -> MaintainSummary:
    """Keep up every table of a database (or the named ones), recording the run in `runs`."""
    logger = get_run_logger()
    start = time.perf_counter()
    catalog = Catalog(config.store)
    with RunRecorder(catalog, "maintain", asdict(config)) as run:
        present = catalog.table_names()
        missing = sorted(set(config.tables) - set(present))
        if missing:
            raise FileNotFoundError(f"no table {', '.join(map(repr, missing))} in {config.store.uri}")
        done = []
        for name in config.tables or present:
            done.append(upkeep(config.store, name, config.retain_versions_older_than))
            t = done[-1]
            logger.info(
                "%s: %d rows, fragments %d -> %d, versions %d -> %d, %.2f s",
                name,
                t.after.rows,
                t.before.fragments,
                t.after.fragments,
                t.before.versions,
                t.after.versions,
                t.seconds,
            )
    seconds = time.perf_counter() - start
    timings = {t.table: t.seconds for t in done} | {"total": seconds}
    versions = run.finish("completed", _counts(done), {}, timings)
    hours = config.retain_versions_older_than.total_seconds() / 3600
    summary = MaintainSummary(run.run_id, hours, done, versions, seconds)
    publish_summary("maintain", summary.to_markdown(), f"glscl maintain run {run.run_id}")
    return summary
