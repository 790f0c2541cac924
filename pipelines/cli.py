"""The `glscl` command line. Each command parses its options into a typed config and calls a flow function
that can be imported and called the same way from Python."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from glscl.backbone import TINY_MODEL, BackboneConfig
from glscl.config import HEAD_PRESETS
from glscl.recipes import RECIPES
from pipelines.console import console_policy
from pipelines.failures import console_without_tracebacks, one_line, report
from pipelines.local_server import prefect_api
from pipelines.server_command import add_server_parser, run_server
from schemas.catalog import StoreConfig
from workers.ray_jobs import RayConfig
from workers.sampling import SamplingConfig
from workers.search.indexes import VECTOR_INDEX_TYPES, AnnConfig
from workers.sources import SourceOptions

DEFAULT_DB = "./data/lancedb"


def _storage_options(pairs: Sequence[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        options[key] = value
    return options


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """--db and --storage-option, shared by every command that reads or writes tables."""
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"LanceDB URI: a folder or s3://bucket/path (default {DEFAULT_DB})"
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="object-store setting passed to LanceDB, e.g. aws_endpoint=http://127.0.0.1:9000 (repeatable); "
        "AWS_* environment variables are honoured too",
    )


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    """--model, --pretrained and --backbone-seed: which open_clip backbone encodes frames and texts."""
    parser.add_argument(
        "--model",
        default=TINY_MODEL,
        help=f"open_clip model name (default {TINY_MODEL}, a tiny random-weight config for offline use; "
        "real use: ViT-B-32)",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag (e.g. openai, downloaded when online) or a local checkpoint file; "
        "omitted: random weights, announced in the output",
    )
    parser.add_argument("--backbone-seed", type=int, default=0, help="seed of the random backbone weights (default 0)")


def add_ray_address_option(parser: argparse.ArgumentParser) -> None:
    """--ray-address: run the command's Ray work on an existing cluster."""
    parser.add_argument("--ray-address", default=None, help="join an existing Ray cluster (default: start Ray locally)")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """--ray-address and stage sizes."""
    add_ray_address_option(parser)
    parser.add_argument("--encode-actors", type=int, default=1, help="model actors per encode stage (default 1)")


def add_kind_option(parser: argparse.ArgumentParser) -> None:
    """--kind: which texts pair with videos, shared by train and evaluate."""
    parser.add_argument(
        "--kind",
        choices=("paragraph", "sentence"),
        default="paragraph",
        help="paragraph-to-video (ActivityNet protocol, default) or sentence-to-video pairs",
    )


def print_report(report, args: argparse.Namespace) -> None:
    """Print a flow's summary dataclass as JSON (--json) or as its Markdown, to the report stream."""
    emit(json.dumps(asdict(report), indent=2, default=str) if args.json else report.to_markdown(), args)


def emit(text: str, args: argparse.Namespace) -> None:
    """Write a command's report to `args.report_stream` (standard output unless `main` kept it aside)."""
    print(text, file=args.report_stream or sys.stdout, flush=True)


def store_config(args: argparse.Namespace) -> StoreConfig:
    """The StoreConfig named by --db and --storage-option."""
    return StoreConfig(uri=args.db, storage_options=_storage_options(args.storage_option))


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    """The BackboneConfig named by --model, --pretrained and --backbone-seed."""
    return BackboneConfig(model_name=args.model, pretrained=args.pretrained, seed=args.backbone_seed)


def ray_config(args: argparse.Namespace) -> RayConfig:
    """The RayConfig named by --ray-address and --encode-actors."""
    return RayConfig(address=args.ray_address, encode_actors=args.encode_actors)


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
    parser.add_argument("--policy", choices=("uniform", "fps"), default="uniform", help="frame sampling policy")
    parser.add_argument(
        "--frames", type=int, default=12, help="frames per video: K for uniform, the cap for fps (default 12)"
    )
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate of the fps policy (default 1.0)")
    parser.add_argument("--max-words", type=int, default=32, help="text tokens per caption (default 32)")
    parser.add_argument("--shard-size", type=int, default=256, help="videos per Ray job and commit (default 256)")
    parser.add_argument("--retry-failed", action="store_true", help="try again videos stored as failed")
    add_ray_options(parser)
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")


