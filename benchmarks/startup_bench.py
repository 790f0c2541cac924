"""Start-up overhead of the flow commands: how long `glscl <command>` takes from launch until its flow run begins,
less the time it spends importing its modules, for each way of getting a Prefect API.

Modes (each command runs as a subprocess with a fresh PREFECT_HOME and no other Prefect setting, as a new user's):
- `temporary-20s`: Prefect's temporary server per command with Prefect's default 20 s start-up timeout, i.e. what
  every flow command did before glscl's local server (GLSCL_PREFECT_SERVER=temporary,
  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=20);
- `temporary`: the same with the 180 s timeout glscl now sets (the fallback);
- `local-first`: the local server on a fresh home, so the command starts it (a user's first command);
- `local-up`: the local server already running (every later command).

`--busy N` keeps N busy-loop processes running during every measured command (a loaded machine). The data (a tiny
synthetic dataset, ingested and trained by `glscl demo`) is made once, outside the measurements.

    python -m benchmarks.startup_bench [--commands ingest,maintain] [--modes local-up] [--repeats 3] [--busy 2]
        [--fresh] [--out runs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pipelines.local_server import LocalServer

ROOT = Path(__file__).resolve().parent.parent
MODES = ("temporary-20s", "temporary", "local-first", "local-up")
# Imports the command's modules, says when that was done, then runs the command as `glscl` would.
WRAPPER = (
    "import importlib, sys, time; import pipelines.cli; importlib.import_module(sys.argv[1]); "
    "print(f'startup-bench imported {time.time():.3f}', file=sys.stderr, flush=True); "
    "sys.exit(pipelines.cli.main(sys.argv[2:]))"
)
BUSY = "while True: pass"
LOG_TIME = r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| "


@dataclass
class Run:
    """One measured command: seconds from launch to imports done, to its flow run's start, to its first task log."""

    command: str
    mode: str
    busy: int
    exit_code: int
    imports_s: float | None
    to_flow_s: float | None
    to_first_task_s: float | None
    error: str

    @property
    def overhead_s(self) -> float | None:
        """Launch to flow start, less the imports: what getting a Prefect API and starting the flow run cost."""
        return None if self.to_flow_s is None or self.imports_s is None else self.to_flow_s - self.imports_s


COMMANDS = {
    "ingest": "ingest {demo}/train.json {demo}/val_1.json --video-root {demo}/videos --dataset synthetic "
    "--db {db} --frames 8",
    "train": "train --db {db} --head tiny --epochs 1 --batch-size 8 --val-split= --output {scratch}/train",
    "evaluate": "evaluate --checkpoint {demo}/train/best --db {db} --output {scratch}/evaluate",
    "index": "index --checkpoint {demo}/train/best --db {db} --vector-dim 32",
    "maintain": "maintain --db {db}",
    "demo": "demo --out {demo} --train-videos 32 --val-videos 4 --epochs 1",
}


def command_args(command: str, work: Path, scratch: Path) -> list[str]:
    """The arguments of one run of `command` on the prepared data (outputs go to `scratch`; no spaces in paths)."""
    demo = work / "demo"
    return COMMANDS[command].format(demo=demo, db=demo / "lancedb", scratch=scratch).split()


