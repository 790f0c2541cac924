"""Load test of `glscl serve` on loopback: for each query-worker count, start a server over an indexed checkpoint,
then run 1, 2, 8 and 32 concurrent clients (keep-alive connections, one thread each) through a bounded number of
POST /search requests, and report throughput, latency percentiles of the answered queries and errors (503s, the
server's bounded queue turning work away, counted apart).

Build a gallery with `glscl demo --out /tmp/demo --train-videos 40 --val-videos 10 --epochs 5` (it indexes itself),
then `glscl bench serve --checkpoint /tmp/demo/train/best --db /tmp/demo/lancedb`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

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

    @property
    def throughput(self) -> float:
        """Answered queries per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile of the answered queries' latency in ms (NaN when none)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@contextlib.contextmanager
def server(checkpoint: str, db: str, workers: int, queue: int, log: Path) -> Iterator[str]:
    """A `glscl serve` process on 127.0.0.1 (any free port) with `workers` query threads; yields its URL."""
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", db, "--port", "0"]
    command += ["--workers", str(workers), "--queue", str(queue)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
        try:
            url, deadline = None, time.monotonic() + 180
            while url is None and process.poll() is None and time.monotonic() < deadline:
                found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
                url = found.group(1) if found else time.sleep(0.2)
            if url is None:
                raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
            yield url
        finally:
            process.send_signal(2)
            process.wait(timeout=60)


def run_level(url: str, workers: int, clients: int, requests: int, max_seconds: float, k: int) -> Level:
    """`requests` queries (fewer if `max_seconds` runs out) from `clients` concurrent threads."""
    lock, latencies, counts = threading.Lock(), [], {"sent": 0, "ok": 0, "busy": 0, "errors": 0}
    deadline = time.monotonic() + max_seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            while time.monotonic() < deadline:
                with lock:
                    if counts["sent"] >= requests:
                        return
                    counts["sent"] += 1
                    text = TEXTS[(counts["sent"] + index) % len(TEXTS)]
                started = time.perf_counter()
                try:
                    status = session.post("/search", json={"text": text, "k": k}).status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if status == 200:
                        counts["ok"] += 1
                        latencies.append(elapsed)
                    else:
                        counts["busy" if status == 503 else "errors"] += 1

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return Level(workers, clients, counts["sent"], counts["ok"], counts["busy"], counts["errors"], seconds, latencies)


def markdown(levels: list[Level]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| workers | clients | requests | answered/s | p50 ms | p95 ms | p99 ms | 503 busy | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        lines.append(
            f"| {level.workers} | {level.clients} | {level.sent} | {level.throughput:.1f} | "
            f"{level.percentile(50):.0f} | {level.percentile(95):.0f} | {level.percentile(99):.0f} | {level.busy} | "
            f"{level.errors} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="glscl bench serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder whose video index to serve")
    parser.add_argument("--db", required=True, help="LanceDB folder holding the index")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="query worker counts (default 1 2)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 2, 8, 32], help="concurrent clients (default 1 2 8 32)"
    )
    parser.add_argument("--requests", type=int, default=200, help="queries per level (default 200)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per level (default 30)")
    parser.add_argument("--queue", type=int, default=32, help="server's query queue (default 32)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--out", default=None, help="also write the levels to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run every (workers, clients) level and print the table."""
    args = build_parser().parse_args(argv)
    levels = []
    for workers in args.workers:
        log = Path(f"/tmp/glscl-serve-load-{workers}.log")
        with server(args.checkpoint, args.db, workers, args.queue, log) as url:
            run_level(url, workers, 2, 16, 60, args.k)  # warm-up: first queries load pages and kernels
            for clients in args.clients:
                levels.append(run_level(url, workers, clients, args.requests, args.max_seconds, args.k))
                print(markdown(levels[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        log.unlink(missing_ok=True)
    print(markdown(levels))
    if args.out:
        rows = [asdict(level) | {"throughput": level.throughput} for level in levels]
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
