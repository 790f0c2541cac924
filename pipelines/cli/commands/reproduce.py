"""`glscl reproduce activitynet`: the paper's table in one resumable run."""

from __future__ import annotations

import argparse
import json

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_json_option,
    add_ray_options,
    default,
    emit,
    ray_config,
)
from pipelines.configs import AUTHORS_QUERY_COUNTS, ReproduceConfig


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
    out, weights, mode, epochs, batch, workers, every, queries = (
        default(ReproduceConfig, name)
        for name in ("out_dir", "weights", "mode", "epochs", "batch_size", "workers", "eval_every", "queries")
    )
    parser.add_argument("--out", default=out, help=f"run folder: database, runs, report (default {out})")
    parser.add_argument(
        "--weights",
        default=None,
        help=f"CLIP weights: an open_clip tag (default {weights}, downloaded by open_clip) or a local weight file "
        "(OpenAI's TorchScript .pt, a state dict or safetensors); a dry run uses random weights unless given",
    )
    parser.add_argument("--mode", choices=("head", "full"), default=mode, help=f"head-only or full (default {mode})")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"global batch (default {batch}, the authors'; a dry run: its training videos, at most {batch})",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=every,
        help=f"evaluate val_1 every N steps and at each epoch end (default {every}, the authors')",
    )
    parser.add_argument(
        "--queries",
        type=int,
        choices=AUTHORS_QUERY_COUNTS,
        default=queries,
        help=f"K local queries (default {queries}: the authors' test script and the paper's checkpoint; 12: their "
        "training script)",
    )
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
    parser.add_argument(
        "--dry-run", action="store_true", help="generated videos, random weights (or --weights FILE), two steps"
    )
    add_ray_options(parser)
    add_json_option(parser)


def reproduce_config(args: argparse.Namespace) -> ReproduceConfig:
    """The ReproduceConfig named by the reproduce options."""
    from pipelines.reproduce import dry_run_config

    settings = {
        "mode": args.mode,
        "queries": args.queries,
        "redo": tuple(args.redo),
        "ray": ray_config(args),
    }
    if args.time_steps:
        settings["timing"] = tuple(args.time_steps)
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    if args.dry_run:
        return dry_run_config(args.out, weights=args.weights, **settings)
    return ReproduceConfig(
        out_dir=args.out,
        annotations=tuple(args.annotations),
        video_root=args.video_root,
        weights=args.weights or default(ReproduceConfig, "weights"),
        epochs=args.epochs,
        workers=args.workers,
        eval_every=args.eval_every,
        **settings,
    )


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the reproduction and print its report."""
    from pipelines.reproduce import reproduce

    report, summary = reproduce(reproduce_config(args))
    emit(json.dumps(summary, indent=2, default=str) if args.json else report, args)
    return 0


COMMANDS = {
    "reproduce": Command(add_reproduce_parser, run_reproduce, flow=True),
}
