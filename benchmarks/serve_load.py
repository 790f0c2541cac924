"""Load test of `glscl serve` on loopback: start a server over an indexed checkpoint for each layout (processes x
query threads), then run 1, 2, 8 and 32 concurrent clients (keep-alive connections on one asyncio loop, light enough
to leave the cores to the server) through a bounded number of POST /search requests, the layouts taking turns in
slices of each level, and report throughput, latency
percentiles of the answered queries, errors (503s, the server's bounded queue turning work away, counted apart)
and the server's CPU time per answered query.

Build a gallery with `glscl demo --out /tmp/demo --train-videos 40 --val-videos 10 --epochs 5` (it indexes itself),
then `glscl bench serve --checkpoint /tmp/demo/train/best --db /tmp/demo/lancedb`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import uvloop

TEXTS = (
    "a red circle moves left",
    "a blue square appears then a green triangle",
    "a yellow triangle moves right",
    "a green circle grows",
    "a white square moves up, then a red triangle appears",
    "two shapes cross",
    "a purple circle shrinks and a blue square moves down",
    "a shape moves",
)


@dataclass
class Level:
    """One load level: workers, clients, requests sent and what came back."""

    workers: int
    clients: int
    sent: int
    ok: int
    busy: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    server_cpu_s: float = 0.0
    processes: int = 1

    @property
    def throughput(self) -> float:
        """Answered queries per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile of the answered queries' latency in ms (NaN when none)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@contextlib.contextmanager
def server(checkpoint: str, db: str, layout: tuple[int, int], queue: int, log: Path) -> Iterator[tuple[str, int]]:
    """A `glscl serve` on 127.0.0.1 (any free port) with `layout` = (processes, query threads per process); yields
    its URL, once every process answers, and the main process id."""
    processes, workers = layout
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", db, "--port", "0"]
    command += ["--processes", str(processes), "--workers", str(workers), "--queue", str(queue)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
        try:
            url, deadline = None, time.monotonic() + 180
            while url is None and process.poll() is None and time.monotonic() < deadline:
                found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
                url = found.group(1) if found else time.sleep(0.2)
            while url and not _healthy(url) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)  # several processes: the port is bound before they load their searchers
            if url is None or not _healthy(url):
                raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
            yield url, process.pid
        finally:
            process.send_signal(2)
            process.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=30) as answer:
            return answer.status == 200
    except OSError:
        return False


