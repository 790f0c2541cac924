"""Options several `glscl` commands share, and the configs they build. Every default is read from the config
dataclass the option fills (`default`), so it lives in one place; this module imports no torch, Ray, Prefect or
LanceDB, which keeps `glscl --help` and argument errors instant."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from glscl.backbone_config import BackboneConfig
from schemas.store import StoreConfig
from workers.index.config import SEGMENT_KINDS, AnnConfig
from workers.ray_config import RayConfig

DEFAULT_DB = StoreConfig().uri


def default(config_type: type, name: str) -> Any:
    """The default of one field of a config dataclass: an option shows and uses it rather than restating it."""
    field = config_type.__dataclass_fields__[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    if field.default is dataclasses.MISSING:
        raise ValueError(f"{config_type.__name__}.{name} has no default")
    return field.default


def key_values(pairs: Sequence[str], option: str) -> dict[str, str]:
    """KEY=VALUE pairs of a repeatable option as a dict; a pair without '=' is an error naming the option."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def add_store_options(parser: argparse.ArgumentParser, default_help: str = DEFAULT_DB) -> None:
    """--db and --storage-option, shared by every command that reads or writes tables; `default_help` states a
    default that depends on other options (the command then sets --db's default itself)."""
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"LanceDB URI: a folder or s3://bucket/path (default {default_help})"
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="object-store setting passed to LanceDB, e.g. aws_endpoint=http://127.0.0.1:9000 (repeatable); "
        "AWS_* environment variables are honoured too",
    )


def add_backbone_options(parser: argparse.ArgumentParser, from_checkpoint: bool = False) -> None:
    """--model, --pretrained and --backbone-seed: which open_clip backbone encodes frames and texts. With
    `from_checkpoint` (query, serve) they default to the backbone the checkpoint was trained on."""
    model = default(BackboneConfig, "model_name")
    seed = default(BackboneConfig, "seed")
    recorded = "default: the one the checkpoint records"
    parser.add_argument(
        "--model",
        default=None if from_checkpoint else model,
        help=f"open_clip model name ({recorded if from_checkpoint else f'default {model}'}; {model} is a tiny "
        "random-weight config for offline use; real use: ViT-B-32)",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag (e.g. openai, downloaded when online) or a local checkpoint file; "
        + (f"{recorded} when --model is omitted" if from_checkpoint else "omitted: random weights, announced"),
    )
    parser.add_argument(
        "--backbone-seed",
        type=int,
        default=seed,
        help=f"seed of random backbone weights (default {seed}; with --model only when searching)",
    )


def add_ray_options(parser: argparse.ArgumentParser, encode_actors: bool = False) -> None:
    """--ray-address (every command that runs Ray work) and, for commands that encode, --encode-actors."""
    parser.add_argument("--ray-address", default=None, help="join an existing Ray cluster (default: start Ray locally)")
    if encode_actors:
        actors = default(RayConfig, "encode_actors")
        parser.add_argument(
            "--encode-actors", type=int, default=actors, help=f"model actors per encode stage (default {actors})"
        )


def add_kind_option(parser: argparse.ArgumentParser, config_type: type) -> None:
    """--kind: which texts pair with videos, shared by train and evaluate."""
    parser.add_argument(
        "--kind",
        choices=("paragraph", "sentence"),
        default=default(config_type, "kind"),
        help="paragraph-to-video (ActivityNet protocol, default) or sentence-to-video pairs",
    )


def add_json_option(parser: argparse.ArgumentParser, what: str = "summary") -> None:
    """--json: print the command's result as JSON instead of Markdown (and no progress bars)."""
    parser.add_argument("--json", action="store_true", help=f"print the {what} as JSON")


def store_config(args: argparse.Namespace) -> StoreConfig:
    """The StoreConfig named by --db and --storage-option."""
    return StoreConfig(uri=args.db, storage_options=key_values(args.storage_option, "--storage-option"))


def backbone_config(args: argparse.Namespace) -> BackboneConfig | None:
    """The BackboneConfig named by --model, --pretrained and --backbone-seed; None when --model was left to the
    checkpoint."""
    if args.model is None:
        if args.pretrained:
            raise ValueError("--pretrained needs --model: give both, or neither to use the checkpoint's backbone")
        return None
    return BackboneConfig(model_name=args.model, pretrained=args.pretrained, seed=args.backbone_seed)


def ray_config(args: argparse.Namespace) -> RayConfig:
    """The RayConfig named by --ray-address (and --encode-actors where the command has it)."""
    actors = getattr(args, "encode_actors", default(RayConfig, "encode_actors"))
    return RayConfig(address=args.ray_address, encode_actors=actors)


def emit(text: str, args: argparse.Namespace) -> None:
    """Write a command's report to `args.report_stream` (standard output unless `main` kept it aside)."""
    print(text, file=args.report_stream or sys.stdout, flush=True)


def print_report(report: Any, args: argparse.Namespace) -> None:
    """Print a flow's summary dataclass as JSON (--json) or as its Markdown, to the report stream."""
    emit(json.dumps(asdict(report), indent=2, default=str) if args.json else report.to_markdown(), args)


def add_ann_options(parser: argparse.ArgumentParser, ann: AnnConfig, index_types: Sequence[str]) -> None:
    """How the ANN stage is built, shared by `glscl index` and the search benchmarks (`ann_options` reads them
    back): segments per video and their kind, the concept block's weight, the vector index type, segment rows."""
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
        "--concept-weight",
        type=float,
        default=ann.concept_weight,
        help="weight of the concept block in the ANN vectors against its weight in the score: 1 as scored, 0 "
        f"frames only (default {ann.concept_weight})",
    )
    parser.add_argument(
        "--index-type",
        choices=index_types,
        default=ann.index_type,
        help=f"vector index type (default {ann.index_type})",
    )
    parser.add_argument(
        "--segment-rows",
        action="store_true",
        help="one vector index over every segment vector (a companion table of one row per video and segment) "
        "instead of one per segment column: one ANN search per query, for large galleries whose videos hold many "
        "events (filtered queries still use the segment columns)",
    )
    parser.add_argument(
        "--retrain-share",
        type=float,
        default=ann.retrain_share,
        help="new videos go into delta indexes (time in proportion to them) until this share of the rows lies "
        f"outside the vector index's training; the run past it retrains over every row (default {ann.retrain_share})",
    )
    parser.add_argument(
        "--max-deltas",
        type=int,
        default=ann.max_deltas,
        help="delta indexes a vector index keeps (each is searched on its own); a run that would make more merges "
        f"them with its new rows into one (default {ann.max_deltas})",
    )


def ann_options(args: argparse.Namespace, base: AnnConfig) -> AnnConfig:
    """`base` with the values of the options `add_ann_options` added."""
    return dataclasses.replace(
        base,
        segments=args.segments,
        segment_kind=args.segment_kind,
        concept_weight=args.concept_weight,
        index_type=args.index_type,
        segment_rows=args.segment_rows,
        retrain_share=args.retrain_share,
        max_deltas=args.max_deltas,
    )
