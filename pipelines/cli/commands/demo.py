"""`glscl demo`: the synthetic dataset, ingested, trained on and indexed, in one command."""

from __future__ import annotations

import argparse

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_ray_options,
    add_store_options,
    emit,
    key_values,
    ray_config,
)
from pipelines.configs import (
    DemoConfig,
)
from schemas.store import StoreConfig


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """`glscl demo [options]`."""
    parser = commands.add_parser(
        "demo",
        help="the whole path on synthetic data: generate, ingest, train, compare, index, then how to search it",
        description="Generate moving coloured shapes with ffmpeg (captions say which shape of which colour does "
        "what, in order; train and val_1 splits; deterministic by seed), ingest both splits, train the GLSCL head, "
        "compare it on held-out videos with the untrained head and mean pooling, index the gallery with the trained "
        "checkpoint, and print the glscl query and glscl serve commands that search it.",
    )
    demo = DemoConfig()
    parser.add_argument("--out", default=demo.out_dir, help=f"folder for the generated videos (default {demo.out_dir})")
    add_store_options(parser, default_help="OUT/lancedb, inside --out")
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
    parser.add_argument(
        "--batch-size",
        type=int,
        default=demo.batch_size,
        help=f"training pairs per batch (default {demo.batch_size}; at most --train-videos)",
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
        batch_size=args.batch_size,
        order_negatives=args.order_negatives,
        ray=ray_config(args),
    )


def check_demo(args: argparse.Namespace) -> None:
    """At once, before anything is generated: the sizes fit, and --out holds no dataset made with other settings."""
    from workers.synthetic.reuse import reusable_dataset

    reusable_dataset(demo_config(args).synthetic())


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print what each stage produced."""
    from pipelines.demo import run_demo_flow

    report, exit_code = run_demo_flow(demo_config(args))
    emit(report, args)
    return exit_code


COMMANDS = {
    "demo": Command(add_demo_parser, run_demo, flow=True, check=check_demo),
}
