"""`glscl ingest`: decode, encode and store video collections."""

from __future__ import annotations

import argparse

from pipelines.cli.commands import Command
from pipelines.cli.options import (
    add_backbone_options,
    add_json_option,
    add_ray_options,
    add_store_options,
    backbone_config,
    default,
    print_report,
    ray_config,
    store_config,
)
from pipelines.configs import (
    IngestConfig,
)
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import SourceOptions


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
    quality = default(IngestConfig, "frame_quality")
    parser.add_argument(
        "--keep-frames",
        action="store_true",
        help="also store the sampled frames as JPEG (table frame_images, 0.5 to 1.7 MB per video at 64 frames of "
        "224 px), so that `glscl train --mode full` reads them instead of decoding every video in every epoch",
    )
    parser.add_argument(
        "--frame-quality", type=int, default=quality, help=f"JPEG quality of kept frames (default {quality})"
    )
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
        keep_frames=args.keep_frames,
        frame_quality=args.frame_quality,
    )


def check_ingest(args: argparse.Namespace) -> None:
    """The sources and the weight file's format, at once (`workers.ingest.sources.check_source`, `glscl.weights`)."""
    from workers.ingest.sources import check_source

    config = ingest_config(args)
    for source in config.sources:
        check_source(source, config.source_options)
    config.backbone.check_weight_format()


def run_ingest(args: argparse.Namespace) -> int:
    """Run the ingest flow and print its summary; return the documented exit code."""
    from pipelines.ingest import ingest_flow

    summary = ingest_flow(ingest_config(args))
    print_report(summary, args)
    return summary.exit_code


COMMANDS = {
    "ingest": Command(add_ingest_parser, run_ingest, flow=True, check=check_ingest),
}