def ingest_config(args: argparse.Namespace):
    """The IngestConfig named by the ingest options."""
    from pipelines.ingest import IngestConfig

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
    parser.add_argument("--out", default="./data/demo", help="folder for the generated videos (default ./data/demo)")
    add_store_options(parser)
    parser.set_defaults(db=None)
    parser.add_argument("--train-videos", type=int, default=300, help="training videos (default 300)")
    parser.add_argument("--val-videos", type=int, default=100, help="held-out videos (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    parser.add_argument("--epochs", type=int, default=80, help="training epochs (default 80)")
    parser.add_argument("--order-negatives", action="store_true", help="train with order hard negatives")
    add_ray_options(parser)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print what each stage produced."""
    from pipelines.demo import DemoConfig, run_demo_flow

    config = DemoConfig(
        out_dir=args.out,
        store=StoreConfig(uri=args.db or f"{args.out}/lancedb", storage_options=_storage_options(args.storage_option)),
        train_videos=args.train_videos,
        val_videos=args.val_videos,
        seed=args.seed,
        train_epochs=args.epochs,
        order_negatives=args.order_negatives,
        ray=ray_config(args),
    )
    report, exit_code = run_demo_flow(config)
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
    add_store_options(parser)
    add_backbone_options(parser)
    parser.add_argument("--split", default="train", help="training split (default train)")
    parser.add_argument("--val-split", default="val_1", help="held-out split, or '' for none (default val_1)")
    add_kind_option(parser)
    parser.add_argument("--max-words", type=int, default=32, help="text length the texts were ingested with")
    parser.add_argument(
        "--mode",
        choices=("head", "full"),
        default="head",
        help="head: CLIP frozen, stored features (default); full: fine-tune CLIP at clip_lr too",
    )
    parser.add_argument(
        "--head",
        choices=sorted(HEAD_PRESETS),
        default="paper",
        help="head hyperparameters: the paper's (default) or a tiny preset for the demo backbone",
    )
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="project",
        help="training recipe: the project's (default) or the authors' released training exactly (see README)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one GLSCLConfig field, e.g. --set num_queries=12 --set lr=5e-5 (repeatable)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: each epoch)")
    parser.add_argument("--log-every", type=int, default=10, help="log the loss terms every N steps (default 10)")
    parser.add_argument(
        "--order-negatives",
        action="store_true",
        help="add each video's sentences in reverse order as a hard negative text (teaches event order)",
    )
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1: in-process)")
    parser.add_argument("--output", default="./data/runs/train", help="run folder (checkpoints, history, plots)")
    add_ray_address_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def train_config(args: argparse.Namespace):
    """The TrainFlowConfig named by the train options."""
    from glscl.training import TrainConfig
    from pipelines.train import TrainFlowConfig

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
        ray=RayConfig(address=args.ray_address),
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
    parser.add_argument("--split", default="val_1", help="split to evaluate (default val_1)")
    add_kind_option(parser)
    parser.add_argument("--shard-videos", type=int, default=2048, help="gallery videos per Ray shard (default 2048)")
    parser.add_argument(
        "--dual-softmax",
        type=float,
        default=None,
        metavar="T",
        help="also report text-to-video metrics after dual-softmax re-normalisation at temperature T (an "
        "inference-time extra, shown apart from the main numbers; off by default)",
    )
    parser.add_argument("--output", default="./data/runs/evaluate", help="report folder")
    add_ray_address_option(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluate flow and print its report."""
    from pipelines.evaluate import EvaluateConfig, evaluate_flow

    report = evaluate_flow(
        EvaluateConfig(
            checkpoint=args.checkpoint,
            store=store_config(args),
            split=args.split,
            kind=args.kind,
            shard_videos=args.shard_videos,
            output_dir=args.output,
            dual_softmax=args.dual_softmax,
            ray=RayConfig(address=args.ray_address),
        )
    )
    print_report(report, args)
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
        default=168.0,
        help="keep versions younger than this (default 168 = 7 days); 0 keeps only the newest and breaks any "
        "writer working on the table at that moment",
    )
    parser.add_argument(
        "--table", action="append", default=[], help="table to keep up (repeatable; default: every table)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_maintain(args: argparse.Namespace) -> int:
    """Run the maintain flow and print its summary."""
    from datetime import timedelta

    from pipelines.maintain import MaintainConfig, maintain_flow

    summary = maintain_flow(
        MaintainConfig(
            store=store_config(args),
            retain_versions_older_than=timedelta(hours=args.retain_hours),
            tables=tuple(args.table),
        )
    )
    print_report(summary, args)
    return 0


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl bench scoring [options]` and `glscl bench ingest [options]`."""
    parser = commands.add_parser(
        "bench",
        help="benchmarks: exhaustive scoring (GLSCL vs X-Pool-style vs mean pooling), ingest stages, or training "
        "ablations on the demo data",
        description="Run a benchmark; everything after the benchmark name goes to it (try `glscl bench scoring -h`).",
    )
    parser.add_argument("benchmark", choices=("scoring", "ingest", "ablation"))
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")


def run_bench(args: argparse.Namespace) -> int:
    """Run the named benchmark with its own options."""
    if args.benchmark == "scoring":
        from benchmarks.scoring import main as scoring_main

        scoring_main(args.options)
    elif args.benchmark == "ablation":
        from benchmarks.ablation import main as ablation_main

        emit(ablation_main(args.options), args)
    else:
        from benchmarks.ingest_bench import main as ingest_main

        ingest_main(args.options)
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
    ann = AnnConfig()
    parser.add_argument("--vector-dim", type=int, default=ann.vector_dim, help="ANN vector width after projection")
    parser.add_argument("--segments", type=int, default=ann.segments, help="ANN vectors per video (time segments)")
    parser.add_argument("--index-type", choices=VECTOR_INDEX_TYPES, default=ann.index_type, help="vector index type")
    parser.add_argument("--min-rows", type=int, default=ann.min_rows, help="build the vector index from this many rows")
    parser.add_argument("--partitions", type=int, default=None, help="IVF partitions (default sqrt(segment vectors))")
    parser.add_argument("--sub-vectors", type=int, default=None, help="PQ sub-vectors (default width / 8)")
    parser.add_argument("--shard-videos", type=int, default=512, help="videos per Ray task (default 512)")
    add_ray_address_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_index(args: argparse.Namespace) -> int:
    """Run the index flow and print its summary."""
    from pipelines.index import IndexConfig, index_flow

    summary = index_flow(
        IndexConfig(
            checkpoint=args.checkpoint,
            store=store_config(args),
            splits=tuple(args.split),
            shard_videos=args.shard_videos,
            ann=AnnConfig(
                vector_dim=args.vector_dim,
                segments=args.segments,
                index_type=args.index_type,
                min_rows=args.min_rows,
                num_partitions=args.partitions,
                num_sub_vectors=args.sub_vectors,
            ),
            ray=RayConfig(address=args.ray_address),
        )
    )
    print_report(summary, args)
    return 0


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, database, query backbone and ANN settings shared by `query` and `serve`."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder whose video index to search")
    add_store_options(parser)
    add_backbone_options(parser)
    parser.add_argument("--candidates", type=int, default=200, help="ANN candidates re-ranked exactly")
    parser.add_argument("--nprobes", type=int, default=32, help="IVF partitions probed per query")
    parser.add_argument("--refine-factor", type=int, default=None, help="LanceDB refine factor (default off)")
    parser.add_argument(
        "--index-cache-gb",
        type=float,
        default=None,
        help="LanceDB index cache in GiB (default 6); size it to hold every segment index (RESULTS.md has sizes)",
    )


def search_config(args: argparse.Namespace):
    """The SearchConfig named by the search options."""
    from workers.search.searcher import SearchConfig

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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _result_markdown(result) -> str:
    lines = [
        f"## {result.mode} search: {result.query!r} ({result.candidates} candidates, "
        f"{result.timings_ms['total']:.1f} ms)",
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
        description="Serve POST /search (JSON in and out; schema at /openapi.json, docs at /docs), thumbnails and "
        "a search page at /, keeping the model and tables warm.",
    )
    add_search_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="do not load the vector indexes into memory at start (first queries then read them from disk)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from pipelines.serve import serve

    serve(search_config(args), args.host, args.port)
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
    parser.add_argument("--out", default="./data/reproduce/activitynet", help="run folder (database, runs, report)")
    parser.add_argument(
        "--weights",
        default="openai",
        help="CLIP weights: an open_clip tag (default openai, downloaded by open_clip) or a local checkpoint file",
    )
    parser.add_argument("--mode", choices=("head", "full"), default="head", help="head-only (default) or full")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default 64, the authors')")
    parser.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1: in-process)")
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
    add_ray_address_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def reproduce_config(args: argparse.Namespace):
    """The ReproduceConfig named by the reproduce options."""
    from pipelines.reproduce import ReproduceConfig, dry_run_config

    settings = {
        "mode": args.mode,
        "redo": tuple(args.redo),
        "ray": RayConfig(address=args.ray_address),
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