class _Connection:
    """One keep-alive HTTP/1.1 connection that posts a query and reads the status and body: a few lines of
    asyncio instead of a client library, so the load generator spends little of the CPU it shares with the
    server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, float]:
        """The status of one POST (0 when the connection failed; it is opened again for the next) and its
        Retry-After in seconds (0 when absent)."""
        body = json.dumps(payload).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await self.writer.drain()
            status = int((await self.reader.readline()).split()[1])
            length, closing, retry_after = 0, False, 0.0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                retry_after = float(value) if name.lower() == "retry-after" else retry_after
                closing |= name.lower() == "connection" and value.strip().lower() == "close"
            await self.reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            status, closing, retry_after = 0, True, 0.0
        if closing:
            self.close()
        return status, retry_after

    def close(self) -> None:
        """Drop the connection (the next post opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def run_level(url: str, workers: int, clients: int, requests: int, max_seconds: float, k: int) -> Level:
    """`requests` queries (fewer if `max_seconds` runs out) from `clients` concurrent keep-alive connections; a
    client turned away waits the Retry-After the server asks for before its next query."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies, counts = [], {"sent": 0, "ok": 0, "busy": 0, "errors": 0}

    async def client(index: int, deadline: float) -> None:
        connection = _Connection(host, int(port))
        while time.monotonic() < deadline and counts["sent"] < requests:
            counts["sent"] += 1
            text = TEXTS[(counts["sent"] + index) % len(TEXTS)]
            started = time.perf_counter()
            status, retry_after = await connection.post("/search", {"text": text, "k": k})
            if status == 200:
                counts["ok"] += 1
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                counts["busy" if status == 503 else "errors"] += 1
                await asyncio.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))  # as a polite client
        connection.close()

    async def level() -> None:
        deadline = time.monotonic() + max_seconds
        await asyncio.gather(*(client(index, deadline) for index in range(clients)))

    started = time.perf_counter()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvloop: less of the cores for the client
        runner.run(level())
    seconds = time.perf_counter() - started
    return Level(workers, clients, counts["sent"], counts["ok"], counts["busy"], counts["errors"], seconds, latencies)


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process and its child processes (a multi-process server's workers) have used
    so far (Linux /proc)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = _stat(entry.name)
                if int(entry.name) == pid or int(fields[1]) == pid:
                    ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def markdown(levels: list[Level]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| processes | workers | clients | requests | answered/s | p50 ms | p95 ms | p99 ms | 503 busy | errors "
        "| server cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        lines.append(
            f"| {level.processes} | {level.workers} | {level.clients} | {level.sent} | {level.throughput:.1f} | "
            f"{level.percentile(50):.0f} | {level.percentile(95):.0f} | {level.percentile(99):.0f} | {level.busy} | "
            f"{level.errors} | {level.server_cpu_s / level.seconds:.2f} |"
        )
    return "\n".join(lines)


def summary(level: Level) -> dict:
    """A level's counts, throughput and latency percentiles, without the per-query latencies."""
    counts = {key: value for key, value in asdict(level).items() if key != "latencies_ms"}
    percentiles = {f"p{q}_ms": level.percentile(q) for q in (50, 95, 99)}
    return counts | percentiles | {"throughput": level.throughput}


def _layout(text: str) -> tuple[int, int]:
    """'2x1' -> (2 processes, 1 query thread each)."""
    processes, _, workers = text.partition("x")
    try:
        layout = int(processes), int(workers)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROCESSESxTHREADS such as 2x1, got {text!r}") from None
    if min(layout) < 1:
        raise argparse.ArgumentTypeError(f"processes and threads must be at least 1, got {text!r}")
    return layout


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="glscl bench serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder whose video index to serve")
    parser.add_argument("--db", required=True, help="LanceDB folder holding the index")
    parser.add_argument(
        "--layouts",
        type=_layout,
        nargs="+",
        default=[(1, 1), (1, 2), (2, 1)],
        help="server layouts as PROCESSESxTHREADS, query threads per process (default 1x1 1x2 2x1)",
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 2, 8, 32], help="concurrent clients (default 1 2 8 32)"
    )
    parser.add_argument("--requests", type=int, default=100_000, help="queries per level at most (default 100000)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time per level at most (default 60)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="split each level into this many slices, alternating the layouts between slices (default 3)",
    )
    parser.add_argument("--queue", type=int, default=32, help="server's query queue (default 32)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--out", default=None, help="also write the levels to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Start a server per layout, then run every clients level on each layout in turn, `--rounds` times, so that
    a machine that gets faster or slower over minutes affects every layout alike; print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    with contextlib.ExitStack() as stack:
        servers = []
        for processes, workers in args.layouts:
            log = Path(f"/tmp/glscl-serve-load-{processes}x{workers}.log")
            stack.callback(log.unlink, missing_ok=True)
            url, pid = stack.enter_context(server(args.checkpoint, args.db, (processes, workers), args.queue, log))
            # warm-up: first queries load pages and kernels, and give every process time to start accepting
            run_level(url, workers, 2 * processes, 32 * processes, 60, args.k)
            servers.append((processes, workers, url, pid))
        slices: dict[tuple[int, int, int], list[Level]] = {}
        for clients in args.clients:
            for _ in range(args.rounds):
                for processes, workers, url, pid in servers:
                    before = cpu_seconds(pid)
                    level = run_level(
                        url, workers, clients, args.requests // args.rounds, args.max_seconds / args.rounds, args.k
                    )
                    level.server_cpu_s, level.processes = cpu_seconds(pid) - before, processes
                    slices.setdefault((processes, workers, clients), []).append(level)
                    print(markdown([level]).splitlines()[-1], file=sys.stderr, flush=True)
    levels = [combined(slices[key]) for key in sorted(slices)]
    print(markdown(levels))
    if args.out:
        Path(args.out).write_text(json.dumps([summary(level) for level in levels], indent=2))


def combined(parts: list[Level]) -> Level:
    """One level from the rounds of one (layout, clients): counts, seconds and CPU time added, latencies pooled."""
    first = parts[0]
    total = Level(first.workers, first.clients, 0, 0, 0, 0, 0.0, [], 0.0, first.processes)
    for part in parts:
        total.sent, total.ok, total.busy = total.sent + part.sent, total.ok + part.ok, total.busy + part.busy
        total.errors, total.seconds = total.errors + part.errors, total.seconds + part.seconds
        total.server_cpu_s += part.server_cpu_s
        total.latencies_ms += part.latencies_ms
    return total


if __name__ == "__main__":
    main()
