"""Faults made on purpose to a running glscl command: SIGKILL one of its Ray worker processes, the command's whole
process group (as a scheduler or a container runtime kills a job), or the local Prefect server it talks to, after a
delay; then run the command again until it ends as it should. The soak benchmark (benchmarks/soak.py) and the fault
tests use it. Linux only: the process tree is read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.cli.failures import EXIT_BAD_INPUT
from pipelines.local_server import LocalServer

RAY_WORKER = "ray-worker"
FLOW_PROCESS = "flow-process"
PREFECT_SERVER = "prefect-server"
FAULTS = (RAY_WORKER, FLOW_PROCESS, PREFECT_SERVER)

ProcessTree = tuple[dict[int, int], dict[int, str]]
# Ray's own processes and bookkeeping actors under a command (idle workers, agents, Ray Data's stats and location
# actors): a lost worker means one running the command's stages, so these are spared.
RAY_OWN_PROCESSES = ("ray::IDLE", "Agent", "ray::_", "ActorLocationTracker", "AutoscalingRequester")


def process_tree() -> ProcessTree:
    """One snapshot of /proc: each live process's parent, and its command line."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents, commands


def descendants_named(tree: ProcessTree, root: int, fragments: tuple[str, ...]) -> list[int]:
    """Pids of `root`'s descendant processes in `tree` whose command line contains one of `fragments` (Ray names
    its worker processes after what they run, e.g. `ray::MapWorker(Map(decode_item)->MapBatches(FrameEncoder))`)."""
    parents, commands = tree

    def under_root(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return [pid for pid, command in commands.items() if any(f in command for f in fragments) and under_root(pid)]


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (nothing when it is gone)."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def busy_ray_workers(process: subprocess.Popen, poll_s: float = 0.1) -> list[int]:
    """The Ray worker processes under `process` that run one of its tasks or actors (none of RAY_OWN_PROCESSES), as
    soon as there are some; none when the process ends first."""
    while process.poll() is None:
        _, commands = tree = process_tree()
        workers = [
            pid
            for pid in descendants_named(tree, process.pid, ("ray::",))
            if not any(part in commands[pid] for part in RAY_OWN_PROCESSES)
        ]
        if workers:
            return workers
        time.sleep(poll_s)
    return []


def inflict(fault: str, process: subprocess.Popen, prefect_home: Path) -> bool:
    """Make `fault` to the running command `process` (started in its own session); whether there was something to
    kill (a command that ended first has nothing). A Ray worker is killed once one is busy."""
    if process.poll() is not None:
        return False
    if fault == RAY_WORKER:
        workers = busy_ray_workers(process)
        for pid in workers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return bool(workers)
    if fault == FLOW_PROCESS:
        kill_group(process.pid)
        return True
    state = LocalServer(prefect_home).state()
    if state is None:
        return False
    kill_group(state.pid)
    return True


@dataclass
class Attempt:
    """One run of a command: the fault made to it (if any) and whether it hit something, how it ended, how long."""

    fault: str | None
    hit: bool
    exit_code: int
    seconds: float


@dataclass
class Ordeal:
    """Every attempt of one command, until it ended as it should."""

    name: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def reruns(self) -> int:
        return len(self.attempts) - 1

    @property
    def unfaulted_failures(self) -> int:
        """Attempts that failed although no fault hit them: the pipeline's own bugs, found by the soak."""
        return sum(1 for a in self.attempts[:-1] if not a.hit)


class GaveUp(RuntimeError):
    """A command did not end as it should within its attempts, or refused its input (which no rerun changes)."""


def run_until_done(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    done: Callable[[int], bool],
    plan: Callable[[int], tuple[str | None, float]],
    prefect_home: Path,
    max_attempts: int = 8,
) -> Ordeal:
    """Run `command` until `done(exit code)`, each attempt in its own session with output appended to `log`;
    `plan(attempt)` says which fault to make to that attempt (None: none) and after how many seconds. After a
    fault the rest of the command's process group is killed too, as a scheduler would clean up the job."""
    ordeal = Ordeal(name)
    for attempt in range(max_attempts):
        fault, delay = plan(attempt)
        start = time.monotonic()
        with log.open("a") as output:
            output.write(f"--- {name}: attempt {attempt + 1}, fault {fault or 'none'} after {delay:.1f} s\n")
            output.flush()
            process = subprocess.Popen(command, stdout=output, stderr=output, env=env, start_new_session=True)
            hit = False
            if fault is not None:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=delay)
                hit = inflict(fault, process, prefect_home)
            exit_code = process.wait()
            kill_group(process.pid)
        ordeal.attempts.append(Attempt(fault, hit, exit_code, time.monotonic() - start))
        if done(exit_code):
            return ordeal
        if exit_code == EXIT_BAD_INPUT and not hit:
            break
    codes = [a.exit_code for a in ordeal.attempts]
    raise GaveUp(f"{name}: not done after {len(codes)} attempts (exit codes {codes}; log: {log})")
