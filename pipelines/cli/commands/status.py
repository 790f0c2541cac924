"""`glscl runs` and `glscl tables`: what a database has recorded and holds, read without Prefect or Ray. The
reading lives in pipelines/runs.py (`list_runs`) and workers/overview.py (`database_overview`); this module
parses the options and prints. LanceDB is imported only when a command runs, so the CLI starts fast."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli.commands import Command
from pipelines.cli.options import add_json_option, add_store_options, emit, store_config
from schemas.store import StoreConfig

if TYPE_CHECKING:
    from pipelines.runs import RunView

RUN_STATUSES = ("running", "abandoned", "completed", "completed_with_failures", "failed")
ERROR_CHARS = 100
COUNTS_CHARS = 60


def add_runs_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl runs [--status S] [--flow F] [--limit N] [--json]`."""
    parser = commands.add_parser(
        "runs",
        help="list the flow runs recorded in a database, newest first",
        description="List the rows of the `runs` table: run id, flow, status, start, duration, counts and the "
        "first line of the error. A run whose process was killed keeps status `running` in the table; it is shown "
        "as `abandoned` when its process is gone from this host, or when its heartbeat (written every "
        "GLSCL_RUN_HEARTBEAT_S seconds, default 30) is older than 4 intervals.",
    )
    add_store_options(parser)
    parser.add_argument("--status", choices=RUN_STATUSES, default=None, help="only runs with this status")
    parser.add_argument("--flow", default=None, help="only runs of this flow (ingest, train, evaluate, index, ...)")
    parser.add_argument("--limit", type=int, default=20, help="show the newest N runs (default 20; 0: all)")
    add_json_option(parser, "runs")


def add_tables_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl tables [--json]`."""
    parser = commands.add_parser(
        "tables",
        help="what a database holds: tables, splits, backbones and video indexes",
        description="Show every table with its rows and schema version; per split the videos ok and failed, "
        "frame rows, sentences, paragraphs and text rows; the backbone model ids in frames and texts; and each "
        "checkpoint's video index with its rows, backbone, indexes and the rows they do not cover yet.",
    )
    add_store_options(parser)
    add_json_option(parser, "overview")


def _existing_store(args: argparse.Namespace) -> StoreConfig:
    """The StoreConfig of --db, refusing a local folder that does not exist (LanceDB would create it)."""
    store = store_config(args)
    if "://" not in store.uri and not Path(store.uri).is_dir():
        raise FileNotFoundError(f"no database at {store.uri} (--db names a LanceDB folder or URI)")
    return store


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def runs_markdown(runs: list[RunView], uri: str) -> str:
    """The runs as a Markdown table (the error column gives why an abandoned run counts as gone)."""
    if not runs:
        return f"No runs recorded in {uri} (for these filters)."
    lines = ["| run | flow | status | started (UTC) | duration | counts | error |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        counts = ", ".join(f"{k}={v}" for k, v in run.counts.items() if not isinstance(v, dict | list))
        error = _first_line(run.error) or (run.gone or "")
        lines.append(
            f"| {run.run_id} | {run.flow} | {run.status} | {run.started_at:%Y-%m-%d %H:%M:%S} | "
            f"{_duration(run.duration_s)} | {_short(counts, COUNTS_CHARS)} | {_short(error, ERROR_CHARS)} |"
        )
    return "\n".join(lines)


def run_runs(args: argparse.Namespace) -> int:
    """List the recorded runs."""
    from pipelines.runs import list_runs

    store = _existing_store(args)
    runs = list_runs(store, status=args.status, flow=args.flow, limit=args.limit)
    text = json.dumps([asdict(r) for r in runs], indent=2, default=str) if args.json else runs_markdown(runs, store.uri)
    emit(text, args)
    return 0


def run_tables(args: argparse.Namespace) -> int:
    """Show what the database holds."""
    from workers.overview import database_overview

    overview = database_overview(_existing_store(args))
    text = json.dumps(asdict(overview), indent=2) if args.json else overview.to_markdown()
    emit(text, args)
    return 0


COMMANDS = {
    "runs": Command(add_runs_parser, run_runs, flow=False),
    "tables": Command(add_tables_parser, run_tables, flow=False),
}
