"""`glscl bench NAME`: the benchmarks in benchmarks/, each with its own options."""

from __future__ import annotations

import argparse
import contextlib
import sys

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    emit,
)

# `glscl bench NAME`: the module that runs each benchmark, and what it measures.
BENCHMARKS = {
    "scoring": ("benchmarks.scoring", "exhaustive scoring: GLSCL vs X-Pool-style cross-attention vs mean pooling"),
    "ingest": ("benchmarks.ingest_bench", "ingest stages on one clip: probe, decode, encode"),
    "ablation": ("benchmarks.ablation", "training ablations (ICL form, temporal init, recipes) on the demo data"),
    "search": ("benchmarks.search_bench", "two-stage search vs exhaustive exact GLSCL: recall and per-stage latency"),
    "hard-search": ("benchmarks.hard_gallery", "the search benchmark on hard galleries scored by a trained head"),
    "shards": ("benchmarks.shard_search", "a search gallery split into gallery shards on Ray vs one searcher"),
    "growth": ("benchmarks.growth", "search latency per stage against gallery size: fit, projection, plot"),
    "startup": ("benchmarks.startup_bench", "flow command start-up: glscl's local Prefect server vs temporary ones"),
    "serve": ("benchmarks.serve_load", "load test of glscl serve on loopback: 1-32 clients, throughput, p50/p95/p99"),
    "train-memory": ("benchmarks.train_memory", "training worker memory and pairs/s against the split's size"),
    "frame-source": ("benchmarks.frame_source", "full fine-tuning's frames: decoded per epoch or kept as JPEG"),
    "upkeep": ("benchmarks.upkeep_rounds", "index upkeep over rounds of new videos: time, recall vs a full rebuild"),
    "soak": ("benchmarks.soak", "chaos run: batches ingested and indexed under random kills while serving queries"),
    "span": ("benchmarks.span_overlap", "whether a hit's time span overlaps the event its query describes"),
    "gallery": ("benchmarks.synthetic_gallery", "write a synthetic ActivityNet-sized gallery for `glscl evaluate`"),
}


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl bench NAME [the benchmark's options]`."""
    listing = "; ".join(f"{name}: {what}" for name, (_, what) in BENCHMARKS.items())
    parser = commands.add_parser(
        "bench",
        help="benchmarks: scoring heads, ingest stages, training ablations, start-up, serving, synthetic galleries",
        description=f"Run a benchmark; everything after its name goes to it (try `glscl bench scoring -h`). {listing}.",
    )
    parser.add_argument("benchmark", choices=tuple(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")


def run_bench(args: argparse.Namespace) -> int:
    """Run the named benchmark with its own options; its report goes to standard output."""
    import importlib

    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    with contextlib.redirect_stdout(args.report_stream or sys.stdout):
        result = module.main(args.options)
    if isinstance(result, str):
        emit(result, args)
    return 0


COMMANDS = {
    "bench": Command(add_bench_parser, run_bench, flow=False),
}
