"""A bounded chaos run of the scheduled pipeline, by the user's own commands: generated videos (and a corrupt file
in each batch) arrive in batches; each batch is `glscl ingest`ed then `glscl index`ed, while at random moments a
Ray worker of the command, the command's whole process group, or the local Prefect server is SIGKILLed and the
command re-run until it ends as it should; `glscl serve` answers a steady stream of queries from several clients all
along. At the end the database is audited (benchmarks/soak_audit.py: every video ok exactly once in every table or
failed with its reason, the index holding every ok video exactly once, fully covered by its indexes), `glscl runs`
must show no run still `running`, and no query may have had a 5xx or a dropped connection.

The first batch is ingested, trained on (one epoch of the tiny head) and indexed without faults: it gives the
checkpoint the server searches and the commands' usual durations, from which the fault delays are drawn.

Usage: glscl bench soak --root DIR [--videos 2000 --batches 10 --fault-share 0.6 --clients 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.chaos import FAULTS, Ordeal, run_until_done
from benchmarks.entry import add_int_options, measure_and_report
from benchmarks.serve_load import server
from benchmarks.soak_audit import Expected, audit_tables
from pipelines.configs import DEMO_FRAMES, DEMO_MAX_WORDS
from pipelines.local_server import LocalServer
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import video_index_name
from workers.ingest.hashing import content_id
from workers.synthetic.videos import SyntheticConfig, generate_synthetic_dataset
from workers.train.worker import BEST_DIR

EXIT_OK, EXIT_SOME_FAILED = 0, 3
INT_OPTIONS = ("videos", "batches", "corrupt_per_batch", "clients", "seed", "min_rows", "max_attempts")
# Variables that would point the commands at another Prefect API or Ray cluster than the soak's own.
FOREIGN_VARIABLES = ("PREFECT_API_URL", "GLSCL_PREFECT_SERVER", "RAY_ADDRESS", "PREFECT_HOME")


@dataclass(frozen=True)
class SoakConfig:
    """How many videos arrive in how many batches, how often a command is hit by a fault, the query load, and the
    index layout."""

    root: str
    videos: int = 2000
    batches: int = 10
    corrupt_per_batch: int = 1
    fault_share: float = 0.6
    clients: int = 3
    query_interval_s: float = 0.2
    seed: int = 0
    min_rows: int = 1000
    segment_rows: bool = False
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.batches < 2 or self.videos < 2 * self.batches:
            raise ValueError(f"soak: --batches must be >= 2 and --videos >= 2 x batches, not {self}")
        if not 0.0 <= self.fault_share <= 1.0:
            raise ValueError(f"soak: --fault-share must lie in [0, 1], not {self.fault_share}")


@dataclass
class Batch:
    """One batch's annotation file and the content ids it should leave ok and failed."""

    annotations: Path
    ok: set[str]
    failed: set[str]
    sources: set[str]


def make_batches(config: SoakConfig, root: Path) -> list[Batch]:
    """Generate the videos, split their annotations into batches and add the corrupt files to each."""
    dataset = generate_synthetic_dataset(
        SyntheticConfig(out_dir=root / "data", n_train=config.videos, n_val=0, seed=config.seed)
    )
    annotations = json.loads(dataset.train_annotations.read_text())
    keys = sorted(annotations)
    batches = []
    for number, chunk in enumerate(np.array_split(np.array(keys), config.batches)):
        entries = {str(key): annotations[str(key)] for key in chunk}
        ok = {content_id(dataset.video_dir / f"{key}.mp4") for key in entries}
        failed = set()
        for index in range(config.corrupt_per_batch):
            key = f"v_corrupt_{number:03d}_{index}"
            (dataset.video_dir / f"{key}.mp4").write_bytes(f"not a video: batch {number}, file {index}".encode() * 40)
            failed.add(content_id(dataset.video_dir / f"{key}.mp4"))
            entries[key] = {"duration": 4.0, "timestamps": [[0.0, 4.0]], "sentences": ["a corrupt file."]}
        path = root / "batches" / f"batch_{number:03d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))
        batches.append(Batch(path, ok, failed, set(entries)))
    return batches


@dataclass
class QueryCounts:
    """What the query clients saw: answers by HTTP status, dropped connections, latencies of the answered."""

    statuses: Counter = field(default_factory=Counter)
    dropped: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        answered = self.latencies_ms or [float("nan")]
        return {
            "sent": sum(self.statuses.values()) + len(self.dropped),
            "by_status": {str(status): count for status, count in sorted(self.statuses.items())},
            "server_errors": sum(count for status, count in self.statuses.items() if status >= 500),
            "dropped": len(self.dropped),
            "dropped_examples": self.dropped[:3],
            "p50_ms": round(float(np.percentile(answered, 50)), 1),
            "p95_ms": round(float(np.percentile(answered, 95)), 1),
        }


