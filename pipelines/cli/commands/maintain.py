"""`glscl maintain`: table upkeep (compaction, index updates, old versions)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_json_option,
    add_store_options,
    print_report,
    store_config,
)
from pipelines.configs import (
    DEFAULT_RETENTION,
    MaintainConfig,
)

RETAIN_HOURS = DEFAULT_RETENTION.total_seconds() / 3600


def add_maintain_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl maintain [options]`."""
    parser = commands.add_parser(
        "maintain",
        help="table upkeep: compact small fragments, update indexes, remove old versions",
        description="Keep up every table of a database (or the --table ones): compact the small fragments each "
        "commit leaves, add new rows to existing indexes, and remove table versions older than --retain-hours. "
        "Reports fragments, rows, versions and unindexed rows before and after, and fails if a stored row was "
        "lost or duplicated. Safe while ingest runs, as long as --retain-hours is above zero.",
    )
    add_store_options(parser)
    parser.add_argument(
        "--retain-hours",
        type=float,
        default=RETAIN_HOURS,
        help=f"keep versions younger than this (default {RETAIN_HOURS:g}); 0 keeps only the newest and breaks any "
        "writer working on the table at that moment",
    )
    parser.add_argument(
        "--table", action="append", default=[], help="table to keep up (repeatable; default: every table)"
    )
    add_json_option(parser)


def maintain_config(args: argparse.Namespace) -> MaintainConfig:
    """The MaintainConfig named by the maintain options."""
    return MaintainConfig(
        store=store_config(args),
        retain_versions_older_than=timedelta(hours=args.retain_hours),
        tables=tuple(args.table),
    )


def run_maintain(args: argparse.Namespace) -> int:
    """Run the maintain flow and print its summary."""
    from pipelines.maintain import maintain_flow

    print_report(maintain_flow(maintain_config(args)), args)
    return 0


COMMANDS = {
    "maintain": Command(add_maintain_parser, run_maintain, flow=True),
}
