"""`glscl prefect-server start|stop|status`: the local Prefect server that flow commands start in the background and
reuse (pipelines/local_server.py), by hand: start it ahead of time, see where it listens and keeps its data, stop it.
Named apart from `glscl serve` (the HTTP search service), which users confused it with; the old name `glscl server`
still works for one release and says so."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from pipelines.cli.commands import Command
from pipelines.cli.options import emit

if TYPE_CHECKING:
    from pipelines.local_server import ServerState

NAME = "prefect-server"
OLD_NAME = "server"


DESCRIPTION = (
    "Flow commands (ingest, train, evaluate, index, maintain, demo, reproduce) run against a Prefect "
    "server. "
    "Unless PREFECT_API_URL is set, the first one starts glscl's local server in the background, on 127.0.0.1 "
    "and a free port, with its database, log and state in $PREFECT_HOME/glscl-server/ (PREFECT_HOME defaults to "
    "~/.prefect); later commands reuse it, and one that finds it gone starts it again. The Prefect UI is at its "
    "address. It stops by itself after GLSCL_PREFECT_SERVER_IDLE_MINUTES (default 60) without a flow command, and "
    "when its Prefect home is deleted; `start --idle-minutes 0` keeps it on (a scheduled setup that uses it). "
    "GLSCL_PREFECT_SERVER=temporary makes flow commands use a temporary server each instead."
)


def add_server_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl prefect-server {start,stop,status} [--json]`."""
    _add_options(
        commands.add_parser(
            NAME,
            help="start, stop or show the local Prefect server that flow commands reuse (not the search service: "
            "that is `glscl serve`)",
            description=DESCRIPTION,
        )
    )


def add_old_name_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl server ...`: the old name, kept for one release."""
    _add_options(
        commands.add_parser(
            OLD_NAME, help=f"old name of `glscl {NAME}` (removed in the next release)", description=DESCRIPTION
        )
    )


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    parser.add_argument(
        "--idle-minutes",
        type=float,
        default=None,
        help="with start: stop the server after this many minutes without a flow command; 0 keeps it on (default: "
        "GLSCL_PREFECT_SERVER_IDLE_MINUTES, else 60; a running server keeps its own unless this is given)",
    )
    parser.add_argument("--json", action="store_true", help="print the server's state as JSON")


def run_server(args: argparse.Namespace) -> int:
    """Start, stop or show the local server; print its state."""
    from pipelines.local_server import LocalServer

    server = LocalServer.default()
    if args.idle_minutes is not None and (args.action != "start" or args.idle_minutes < 0):
        raise ValueError("--idle-minutes goes with `start` and is 0 (keep it on) or more")
    if args.action == "start":
        with server.in_use():
            state = server.ensure(idle_s=None if args.idle_minutes is None else 60 * args.idle_minutes)
    elif args.action == "stop":
        state = server.stop()
    else:
        state = server.running()
    running = args.action != "stop" and state is not None
    stops_at = server.stops_at(state) if running and state else None
    info = {
        "running": running,
        "pid": state.pid if state else None,
        "api_url": state.api_url if state else None,
        "ui_url": state.ui_url if state else None,
        "started_at": state.started_at if state else None,
        "idle_minutes": state.idle_s / 60 if state and state.idle_s is not None else None,
        "stops_at": stops_at.isoformat() if stops_at else None,
        "folder": str(server.folder),
        "database": str(server.database),
        "log": str(server.log),
    }
    if args.json:
        text = json.dumps(info, indent=2)
    elif state is None:
        text = f"the local Prefect server is not running (the next flow command starts it); files in {server.folder}"
    elif args.action == "stop":
        text = f"stopped the local Prefect server (pid {state.pid}); its database and log stay in {server.folder}"
    else:
        text = "\n".join(
            [
                f"the local Prefect server is running (pid {state.pid}, since {state.started_at})",
                f"  {_lifetime(state, stops_at)}",
                f"  API (PREFECT_API_URL): {state.api_url}",
                f"  UI: {state.ui_url}",
                f"  database: {server.database}",
                f"  log: {server.log}",
                f"  stop it with `glscl {NAME} stop`",
            ]
        )
    emit(text, args)
    return 0


def _lifetime(state: ServerState, stops_at: datetime | None) -> str:
    """When the server stops by itself, in words."""
    if stops_at is None:
        return "kept on: it stops only when asked (`--idle-minutes 0`)"
    return (
        f"stops by itself at {stops_at:%Y-%m-%d %H:%M:%S} UTC unless a flow command uses it first "
        f"(after {(state.idle_s or 0) / 60:g} min unused; `start --idle-minutes 0` keeps it on)"
    )


def run_old_name(args: argparse.Namespace) -> int:
    """The old name: a deprecation line on standard error, then the command under its new name."""
    print(
        f"glscl {OLD_NAME}: warning: `glscl {OLD_NAME}` is now `glscl {NAME}` (the old name goes in the next "
        "release; `glscl serve` is the search service)",
        file=sys.stderr,
        flush=True,
    )
    return run_server(args)


COMMANDS = {
    NAME: Command(add_server_parser, run_server, flow=False),
    OLD_NAME: Command(add_old_name_parser, run_old_name, flow=False),
}
