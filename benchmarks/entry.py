"""The command-line entry shared by benchmarks that measure once and report: parse the options, run, keep the
result as JSON where `--out` names a file, and return the Markdown that `glscl bench` prints."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path


def measure_and_report(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], dict],
    to_markdown: Callable[[dict], str],
    argv: Sequence[str] | None,
) -> str:
    """Run the benchmark `parser` describes with `argv`; its result as Markdown (and JSON in `--out`)."""
    args = parser.parse_args(argv)
    result = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return to_markdown(result)


def add_int_options(parser: argparse.ArgumentParser, defaults: object, names: Sequence[str]) -> None:
    """One integer option `--a-name` per field `a_name` of the config dataclass `defaults`, defaulting to its value."""
    for name in names:
        default = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=f"(default {default})")
