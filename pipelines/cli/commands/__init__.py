"""The `glscl` commands, one module per family: each declares its parser, builds its typed config from the parsed
options and runs its flow (or service); its `COMMANDS` says what it adds to the command line. Parsing imports none
of the heavy libraries: a command's flow is imported when that command runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    """One `glscl` command: how to add its parser, how to run it (returns the exit code), whether it runs a Prefect
    flow (and so needs the Prefect API), and what of its input can be checked at once, before the Prefect API and
    the flow start (raises the error the user sees, in a second rather than after the API's start)."""

    add_parser: Callable[[argparse._SubParsersAction], None]
    run: Callable[[argparse.Namespace], int]
    flow: bool
    check: Callable[[argparse.Namespace], None] | None = None