class QueryStream:
    """`clients` threads, each on its own keep-alive connection, sending POST /search with the batches' captions,
    `interval_s` apart, until stopped (a steady stream that leaves the cores to the pipeline, not a load test)."""

    def __init__(self, url: str, texts: list[str], clients: int, interval_s: float) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port, self.texts, self.counts, self.interval_s = int(port), texts, QueryCounts(), interval_s
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> QueryStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, index: int) -> None:
        connection, sent = http.client.HTTPConnection(self.host, self.port, timeout=60), index
        while not self._stop.is_set():
            body = json.dumps({"text": self.texts[sent % len(self.texts)], "k": 10})
            started = time.perf_counter()
            try:
                connection.request("POST", "/search", body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                with self._lock:
                    self.counts.dropped.append(f"{type(error).__name__}: {error}")
                continue
            with self._lock:
                self.counts.statuses[answer.status] += 1
                if answer.status == 200:
                    self.counts.latencies_ms.append((time.perf_counter() - started) * 1000)
            sent += len(self._threads)
            self._stop.wait(self.interval_s)
        connection.close()


class Soak:
    """The commands of one soak run, its fault plan and what it recorded."""

    def __init__(self, config: SoakConfig) -> None:
        self.config, self.root = config, Path(config.root)
        self.db, self.checkpoint = str(self.root / "lancedb"), str(self.root / "train" / BEST_DIR)
        self.prefect_home, self.logs = self.root / "prefect", self.root / "logs"
        self.env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
        self.env["PREFECT_HOME"] = str(self.prefect_home)
        self.rng = np.random.default_rng(config.seed)
        self.ordeals: list[Ordeal] = []
        self.usual_s: dict[str, float] = {}
        self.faults_planned = 0

    def glscl(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "pipelines.cli", *arguments]

    def ingest(self, batch: Batch) -> list[str]:
        command = self.glscl("ingest", str(batch.annotations), "--db", self.db, "--split", "train")
        video_root = str(batch.annotations.parent.parent / "data" / "videos")
        options = ["--video-root", video_root, "--dataset", "soak", "--frames", str(DEMO_FRAMES)]
        return [*command, *options, "--max-words", str(DEMO_MAX_WORDS), "--shard-size", "64"]

    def index(self) -> list[str]:
        command = self.glscl("index", "--checkpoint", self.checkpoint, "--db", self.db)
        command += ["--min-rows", str(self.config.min_rows)]
        return [*command, "--segment-rows", "--index-type", "IVF_HNSW_SQ"] if self.config.segment_rows else command

    def train(self, videos: int) -> list[str]:
        """One epoch of the tiny head on the `videos` ingested so far (batches of at most 16)."""
        command = self.glscl("train", "--db", self.db, "--split", "train", "--val-split", "", "--head", "tiny")
        options = ["--epochs", "1", "--batch-size", str(min(16, videos)), "--max-words", str(DEMO_MAX_WORDS)]
        return [*command, *options, "--output", str(self.root / "train")]

    def plan(self, kind: str, chaos: bool):
        """The fault plan of one command: a fault on an attempt with probability `fault_share` (never past the
        third attempt, so that the run converges), its kind in turn through FAULTS, at a moment drawn uniformly
        within the command's usual duration."""

        def fault_for(attempt: int) -> tuple[str | None, float]:
            if not chaos or attempt >= 3 or self.rng.random() >= self.config.fault_share:
                return None, 0.0
            fault = FAULTS[self.faults_planned % len(FAULTS)]
            self.faults_planned += 1
            return fault, float(self.rng.uniform(0.1, 1.0) * self.usual_s[kind])

        return fault_for

    def run(self, name: str, kind: str, command: list[str], chaos: bool, accept: tuple[int, ...] = (EXIT_OK,)) -> None:
        """Run one command until it exits with one of `accept`, under the fault plan when `chaos`."""
        ordeal = run_until_done(
            name,
            command,
            self.env,
            self.logs / f"{kind}.log",
            lambda code: code in accept,
            self.plan(kind, chaos),
            self.prefect_home,
            self.config.max_attempts,
        )
        self.ordeals.append(ordeal)
        self.usual_s.setdefault(kind, ordeal.attempts[-1].seconds)
        last = ordeal.attempts[-1]
        print(f"{name}: exit {last.exit_code} after {len(ordeal.attempts)} attempts, {last.seconds:.1f} s", flush=True)

    def runs_by_status(self) -> dict:
        """`glscl runs --json` as a user runs it: runs by status as it shows them."""
        output = subprocess.run(
            self.glscl("runs", "--db", self.db, "--limit", "0", "--json"),
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(Counter(f"{run['flow']} {run['status']}" for run in json.loads(output)))


def run(config: SoakConfig) -> dict:
    """The whole soak; its report as a dict."""
    started = time.monotonic()
    soak = Soak(config)
    soak.logs.mkdir(parents=True, exist_ok=True)
    batches = make_batches(config, soak.root)
    generated_s = time.monotonic() - started
    soak.run("ingest batch 1", "ingest", soak.ingest(batches[0]), False, (EXIT_OK, EXIT_SOME_FAILED))
    soak.run("train", "train", soak.train(len(batches[0].ok)), False)
    soak.run("index batch 1", "index", soak.index(), False)
    texts = [s for b in batches for entry in json.loads(b.annotations.read_text()).values() for s in entry["sentences"]]
    try:
        with (
            server(soak.checkpoint, soak.db, (1, 2), 64, soak.logs / "serve.log") as (url, _),
            QueryStream(url, texts, config.clients, config.query_interval_s) as stream,
        ):
            for number, batch in enumerate(batches[1:], start=2):
                accept = (EXIT_OK, EXIT_SOME_FAILED)
                soak.run(f"ingest batch {number}", "ingest", soak.ingest(batch), True, accept)
                soak.run(f"index batch {number}", "index", soak.index(), True)
            time.sleep(2 * 5.0)  # the searcher follows the table every 5 s: queries on the last version too
    finally:
        LocalServer(soak.prefect_home).stop()
    expected = Expected(
        ok=set().union(*(b.ok for b in batches)),
        failed=set().union(*(b.failed for b in batches)),
        sources=set().union(*(b.sources for b in batches)),
    )
    manifest = json.loads((Path(soak.checkpoint) / "config.json").read_text())
    audit = audit_tables(Catalog(StoreConfig(soak.db)), video_index_name(manifest["sha256"]), expected)
    runs = soak.runs_by_status()
    queries = stream.counts.summary()
    still_running = {key: count for key, count in runs.items() if key.endswith(" running")}
    passed = not audit.problems and not still_running and not queries["server_errors"] and not queries["dropped"]
    attempts = [a for o in soak.ordeals for a in o.attempts]
    return {
        "config": asdict(config),
        "passed": passed,
        "wall_s": round(time.monotonic() - started, 1),
        "generate_s": round(generated_s, 1),
        "videos": {"ok": len(expected.ok), "failed": len(expected.failed), "sources": len(expected.sources)},
        "faults": {
            fault: {
                "made": sum(a.fault == fault for a in attempts),
                "hit": sum(a.fault == fault and a.hit for a in attempts),
            }
            for fault in FAULTS
        },
        "reruns": sum(o.reruns for o in soak.ordeals),
        "unfaulted_failures": sum(o.unfaulted_failures for o in soak.ordeals),
        "commands": [{"name": o.name, "attempts": [asdict(a) for a in o.attempts]} for o in soak.ordeals],
        "queries": queries,
        "runs": runs,
        "audit": asdict(audit),
    }


def to_markdown(report: dict) -> str:
    """The verdict, the faults, the queries and what the audit found."""
    config, queries, faults = report["config"], report["queries"], report["faults"]
    made = ", ".join(f"{name} {f['made']} ({f['hit']} hit)" for name, f in faults.items())
    lines = [
        f"## soak: {config['videos']} videos in {config['batches']} batches, fault share {config['fault_share']}, "
        f"{config['clients']} query clients: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"- wall time {report['wall_s']} s (generating the videos {report['generate_s']} s)",
        f"- videos: {report['videos']['ok']} ok and {report['videos']['failed']} corrupt expected",
        f"- faults made: {made}; reruns {report['reruns']}; failures without a fault {report['unfaulted_failures']}",
        f"- queries: {queries['sent']} sent, by status {queries['by_status']}, 5xx {queries['server_errors']}, "
        f"dropped connections {queries['dropped']}, p50 {queries['p50_ms']} ms, p95 {queries['p95_ms']} ms",
        f"- `glscl runs`: {report['runs']}",
        f"- rows: {report['audit']['rows']}",
        f"- audit: {'; '.join(report['audit']['problems']) or 'nothing lost, duplicated or left unindexed'}",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    defaults = SoakConfig(root="")
    parser = argparse.ArgumentParser(prog="glscl bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="empty folder for the videos, database, logs and Prefect home")
    add_int_options(parser, defaults, INT_OPTIONS)
    parser.add_argument(
        "--fault-share", type=float, default=defaults.fault_share, help="share of attempts hit by a fault"
    )
    parser.add_argument(
        "--query-interval", type=float, default=defaults.query_interval_s, help="seconds between a client's queries"
    )
    parser.add_argument("--segment-rows", action="store_true", help="index with segment rows on IVF_HNSW_SQ")
    parser.add_argument("--out", help="also write the report as JSON to this file")
    return parser


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    options = {name: getattr(args, name) for name in INT_OPTIONS}
    return SoakConfig(
        args.root,
        fault_share=args.fault_share,
        query_interval_s=args.query_interval,
        segment_rows=args.segment_rows,
        **options,
    )


def main(argv: list[str] | None = None) -> str:
    """Command-line entry: run the soak, print its report."""
    return measure_and_report(build_parser(), lambda args: run(config_from_args(args)), to_markdown, argv)


if __name__ == "__main__":
    print(main())
