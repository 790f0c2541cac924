"""The `glscl` command line. Each command parses its options into a typed config and calls a flow function
that can be imported and called the same way from Python."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from glscl.config import HEAD_PRESETS, TrainConfig
from glscl.recipes import RECIPES
from pipelines.cli_options import (
    add_backbone_options,
    add_json_option,
    add_kind_option,
    add_ray_options,
    add_store_options,
    backbone_config,
    default,
    emit,
    key_values,
    print_report,
    ray_config,
    store_config,
)
from pipelines.configs import (
    DEFAULT_RETENTION,
    DemoConfig,
    EvaluateConfig,
    IndexConfig,
    IngestConfig,
    MaintainConfig,
    ReproduceConfig,
    ServeConfig,
    TrainFlowConfig,
)
from pipelines.console import console_policy
from pipelines.failures import console_without_tracebacks, one_line, report
from pipelines.inspect_commands import add_runs_parser, add_tables_parser, run_runs, run_tables
from pipelines.local_server import prefect_api
from pipelines.server_command import add_server_parser, run_server
from schemas.store import StoreConfig
from workers.sampling import SamplingConfig
from workers.search.config import SEGMENT_KINDS, VECTOR_INDEX_TYPES, AnnConfig, SearchConfig
from workers.sources import SourceOptions

SERVE_TOKEN_ENV = "GLSCL_SERVE_TOKEN"
RETAIN_HOURS = DEFAULT_RETENTION.total_seconds() / 3600


def add_ingest_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl ingest SOURCE... [options]`."""
    parser = commands.add_parser(
        "ingest",
        help="decode, encode and store video collections",
        description="Ingest one or more collections into LanceDB. SOURCE is a folder of videos (recursive: mp4, "
        "mkv, webm, avi, mov), a CSV/Parquet manifest with a 'path' column (optional id, split, caption), or an "
        "ActivityNet Captions annotation .json (with --video-root). Exit codes: 0 all ingested; 2 bad input "
        "(malformed manifest or annotation file, nothing written); 3 some videos failed (stored as failed rows "
        "with their reason, every good video ingested).",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="folder, manifest or annotation file")
    add_store_options(parser)
    parser.add_argument("--video-root", default=None, help="folder of the videos of an annotation file")
    parser.add_argument("--split", default=None, help="split name to record (default: from the source)")
    parser.add_argument("--dataset", default=None, help="dataset name to record (default: from the source)")
    add_backbone_options(parser)
    sampling = SamplingConfig()
    parser.add_argument(
        "--policy",
        choices=("uniform", "fps"),
        default=sampling.policy,
        help=f"frame sampling policy: K frames spread uniformly, or a fixed rate (default {sampling.policy})",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=sampling.num_frames,
        help=f"frames per video: K for uniform, the cap for fps (default {sampling.num_frames})",
    )
    parser.add_argument(
        "--fps", type=float, default=sampling.fps, help=f"sampling rate of the fps policy (default {sampling.fps})"
    )
    words, shard = default(IngestConfig, "max_words"), default(IngestConfig, "shard_size")
    parser.add_argument("--max-words", type=int, default=words, help=f"text tokens per caption (default {words})")
    parser.add_argument(
        "--shard-size", type=int, default=shard, help=f"videos per Ray job and commit (default {shard})"
    )
    parser.add_argument("--retry-failed", action="store_true", help="try again videos stored as failed")
    add_ray_options(parser, encode_actors=True)
    add_json_option(parser, "run summary")


def ingest_config(args: argparse.Namespace) -> IngestConfig:
    """The IngestConfig named by the ingest options."""
    return IngestConfig(
        sources=tuple(args.sources),
        store=store_config(args),
        backbone=backbone_config(args),
        sampling=SamplingConfig(policy=args.policy, num_frames=args.frames, fps=args.fps),
        source_options=SourceOptions(video_root=args.video_root, split=args.split, dataset=args.dataset),
        ray=ray_config(args),
        max_words=args.max_words,
        shard_size=args.shard_size,
        retry_failed=args.retry_failed,
    )