def mode_env(mode: str, home: Path) -> dict[str, str]:
    """A new user's environment (no Prefect setting but the home) for a mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "GLSCL_PREFECT_SERVER"}
    env["PREFECT_HOME"] = str(home)
    if mode.startswith("temporary"):
        env["GLSCL_PREFECT_SERVER"] = "temporary"
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "20" if mode == "temporary-20s" else "180"
    return env


def log_seconds(stderr: str, marker: str, launched: float) -> float | None:
    """Seconds from `launched` (epoch) to the first Prefect log line containing `marker` (local HH:MM:SS.mmm)."""
    for line in stderr.splitlines():
        match = re.match(LOG_TIME, line)
        if match and marker in line:
            start = datetime.fromtimestamp(launched)
            clock = datetime.strptime(match.group(1), "%H:%M:%S.%f").time()
            at = datetime.combine(start.date(), clock)
            if at < start - timedelta(hours=12):  # past midnight
                at += timedelta(days=1)
            return at.timestamp() - launched
    return None


def measure(command: str, mode: str, home: Path, work: Path, busy: int) -> Run:
    """Run one command as a subprocess in `mode` with `busy` busy loops alongside, and time its start-up."""
    # Each loop in a session of its own, as other programs' load would be (with the kernel's autogroup scheduling,
    # loops in the command's own session would only compete with the command, not with the server it starts).
    loops = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as scratch:
            launched = time.time()
            done = subprocess.run(
                [sys.executable, "-c", WRAPPER, f"pipelines.{command}", *command_args(command, work, Path(scratch))],
                cwd=ROOT,
                env=mode_env(mode, home),
                capture_output=True,
                text=True,
                timeout=1800,
            )
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    imported = re.search(r"startup-bench imported ([\d.]+)", done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"glscl {command}: error:")]
    return Run(
        command,
        mode,
        busy,
        done.returncode,
        float(imported.group(1)) - launched if imported else None,
        log_seconds(done.stderr, "Beginning flow run", launched),
        log_seconds(done.stderr, "Task run '", launched),
        errors[-1] if errors else "",
    )


def prepare(work: Path) -> None:
    """The tiny demo dataset, ingested and trained, for the commands to work on (with a home of its own)."""
    home = work / "prepare-home"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *command_args("demo", work, work)],
        cwd=ROOT,
        env=mode_env("local-up", home),
        capture_output=True,
        text=True,
    )
    LocalServer(home).stop()
    if done.returncode != 0:
        raise SystemExit(f"preparing the data failed:\n{done.stderr[-3000:]}")


def run_mode(mode: str, commands: list[str], work: Path, repeats: int, busy: int, fresh: bool) -> list[Run]:
    """Every command `repeats` times in one mode; `local-first` (or any mode with `fresh`) gets a fresh home per
    run, the other modes one home for all their runs."""
    runs, shared = [], work / f"home-{mode}-busy{busy}"
    try:
        for repeat in range(repeats):
            for command in commands:
                own = mode == "local-first" or fresh
                home = work / f"home-{mode}-{command}-{repeat}-busy{busy}" if own else shared
                if mode == "local-up":
                    LocalServer(home).ensure()
                try:
                    runs.append(measure(command, mode, home, work, busy))
                finally:
                    if home != shared:
                        LocalServer(home).stop()
                print(json.dumps(asdict(runs[-1]) | {"overhead_s": runs[-1].overhead_s}), file=sys.stderr, flush=True)
    finally:
        LocalServer(shared).stop()
    return runs


def markdown(runs: list[Run]) -> str:
    """Median seconds per command and mode: launch -> imports done, -> flow run begins, and the difference."""

    def median(values: list[float | None]) -> str:
        present = [v for v in values if v is not None]
        return f"{statistics.median(present):.1f}" if present else "-"

    lines = [
        "| command | mode | busy loops | runs (failed) | imports s | launch -> flow run s | overhead s | "
        "launch -> first task log s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r.command, r.mode, r.busy) for r in runs}, key=lambda k: (k[0], MODES.index(k[1]), k[2]))
    for command, mode, busy in keys:
        group = [r for r in runs if (r.command, r.mode, r.busy) == (command, mode, busy)]
        failed = sum(r.exit_code != 0 for r in group)
        lines.append(
            f"| {command} | {mode} | {busy} | {len(group)} ({failed}) | {median([r.imports_s for r in group])} | "
            f"{median([r.to_flow_s for r in group])} | {median([r.overhead_s for r in group])} | "
            f"{median([r.to_first_task_s for r in group])} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="glscl bench startup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated flow commands")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=1, help="runs per command and mode (default 1)")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes during each run (default 0)")
    parser.add_argument("--fresh", action="store_true", help="a fresh Prefect home for every run of every mode")
    parser.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    parser.add_argument("--out", default=None, help="also write the runs to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Prepare the data, measure every (mode, command), print a Markdown table and write the runs as JSON."""
    args = build_parser().parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="glscl-startup-bench-"))
    if not (work / "demo" / "train" / "best").exists():
        prepare(work)
    runs = []
    for mode in args.modes.split(","):
        runs += run_mode(mode, args.commands.split(","), work, args.repeats, args.busy, args.fresh)
    print(markdown(runs))
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(r) | {"overhead_s": r.overhead_s} for r in runs], indent=2))


if __name__ == "__main__":
    main()
