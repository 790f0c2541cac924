"""The `glscl` command line: the top-level options, the commands (pipelines/cli/commands/, one module per family) and
`main`, which applies the console policy, the Prefect API and the error contract around whichever command runs.
Every command parses its options into a typed config and calls a flow that Python can import and call the same
way."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from pipelines.cli.commands import (
    Command,
    bench,
    demo,
    evaluate,
    index,
    ingest,
    maintain,
    reproduce,
    search,
    server,
    status,
    train,
)
from pipelines.cli.console import console_policy
from pipelines.cli.failures import console_without_tracebacks, one_line, report
from pipelines.local_server import prefect_api

# In the order `glscl --help` lists them.
COMMANDS: dict[str, Command] = {
    **ingest.COMMANDS,
    **demo.COMMANDS,
    **train.COMMANDS,
    **evaluate.COMMANDS,
    **bench.COMMANDS,
    **maintain.COMMANDS,
    **index.COMMANDS,
    **search.COMMANDS,
    **reproduce.COMMANDS,
    **server.COMMANDS,
    **status.COMMANDS,
}
FLOW_COMMANDS = frozenset(name for name, command in COMMANDS.items() if command.flow)
VERBOSE_FLAGS = frozenset({"-v", "--verbose"})


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command."""
    parser = argparse.ArgumentParser(
        prog="glscl",
        description="Text-to-video search with GLSCL on LanceDB. Exit codes: 0 done; 1 unexpected error (a bug: the "
        "traceback is in the log file the error names); 2 bad input or options; 3 ingest: some videos failed; 4 the "
        "environment (the Prefect API or local server, the Ray cluster, the file system); 130 interrupted.",
    )
    parser.set_defaults(report_stream=None)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print everything: tracebacks (of failed flows and tasks, and of the error itself), Prefect's run logs, "
        "Ray's and its workers' lines, other libraries' warnings (default: progress bars, warnings and errors)",
    )
    parser.add_argument(
        "--log-file",
        default=None,
        metavar="PATH",
        help="append every log record from INFO up and the warnings to PATH, with or without -v (without it, also "
        "the error lines Ray's native code writes to standard error)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glscl` console script.

    Standard output carries only the command's report, so `--json` output can be piped into a parser; anything
    else printed while the command runs goes to standard error (Ray forwards its workers' and raylet's log
    lines, such as a worker it restarted, to the driver's stdout). Flow commands run against the Prefect API that
    `prefect_api` chooses (PREFECT_API_URL, else glscl's local server). Every error ends in one line on standard
    error and a documented exit code (pipelines/cli/failures.py); `-v/--verbose`, anywhere on the line, adds tracebacks
    and everything else the console policy (pipelines/cli/console.py) keeps off the terminal. Progress bars are drawn on
    standard error when it is a terminal and `--json` is not given.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.verbose = args.verbose or bool(VERBOSE_FLAGS.intersection(unknown))
    if unknown := [arg for arg in unknown if arg not in VERBOSE_FLAGS]:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.report_stream = sys.stdout
    bars = sys.stderr.isatty() and not getattr(args, "json", False)

    def warn(text: str) -> None:
        print(f"glscl {args.command}: warning: {one_line(text)}", file=sys.stderr, flush=True)

    try:
        if check := COMMANDS[args.command].check:
            check(args)
        with contextlib.ExitStack() as stack:
            if args.command in FLOW_COMMANDS:
                stack.enter_context(prefect_api(warn))
            stack.enter_context(console_policy(args.verbose, bars, args.log_file))
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            if not args.verbose:
                stack.enter_context(console_without_tracebacks())
            return COMMANDS[args.command].run(args)
    except (Exception, KeyboardInterrupt) as error:
        return report(args.command, error, args.verbose)