def run_ingest(args: argparse.Namespace) -> int:
    """Run the ingest flow and print its summary; return the documented exit code."""
    from pipelines.ingest import ingest_flow

    summary = ingest_flow(ingest_config(args))
    print_report(summary, args)
    return summary.exit_code


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl demo [options]`."""
    parser = commands.add_parser(
        "demo",
        help="make a synthetic ActivityNet-format dataset with ffmpeg and ingest it",
        description="Generate moving coloured shapes with ffmpeg (captions say which shape of which colour does "
        "what, in order; train and val_1 splits; deterministic by seed), then ingest both splits.",
    )
    demo = DemoConfig()
    parser.add_argument("--out", default=demo.out_dir, help=f"folder for the generated videos (default {demo.out_dir})")
    add_store_options(parser)
    parser.set_defaults(db=None)
    parser.add_argument(
        "--train-videos", type=int, default=demo.train_videos, help=f"training videos (default {demo.train_videos})"
    )
    parser.add_argument(
        "--val-videos", type=int, default=demo.val_videos, help=f"held-out videos (default {demo.val_videos})"
    )
    parser.add_argument("--seed", type=int, default=demo.seed, help=f"data and training seed (default {demo.seed})")
    parser.add_argument(
        "--epochs", type=int, default=demo.train_epochs, help=f"training epochs (default {demo.train_epochs})"
    )
    parser.add_argument("--order-negatives", action="store_true", help="train with order hard negatives")
    add_ray_options(parser, encode_actors=True)


def demo_config(args: argparse.Namespace) -> DemoConfig:
    """The DemoConfig named by the demo options (the database defaults to a folder inside --out)."""
    return DemoConfig(
        out_dir=args.out,
        store=StoreConfig(
            uri=args.db or f"{args.out}/lancedb", storage_options=key_values(args.storage_option, "--storage-option")
        ),
        train_videos=args.train_videos,
        val_videos=args.val_videos,
        seed=args.seed,
        train_epochs=args.epochs,
        order_negatives=args.order_negatives,
        ray=ray_config(args),
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print what each stage produced."""
    from pipelines.demo import run_demo_flow

    report, exit_code = run_demo_flow(demo_config(args))
    emit(report, args)
    return exit_code


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl train [options]`."""
    parser = commands.add_parser(
        "train",
        help="train the GLSCL head (or fine-tune CLIP too) on a split's stored features",
        description="Train GLSCL on the frames and texts of a split stored by `glscl ingest`, evaluating on a "
        "held-out split as it goes; writes checkpoints (safetensors + JSON), history, a PNG of the curves and a "
        "summary next to the untrained head and mean pooling. Re-running with the same --output resumes.",
    )
    flow, train = TrainFlowConfig(), TrainConfig()
    add_store_options(parser)
    add_backbone_options(parser)
    parser.add_argument("--split", default=flow.split, help=f"training split (default {flow.split})")
    parser.add_argument(
        "--val-split", default=flow.val_split, help=f"held-out split, or '' for none (default {flow.val_split})"
    )
    add_kind_option(parser, TrainFlowConfig)
    parser.add_argument(
        "--max-words",
        type=int,
        default=flow.max_words,
        help=f"text length the texts were ingested with (default {flow.max_words})",
    )
    parser.add_argument(
        "--mode",
        choices=("head", "full"),
        default=train.mode,
        help=f"head: CLIP frozen, stored features; full: fine-tune CLIP at clip_lr too (default {train.mode})",
    )
    parser.add_argument(
        "--head",
        choices=sorted(HEAD_PRESETS),
        default=flow.head_preset,
        help=f"head hyperparameters: the paper's or a tiny preset for the demo backbone (default {flow.head_preset})",
    )
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=flow.recipe,
        help=f"training recipe: the project's or the authors' released training exactly, see README (default "
        f"{flow.recipe})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one GLSCLConfig field, e.g. --set num_queries=12 --set lr=5e-5 (repeatable)",
    )
    parser.add_argument("--epochs", type=int, default=train.epochs, help=f"training epochs (default {train.epochs})")
    parser.add_argument(
        "--batch-size", type=int, default=train.batch_size, help=f"pairs per global batch (default {train.batch_size})"
    )
    parser.add_argument("--seed", type=int, default=train.seed, help=f"training seed (default {train.seed})")
    parser.add_argument(
        "--eval-every", type=int, default=train.eval_every, help="evaluate every N steps (default 0: each epoch)"
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=train.log_every,
        help=f"log the loss terms every N steps (default {train.log_every})",
    )
    parser.add_argument(
        "--order-negatives",
        action="store_true",
        help="add each video's sentences in reverse order as a hard negative text (teaches event order)",
    )
    parser.add_argument(
        "--workers", type=int, default=flow.workers, help=f"Ray Train workers (default {flow.workers}: in-process)"
    )
    parser.add_argument(
        "--output", default=flow.output_dir, help=f"run folder: checkpoints, history, plots (default {flow.output_dir})"
    )
    add_ray_options(parser)
    add_json_option(parser)


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    """--set KEY=VALUE pairs with each value read as JSON where it parses (numbers, booleans), else as text."""
    values: dict[str, object] = {}
    for key, text in key_values(pairs, "--set").items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def train_config(args: argparse.Namespace) -> TrainFlowConfig:
    """The TrainFlowConfig named by the train options."""
    return TrainFlowConfig(
        store=store_config(args),
        backbone=backbone_config(args),
        split=args.split,
        val_split=args.val_split or None,
        kind=args.kind,
        max_words=args.max_words,
        head_preset=args.head,
        head_overrides=_overrides(args.set),
        recipe=args.recipe,
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            eval_every=args.eval_every,
            log_every=args.log_every,
            mode=args.mode,
            order_negatives=args.order_negatives,
        ),
        output_dir=args.output,
        workers=args.workers,
        ray=ray_config(args),
    )


def run_train(args: argparse.Namespace) -> int:
    """Run the train flow and print its summary."""
    from pipelines.train import train_flow

    summary = train_flow(train_config(args))
    print_report(summary, args)
    return 0


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl evaluate --checkpoint DIR [options]`."""
    parser = commands.add_parser(
        "evaluate",
        help="exact retrieval metrics of a checkpoint on a whole split, sharded on Ray",
        description="Score every text against every video of a split with a trained checkpoint, in gallery shards "
        "on Ray actors that each read their slice from LanceDB; ranks are tie-safe (a tie never helps) and no "
        "process holds the texts x videos matrix. Writes report.json, report.md and recall_at_k.png.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder written by glscl train")
    add_store_options(parser)
    evaluate = EvaluateConfig(checkpoint="")
    parser.add_argument("--split", default=evaluate.split, help=f"split to evaluate (default {evaluate.split})")
    add_kind_option(parser, EvaluateConfig)
    parser.add_argument(
        "--shard-videos",
        type=int,
        default=evaluate.shard_videos,
        help=f"gallery videos per Ray shard (default {evaluate.shard_videos})",
    )
    parser.add_argument(
        "--dual-softmax",
        type=float,
        default=None,
        metavar="T",
        help="also report text-to-video metrics after dual-softmax re-normalisation at temperature T (an "
        "inference-time extra, shown apart from the main numbers; off by default)",
    )
    parser.add_argument("--output", default=evaluate.output_dir, help=f"report folder (default {evaluate.output_dir})")
    add_ray_options(parser)
    add_json_option(parser, "report")


