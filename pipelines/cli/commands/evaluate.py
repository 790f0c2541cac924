"""`glscl evaluate`: exact retrieval metrics of a checkpoint on a whole split."""

from __future__ import annotations

import argparse

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_json_option,
    add_kind_option,
    add_ray_options,
    add_store_options,
    print_report,
    ray_config,
    store_config,
)
from pipelines.configs import (
    EvaluateConfig,
)


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


def check_evaluate(args: argparse.Namespace) -> None:
    """At once: the checkpoint folder, and the split is in the database."""
    from glscl.files import check_checkpoint_folder
    from schemas.catalog import check_splits

    config = evaluate_config(args)
    check_checkpoint_folder(config.checkpoint)
    check_splits(config.store, config.split)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluate flow and print its report."""
    from pipelines.evaluate import evaluate_flow

    print_report(evaluate_flow(evaluate_config(args)), args)
    return 0


COMMANDS = {
    "evaluate": Command(add_evaluate_parser, run_evaluate, flow=True, check=check_evaluate),
}
