"""`glscl train`: train the GLSCL head (or fine-tune CLIP too) on a split's stored features."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from glscl.config import HEAD_PRESETS, TrainConfig
from glscl.recipes import RECIPES
from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_backbone_options,
    add_json_option,
    add_kind_option,
    add_ray_options,
    add_store_options,
    backbone_config,
    key_values,
    print_report,
    ray_config,
    store_config,
)
from pipelines.configs import (
    TrainFlowConfig,
)
from workers.ray_config import StreamConfig


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
    _add_run_options(parser, flow, train)
    add_ray_options(parser)
    add_json_option(parser)


def _add_run_options(parser: argparse.ArgumentParser, flow: TrainFlowConfig, train: TrainConfig) -> None:
    """The run's length, seed, evaluation and logging cadence, workers and output folder."""
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
        "--readers",
        type=int,
        default=flow.stream.readers,
        help=f"Ray Data actors reading each worker's batches from the tables (default {flow.stream.readers})",
    )
    parser.add_argument(
        "--read-ahead",
        type=int,
        default=flow.stream.prefetch_steps,
        help=f"steps read ahead of each worker: its memory holds about this many batches "
        f"(default {flow.stream.prefetch_steps})",
    )
    parser.add_argument(
        "--readers-from-mb",
        type=int,
        default=flow.stream.readers_from_mb,
        help="a split whose training data is smaller is read in the training process, a batch at a time, "
        f"without reader actors (default {flow.stream.readers_from_mb}; 0: readers always)",
    )
    parser.add_argument(
        "--output", default=flow.output_dir, help=f"run folder: checkpoints, history, plots (default {flow.output_dir})"
    )


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
        stream=StreamConfig(readers=args.readers, prefetch_steps=args.read_ahead, readers_from_mb=args.readers_from_mb),
    )


def check_train(args: argparse.Namespace) -> None:
    """At once: the training and held-out splits are in the database, and the weight file has a known format."""
    from schemas.catalog import check_splits

    config = train_config(args)
    config.backbone.check_weight_format()
    check_splits(config.store, *(s for s in (config.split, config.val_split) if s))


def run_train(args: argparse.Namespace) -> int:
    """Run the train flow and print its summary."""
    from pipelines.train import train_flow

    summary = train_flow(train_config(args))
    print_report(summary, args)
    return 0


COMMANDS = {
    "train": Command(add_train_parser, run_train, flow=True, check=check_train),
}