def evaluate_config(args: argparse.Namespace) -> EvaluateConfig:
    """The EvaluateConfig named by the evaluate options."""
    return EvaluateConfig(
        checkpoint=args.checkpoint,
        store=store_config(args),
        split=args.split,
        kind=args.kind,
        shard_videos=args.shard_videos,
        output_dir=args.output,
        dual_softmax=args.dual_softmax,
        ray=ray_config(args),
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluate flow and print its report."""
    from pipelines.evaluate import evaluate_flow

    print_report(evaluate_flow(evaluate_config(args)), args)
    return 0


def add_maintain_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl maintain [options]`."""
    parser = commands.add_parser(
        "maintain",
        help="table upkeep: compact small fragments, update indexes, remove old versions",
        description="Keep up every table of a database (or the --table ones): compact the small fragments each "
        "commit leaves, add new rows to existing indexes, and remove table versions older than --retain-hours. "
        "Reports fragments, rows, versions and unindexed rows before and after, and fails if a stored row was "
        "lost or duplicated. Safe while ingest runs, as long as --retain-hours is above zero.",
    )
    add_store_options(parser)
    parser.add_argument(
        "--retain-hours",
        type=float,
        default=RETAIN_HOURS,
        help=f"keep versions younger than this (default {RETAIN_HOURS:g}); 0 keeps only the newest and breaks any "
        "writer working on the table at that moment",
    )
    parser.add_argument(
        "--table", action="append", default=[], help="table to keep up (repeatable; default: every table)"
    )
    add_json_option(parser)


def maintain_config(args: argparse.Namespace) -> MaintainConfig:
    """The MaintainConfig named by the maintain options."""
    return MaintainConfig(
        store=store_config(args),
        retain_versions_older_than=timedelta(hours=args.retain_hours),
        tables=tuple(args.table),
    )


def run_maintain(args: argparse.Namespace) -> int:
    """Run the maintain flow and print its summary."""
    from pipelines.maintain import maintain_flow

    print_report(maintain_flow(maintain_config(args)), args)
    return 0


# `glscl bench NAME`: the module that runs each benchmark, and what it measures.
BENCHMARKS = {
    "scoring": ("benchmarks.scoring", "exhaustive scoring: GLSCL vs X-Pool-style cross-attention vs mean pooling"),
    "ingest": ("benchmarks.ingest_bench", "ingest stages on one clip: probe, decode, encode"),
    "ablation": ("benchmarks.ablation", "training ablations (ICL form, temporal init, recipes) on the demo data"),
    "search": ("benchmarks.search_bench", "two-stage search vs exhaustive exact GLSCL: recall and per-stage latency"),
    "hard-search": ("benchmarks.hard_gallery", "the search benchmark on hard galleries scored by a trained head"),
    "startup": ("benchmarks.startup_bench", "flow command start-up: glscl's local Prefect server vs temporary ones"),
    "serve": ("benchmarks.serve_load", "load test of glscl serve on loopback: 1-32 clients, throughput, p50/p95/p99"),
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


def add_index_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl index --checkpoint DIR [options]`."""
    parser = commands.add_parser(
        "index",
        help="encode every ingested video once with a checkpoint and build the search indexes",
        description="Write the checkpoint's video_index table (encoded frames for exact re-ranking, concept "
        "vectors, projected ANN vectors per time segment and filter metadata), then build or refresh its vector, "
        "full-text and scalar indexes. Re-running adds only new videos and folds them into the indexes.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder written by glscl train")
    add_store_options(parser)
    parser.add_argument("--split", action="append", default=[], help="index only this split (repeatable)")
    ann, shard = AnnConfig(), default(IndexConfig, "shard_videos")
    parser.add_argument(
        "--vector-dim",
        type=int,
        default=ann.vector_dim,
        help=f"ANN vector width after projection (default {ann.vector_dim})",
    )
    parser.add_argument(
        "--segments", type=int, default=ann.segments, help=f"ANN vectors per video, by time (default {ann.segments})"
    )
    parser.add_argument(
        "--segment-kind",
        choices=SEGMENT_KINDS,
        default=ann.segment_kind,
        help=f"time: segment means; peaks: single frames of distinct content (default {ann.segment_kind})",
    )
    parser.add_argument(
        "--index-type",
        choices=VECTOR_INDEX_TYPES,
        default=ann.index_type,
        help=f"vector index type (default {ann.index_type})",
    )
    parser.add_argument(
        "--min-rows",
        type=int,
        default=ann.min_rows,
        help=f"build the vector index from this many videos; below it queries scan (default {ann.min_rows})",
    )
    parser.add_argument("--partitions", type=int, default=None, help="IVF partitions (default sqrt(segment vectors))")
    parser.add_argument("--sub-vectors", type=int, default=None, help="PQ sub-vectors (default width / 8)")
    parser.add_argument("--shard-videos", type=int, default=shard, help=f"videos per Ray task (default {shard})")
    add_ray_options(parser)
    add_json_option(parser)


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The IndexConfig named by the index options."""
    return IndexConfig(
        checkpoint=args.checkpoint,
        store=store_config(args),
        splits=tuple(args.split),
        shard_videos=args.shard_videos,
        ann=AnnConfig(
            vector_dim=args.vector_dim,
            segments=args.segments,
            segment_kind=args.segment_kind,
            index_type=args.index_type,
            min_rows=args.min_rows,
            num_partitions=args.partitions,
            num_sub_vectors=args.sub_vectors,
        ),
        ray=ray_config(args),
    )


def run_index(args: argparse.Namespace) -> int:
    """Run the index flow and print its summary."""
    from pipelines.index import index_flow

    print_report(index_flow(index_config(args)), args)
    return 0


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, database, query backbone and ANN settings shared by `query` and `serve`."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder whose video index to search")
    add_store_options(parser)
    add_backbone_options(parser, from_checkpoint=True)
    search = SearchConfig(checkpoint="")
    parser.add_argument(
        "--candidates",
        type=int,
        default=search.candidates,
        help=f"ANN candidates re-ranked exactly (default {search.candidates})",
    )
    parser.add_argument(
        "--nprobes",
        type=int,
        default=search.nprobes,
        help=f"IVF partitions probed per query on galleries of {search.probe_all_below} videos or more, where "
        f"smaller ones probe all (default {search.nprobes})",
    )
    parser.add_argument(
        "--refine-factor", type=int, default=search.refine_factor, help="LanceDB refine factor (default off)"
    )
    parser.add_argument(
        "--index-cache-gb",
        type=float,
        default=search.index_cache_gb,
        help="LanceDB index cache in GiB (default LanceDB's); size it to hold every segment index (RESULTS.md has "
        "sizes)",
    )


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig named by the search options."""
    return SearchConfig(
        checkpoint=args.checkpoint,
        store=store_config(args),
        backbone=backbone_config(args),
        candidates=args.candidates,
        nprobes=args.nprobes,
        refine_factor=args.refine_factor,
        index_cache_gb=args.index_cache_gb,
        prewarm=getattr(args, "prewarm", False),
    )


def add_query_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl query TEXT [options]`."""
    parser = commands.add_parser(
        "query",
        help="text-to-video search over a checkpoint's video index",
        description="Rank the indexed videos for TEXT: ANN candidates re-ranked with the exact GLSCL score "
        "(--exact scores the whole gallery; --hybrid mixes in full-text matches on captions). Filters are "
        "COLUMN OP VALUE with OP one of = != < <= > >= in, on video_id, dataset, split, source_path, duration_s, "
        "ingested_at (ISO time), e.g. --where split=val_1 --where 'duration_s>=30' --where 'dataset in a,b'.",
    )
    parser.add_argument("text", help="the query")
    parser.add_argument("-k", type=int, default=10, help="results to return (default 10)")
    parser.add_argument("--where", action="append", default=[], help="metadata filter (repeatable, ANDed)")
    parser.add_argument("--exact", action="store_true", help="score every video exactly (slow on big galleries)")
    parser.add_argument("--hybrid", action="store_true", help="fuse full-text matches on captions (RRF)")
    add_search_options(parser)
    add_json_option(parser, "result")


def _result_markdown(result) -> str:
    stages = " · ".join(f"{stage} {ms:.1f}" for stage, ms in result.timings_ms.items() if stage != "total")
    lines = [
        f"## {result.mode} search: {result.query!r} ({result.candidates} candidates, "
        f"{result.timings_ms['total']:.1f} ms)",
        "",
        f"Time per stage: {stages} ms",
        "",
        "| rank | score | video | span (s) | path |",
        "|---|---|---|---|---|",
    ]
    for hit in result.hits:
        span = f"{hit.span_s[0]:.1f}-{hit.span_s[1]:.1f}" if hit.span_s else ""
        lines.append(f"| {hit.rank} | {hit.score:.4f} | {hit.video_id} | {span} | {hit.source_path} |")
    return "\n".join(lines)


def run_query(args: argparse.Namespace) -> int:
    """Answer one query and print the ranked videos."""
    from workers.search.filters import parse_filter
    from workers.search.searcher import Searcher

    filters = [parse_filter(text) for text in args.where]
    result = Searcher(search_config(args)).search(args.text, args.k, filters, exact=args.exact, hybrid=args.hybrid)
    emit(json.dumps(result.to_dict(), indent=2) if args.json else _result_markdown(result), args)
    return 0


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl serve --checkpoint DIR [options]`."""
    parser = commands.add_parser(
        "serve",
        help="HTTP search API and web page (127.0.0.1 by default)",
        description="Serve POST /search (JSON in and out; schema at /openapi.json, docs at /docs), thumbnails, "
        "videos and a search page at /, keeping the model and tables warm. A host other machines can reach needs "
        "a token (GLSCL_SERVE_TOKEN, or --token) unless --insecure; exit code 2 when refused.",
    )
    add_search_options(parser)
    serve = ServeConfig()
    parser.add_argument("--host", default=serve.host, help=f"address to listen on (default {serve.host})")
    parser.add_argument("--port", type=int, default=serve.port, help=f"port, 0 for any free one (default {serve.port})")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require Authorization: Bearer TOKEN on every route but /health (default: ${SERVE_TOKEN_ENV}, else "
        "none); prefer the variable, a command line is visible to other users",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without a token (anyone can query)"
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin, e.g. https://app.example (repeatable; default: no CORS)",
    )
    parser.add_argument("--workers", type=int, default=serve.workers, help="query threads (default: one per core)")
    parser.add_argument(
        "--queue",
        type=int,
        default=serve.queue,
        help=f"queries waiting for a worker before new ones get 503 (default {serve.queue})",
    )
    parser.add_argument(
        "--thumbnail-processes",
        type=int,
        default=serve.thumbnail_processes,
        help=f"ffmpeg processes cutting thumbnails at once (default {serve.thumbnail_processes})",
    )
    parser.add_argument(
        "--thumbnail-timeout",
        type=float,
        default=serve.thumbnail_timeout_s,
        help=f"seconds before a thumbnail's ffmpeg is killed (default {serve.thumbnail_timeout_s:g})",
    )
    parser.add_argument(
        "--exact-max-videos",
        type=int,
        default=serve.exact_max_videos,
        help=f"refuse exact mode on larger galleries, 0 for never (default {serve.exact_max_videos})",
    )
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="do not load the vector indexes into memory at start (first queries then read them from disk)",
    )


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig named by the serve options and $GLSCL_SERVE_TOKEN; refuses an open host without a token."""
    return ServeConfig(
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get(SERVE_TOKEN_ENV) or None,
        insecure=args.insecure,
        cors_origins=tuple(args.cors_origin),
        workers=args.workers,
        queue=args.queue,
        thumbnail_processes=args.thumbnail_processes,
        thumbnail_timeout_s=args.thumbnail_timeout,
        exact_max_videos=args.exact_max_videos or None,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (the serve options are checked before the model loads)."""
    config = serve_config(args)
    from pipelines.serve import serve

    serve(search_config(args), config)
    return 0


def _timing_pair(text: str) -> tuple[str, int]:
    """MODE:BATCH for --time-steps."""
    mode, sep, batch = text.partition(":")
    if not sep or mode not in ("head", "full") or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"expected head:BATCH or full:BATCH, got {text!r}")
    return mode, int(batch)


