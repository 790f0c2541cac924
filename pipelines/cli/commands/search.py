"""`glscl query` and `glscl serve`: search a checkpoint's video index once, or keep it warm behind HTTP."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_backbone_options,
    add_json_option,
    add_ray_options,
    add_store_options,
    backbone_config,
    emit,
    ray_config,
    store_config,
)
from pipelines.configs import (
    ServeConfig,
)
from workers.search.config import SearchConfig

SERVE_TOKEN_ENV = "GLSCL_SERVE_TOKEN"


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
        "--ef",
        type=int,
        default=search.ef,
        help="HNSW indexes: candidate list kept while searching the graph (default twice --candidates)",
    )
    parser.add_argument(
        "--index-cache-gb",
        type=float,
        default=search.index_cache_gb,
        help="LanceDB index cache in GiB (default LanceDB's); size it to hold every segment index (RESULTS.md has "
        "sizes)",
    )
    parser.add_argument(
        "--gallery-shards",
        type=int,
        default=1,
        help="search an index built with `glscl index --gallery-shards N`: one Ray actor per shard, on the local Ray "
        "or the cluster of --ray-address (default 1)",
    )
    add_ray_options(parser)


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig named by the search options."""
    return SearchConfig(
        checkpoint=args.checkpoint,
        store=store_config(args),
        backbone=backbone_config(args),
        candidates=args.candidates,
        nprobes=args.nprobes,
        refine_factor=args.refine_factor,
        ef=args.ef,
        index_cache_gb=args.index_cache_gb,
        prewarm=getattr(args, "prewarm", False),
    )


def check_search(args: argparse.Namespace) -> None:
    """At once, before any model loads: the checkpoint folder, and for a local database that it exists and holds the
    checkpoint's video index; when it does not, the error names the databases nearby that do (searching never
    creates a database)."""
    from pathlib import Path

    from glscl.files import check_checkpoint_folder
    from schemas.gallery_shards import shard_table_name
    from schemas.store import databases_near, holds_table, is_local, local_path
    from schemas.tables import video_index_name

    check_checkpoint_folder(args.checkpoint)
    store = store_config(args)
    if not is_local(store.uri):
        return
    database = local_path(store.uri)
    manifest = json.loads((Path(args.checkpoint) / "config.json").read_text())
    index = shard_table_name(video_index_name(str(manifest.get("sha256", ""))), 0, getattr(args, "gallery_shards", 1))
    if holds_table(database, index):
        return
    checkpoint = Path(args.checkpoint).resolve()
    near = databases_near([Path.cwd(), *checkpoint.parents[:3]])
    holding = [db for db in near if holds_table(db, index)]
    if holding:
        fix = f"its index is in {', '.join(map(str, holding))}: use --db {holding[0]}"
    else:
        listed = ", ".join(map(str, near[:5])) or "none"
        fix = f"no database nearby holds it (databases nearby: {listed}); build it with `glscl index --checkpoint "
        fix += f"{args.checkpoint} --db DB` on the database the videos were ingested into"
    where = f"no video index for this checkpoint in {database}" if database.exists() else f"no database at {database}"
    raise FileNotFoundError(f"{where}; {fix}")


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
    one_off = dataclasses.replace(search_config(args), text_threads=os.cpu_count())  # nothing else runs beside it
    if args.gallery_shards > 1:
        result = _sharded_query(args, one_off, filters)
    else:
        result = Searcher(one_off).search(args.text, args.k, filters, exact=args.exact, hybrid=args.hybrid)
    emit(json.dumps(result.to_dict(), indent=2) if args.json else _result_markdown(result), args)
    return 0


def _sharded_query(args: argparse.Namespace, config: SearchConfig, filters: list):
    """One query over every gallery shard, each searched by its own Ray actor (two-stage only)."""
    from workers.search.sharded import ShardedSearchConfig, ShardedSearcher

    if args.exact or args.hybrid:
        raise ValueError("--exact and --hybrid search one table: leave them out with --gallery-shards")
    searcher = ShardedSearcher(ShardedSearchConfig(config, args.gallery_shards, ray_config(args)))
    try:
        return searcher.search(args.text, args.k, filters)
    finally:
        searcher.close()


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
    parser.add_argument(
        "--workers", type=int, default=serve.workers, help="query threads per process (default: one per core)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=serve.processes,
        help=f"server processes on the port, each with its own searcher (memory x N) (default {serve.processes})",
    )
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
        processes=args.processes,
        queue=args.queue,
        thumbnail_processes=args.thumbnail_processes,
        thumbnail_timeout_s=args.thumbnail_timeout,
        exact_max_videos=args.exact_max_videos or None,
        gallery_shards=args.gallery_shards,
        ray=ray_config(args),
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (the serve options are checked before the model loads)."""
    config = serve_config(args)
    from pipelines.service.run import serve

    serve(search_config(args), config)
    return 0


COMMANDS = {
    "query": Command(add_query_parser, run_query, flow=False, check=check_search),
    "serve": Command(add_serve_parser, run_serve, flow=False, check=check_search),
}
