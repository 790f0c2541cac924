"""`glscl index`: encode every ingested video once with a checkpoint and build the search indexes."""

from __future__ import annotations

import argparse

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_ann_options,
    add_json_option,
    add_ray_options,
    add_store_options,
    ann_options,
    default,
    print_report,
    ray_config,
    store_config,
)
from pipelines.configs import (
    IndexConfig,
)
from schemas.tables import ENCODINGS_FORMS
from workers.index.config import VECTOR_INDEX_TYPES, AnnConfig


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
    add_ann_options(parser, ann, VECTOR_INDEX_TYPES)
    parser.add_argument(
        "--min-rows",
        type=int,
        default=ann.min_rows,
        help=f"build the vector index from this many videos; below it queries scan (default {ann.min_rows})",
    )
    parser.add_argument("--partitions", type=int, default=None, help="IVF partitions (default sqrt(segment vectors))")
    parser.add_argument("--sub-vectors", type=int, default=None, help="PQ sub-vectors (default width / 8)")
    parser.add_argument("--shard-videos", type=int, default=shard, help=f"videos per Ray task (default {shard})")
    parser.add_argument(
        "--gallery-shards",
        type=int,
        default=1,
        help="split the index by video id into N tables, each searched by its own Ray actor (`glscl query "
        "--gallery-shards N`); another N builds another copy (default 1)",
    )
    parser.add_argument(
        "--encodings",
        choices=ENCODINGS_FORMS,
        default=ann.encodings,
        help="form of the packed encodings the exact re-rank reads: float16, or int8 with a scale per frame and "
        f"concept (half the bytes per candidate); fixed when the index is first built (default {ann.encodings})",
    )
    add_ray_options(parser)
    add_json_option(parser)


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The IndexConfig named by the index options."""
    return IndexConfig(
        checkpoint=args.checkpoint,
        store=store_config(args),
        splits=tuple(args.split),
        shard_videos=args.shard_videos,
        gallery_shards=args.gallery_shards,
        ann=ann_options(
            args,
            AnnConfig(
                vector_dim=args.vector_dim,
                min_rows=args.min_rows,
                num_partitions=args.partitions,
                num_sub_vectors=args.sub_vectors,
                encodings=args.encodings,
            ),
        ),
        ray=ray_config(args),
    )


def check_index(args: argparse.Namespace) -> None:
    """At once: the checkpoint folder, and the database holds the splits to index (any ingested video when none is
    named)."""
    from glscl.files import check_checkpoint_folder
    from schemas.catalog import check_splits

    config = index_config(args)
    check_checkpoint_folder(config.checkpoint)
    check_splits(config.store, *config.splits)


def run_index(args: argparse.Namespace) -> int:
    """Run the index flow and print its summary."""
    from pipelines.index import index_flow

    print_report(index_flow(index_config(args)), args)
    return 0


COMMANDS = {
    "index": Command(add_index_parser, run_index, flow=True, check=check_index),
}