def add_reproduce_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl reproduce activitynet ANNOTATIONS... --video-root DIR [options]`."""
    parser = commands.add_parser(
        "reproduce",
        help="reproduce the paper's ActivityNet table in one resumable run (or --dry-run it offline)",
        description="Ingest ActivityNet Captions with the paper's protocol (ViT-B/32 OpenAI weights with QuickGELU, "
        "1 fps, 64 frames, 64 words), train GLSCL with the authors' recipe, evaluate val_1 both ways, time the "
        "scoring head, and write report.md/report.json beside the paper's numbers. Finished stages are skipped when "
        "the same command runs again; a stopped training resumes. --dry-run does all of it on generated videos "
        "with random weights at the paper's shapes.",
    )
    parser.add_argument("dataset", choices=("activitynet",), help="the benchmark to reproduce")
    parser.add_argument("annotations", nargs="*", help="train.json and val_1.json (ActivityNet Captions format)")
    parser.add_argument("--video-root", default="", help="folder holding the videos (v_<id>.* or <id>.*)")
    out, weights, mode, epochs, batch, workers = (
        default(ReproduceConfig, name) for name in ("out_dir", "weights", "mode", "epochs", "batch_size", "workers")
    )
    parser.add_argument("--out", default=out, help=f"run folder: database, runs, report (default {out})")
    parser.add_argument(
        "--weights",
        default=weights,
        help=f"CLIP weights: an open_clip tag (default {weights}, downloaded by open_clip) or a local checkpoint file",
    )
    parser.add_argument("--mode", choices=("head", "full"), default=mode, help=f"head-only or full (default {mode})")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--batch-size", type=int, default=batch, help=f"global batch (default {batch}, the authors')")
    parser.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    parser.add_argument(
        "--workers", type=int, default=workers, help=f"Ray Train workers (default {workers}: in-process)"
    )
    parser.add_argument(
        "--time-steps",
        action="append",
        type=_timing_pair,
        default=[],
        metavar="MODE:BATCH",
        help="before training, time steps of head-only or full training at this batch (repeatable)",
    )
    parser.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STAGE",
        help="run this stage again although it finished: ingest, timing, train, evaluate or bench (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="generated videos, random weights, two steps")
    add_ray_options(parser)
    add_json_option(parser)


def reproduce_config(args: argparse.Namespace) -> ReproduceConfig:
    """The ReproduceConfig named by the reproduce options."""
    from pipelines.reproduce import dry_run_config

    settings = {
        "mode": args.mode,
        "redo": tuple(args.redo),
        "ray": ray_config(args),
    }
    if args.time_steps:
        settings["timing"] = tuple(args.time_steps)
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    if args.dry_run:
        return dry_run_config(args.out, **settings)
    return ReproduceConfig(
        out_dir=args.out,
        annotations=tuple(args.annotations),
        video_root=args.video_root,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        workers=args.workers,
        **settings,
    )


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the reproduction and print its report."""
    from pipelines.reproduce import reproduce

    report, summary = reproduce(reproduce_config(args))
    emit(json.dumps(summary, indent=2, default=str) if args.json else report, args)
    return 0


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
    add_ingest_parser(commands)
    add_demo_parser(commands)
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_bench_parser(commands)
    add_maintain_parser(commands)
    add_index_parser(commands)
    add_query_parser(commands)
    add_serve_parser(commands)
    add_reproduce_parser(commands)
    add_server_parser(commands)
    add_runs_parser(commands)
    add_tables_parser(commands)
    return parser


_RUNNERS = {
    "ingest": run_ingest,
    "demo": run_demo,
    "train": run_train,
    "evaluate": run_evaluate,
    "bench": run_bench,
    "maintain": run_maintain,
    "index": run_index,
    "query": run_query,
    "serve": run_serve,
    "reproduce": run_reproduce,
    "server": run_server,
    "runs": run_runs,
    "tables": run_tables,
}
FLOW_COMMANDS = frozenset({"ingest", "demo", "train", "evaluate", "index", "maintain", "reproduce"})
VERBOSE_FLAGS = frozenset({"-v", "--verbose"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glscl` console script.

    Standard output carries only the command's report, so `--json` output can be piped into a parser; anything
    else printed while the command runs goes to standard error (Ray forwards its workers' and raylet's log
    lines, such as a worker it restarted, to the driver's stdout). Flow commands run against the Prefect API that
    `prefect_api` chooses (PREFECT_API_URL, else glscl's local server). Every error ends in one line on standard
    error and a documented exit code (pipelines/failures.py); `-v/--verbose`, anywhere on the line, adds tracebacks
    and everything else the console policy (pipelines/console.py) keeps off the terminal. Progress bars are drawn on
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
        with contextlib.ExitStack() as stack:
            if args.command in FLOW_COMMANDS:
                stack.enter_context(prefect_api(warn))
            stack.enter_context(console_policy(args.verbose, bars, args.log_file))
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            if not args.verbose:
                stack.enter_context(console_without_tracebacks())
            return _RUNNERS[args.command](args)
    except (Exception, KeyboardInterrupt) as error:
        return report(args.command, error, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
