"""The command line's own contract: it starts without the heavy libraries, each option's default is its config's,
and every option of every command says what it does."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import timedelta

import pytest

from glscl.backbone_config import BackboneConfig, recorded_backbone
from pipelines import cli
from pipelines.cli.commands import bench, demo, evaluate, index, ingest, maintain, reproduce, search, train
from pipelines.cli.failures import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_ERROR, classify
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
from workers.search.config import SearchConfig

HEAVY = ("torch", "ray", "lancedb", "prefect", "open_clip", "torchvision", "safetensors")


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def test_parsing_every_command_imports_no_heavy_library() -> None:
    probe = (
        "import sys\n"
        "from pipelines import cli\n"
        "parser = cli.build_parser()\n"
        "parser.parse_args(['train', '--epochs', '2'])\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    ("argv", "build", "expected"),
    [
        (("ingest", "videos/"), ingest.ingest_config, IngestConfig(sources=("videos/",))),
        (("train",), train.train_config, TrainFlowConfig()),
        (("evaluate", "--checkpoint", "c"), evaluate.evaluate_config, EvaluateConfig(checkpoint="c")),
        (("index", "--checkpoint", "c"), index.index_config, IndexConfig(checkpoint="c")),
        (("query", "a dog", "--checkpoint", "c"), search.search_config, SearchConfig(checkpoint="c")),
        (("maintain",), maintain.maintain_config, MaintainConfig()),
        (("serve", "--checkpoint", "c"), search.serve_config, ServeConfig()),
        (("demo",), demo.demo_config, DemoConfig()),
        (
            ("reproduce", "activitynet", "train.json", "val_1.json", "--video-root", "v"),
            reproduce.reproduce_config,
            ReproduceConfig(annotations=("train.json", "val_1.json"), video_root="v"),
        ),
    ],
)
def test_a_command_without_options_builds_its_configs_defaults(argv, build, expected) -> None:
    assert build(parse(*argv)) == expected


def test_options_reach_the_config() -> None:
    config = train.train_config(parse("train", "--epochs", "3", "--log-every", "7", "--set", "num_queries=4"))
    assert (config.train.epochs, config.train.log_every, config.head_overrides) == (3, 7, {"num_queries": 4})
    assert maintain.maintain_config(parse("maintain", "--retain-hours", "2")).retain_versions_older_than == timedelta(
        hours=2
    )
    assert DEFAULT_RETENTION.total_seconds() == maintain.RETAIN_HOURS * 3600
    ann = index.index_config(parse("index", "--checkpoint", "c", "--segment-rows", "--index-type", "IVF_HNSW_SQ")).ann
    assert ann.segment_rows and ann.index_type == "IVF_HNSW_SQ"
    with pytest.raises(ValueError, match="needs a vector index type"):
        index.index_config(parse("index", "--checkpoint", "c", "--segment-rows", "--index-type", "none"))


def _parsers(parser: argparse.ArgumentParser, name: str = "glscl"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                yield from _parsers(child, f"{name} {command}")


# Options whose default is computed (None in the parser) and described in words; each one's help says what it is.
DESCRIBED_DEFAULTS = {
    "glscl ingest split",
    "glscl ingest dataset",
    "glscl index partitions",
    "glscl index sub_vectors",
    "glscl query model",
    "glscl serve model",
    "glscl query refine_factor",
    "glscl serve refine_factor",
    "glscl query ef",
    "glscl serve ef",
    "glscl query index_cache_gb",
    "glscl serve index_cache_gb",
    "glscl serve token",
    "glscl serve workers",
    "glscl reproduce batch_size",
    "glscl prefect-server idle_minutes",
    "glscl server idle_minutes",
}


def test_every_stated_default_is_the_value_used() -> None:
    """An option's help "(default X)" equals its parser default; where the default is computed from other options,
    the config built from the command line holds the stated value."""
    misstated = []
    for name, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            stated = re.search(r"\(default:? ([^;,)\s]+)", action.help or "")
            if stated is None or action.dest in ("verbose", "ray_address"):
                continue
            value, default = stated.group(1).rstrip(":."), action.default
            if default is None:
                if f"{name} {action.dest}" not in DESCRIBED_DEFAULTS | {"glscl demo db", "glscl reproduce weights"}:
                    misstated.append(f"{name} {action.dest}: help says {value}, parser default None")
                continue
            same = float(value) == float(default) if isinstance(default, int | float) else value == str(default)
            if not same:
                misstated.append(f"{name} {action.dest}: help says {value}, parser default {default!r}")
    assert misstated == []
    assert demo.demo_config(parse("demo", "--out", "somewhere")).store.uri == "somewhere/lancedb"
    assert "OUT/lancedb" in next(a.help for a in demo_parser()._actions if a.dest == "db")
    argv = ("reproduce", "activitynet", "t.json", "--video-root", "v")
    assert reproduce.reproduce_config(parse(*argv)).weights == "openai"
    assert reproduce.reproduce_config(parse(*argv)).batch_size == 64


def demo_parser() -> argparse.ArgumentParser:
    return dict(_parsers(cli.build_parser()))["glscl demo"]


def test_every_option_has_a_help_line() -> None:
    missing = [
        f"{name} {action.dest}"
        for name, parser in _parsers(cli.build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert missing == []


def test_search_takes_the_backbone_its_checkpoint_records() -> None:
    assert search.search_config(parse("query", "x", "--checkpoint", "c")).backbone is None
    recorded = BackboneConfig("ViT-B-32-quickgelu", "openai")
    assert recorded_backbone({"backbone": {"model_name": "ViT-B-32-quickgelu", "pretrained": "openai"}}) == recorded
    assert recorded_backbone({"backbone_model_id": "ViT-B-32-quickgelu@openai"}) == recorded
    assert recorded_backbone({"backbone_model_id": "glscl-tiny@random-seed3"}) == BackboneConfig(seed=3)
    with pytest.raises(ValueError, match="--pretrained"):
        recorded_backbone({"backbone_model_id": "ViT-B-32@file-0123456789abcdef"})
    with pytest.raises(ValueError, match="--pretrained needs --model"):
        search.search_config(parse("query", "x", "--checkpoint", "c", "--pretrained", "openai"))


def test_bad_input_errors_are_told_apart_without_importing_their_modules() -> None:
    from glscl.checkpoint import CheckpointError
    from workers.ingest.probe import VideoError

    for error in (CheckpointError("no weights"), VideoError("not a video"), ValueError("bad")):
        assert classify(error).exit_code == EXIT_BAD_INPUT
    assert classify(RuntimeError("boom")).exit_code != EXIT_BAD_INPUT


def test_a_lost_connection_behind_an_error_is_the_environment() -> None:
    import httpx

    lost = httpx.ConnectError("[Errno 111] Connection refused")
    try:
        raise RuntimeError("Failed to reach API at http://127.0.0.1:4200/api/") from lost
    except RuntimeError as error:
        failure = classify(error)  # Prefect's error when its API is gone as a flow starts
    assert failure.exit_code == EXIT_ENVIRONMENT and "Connection refused" in failure.message
    assert "run the command again" in failure.message
    assert classify(lost).exit_code == EXIT_ENVIRONMENT
    assert classify(RuntimeError("boom")).exit_code == EXIT_ERROR


@pytest.mark.parametrize("name", sorted(bench.BENCHMARKS))
def test_every_benchmark_option_has_a_help_line(name: str) -> None:
    import importlib

    parser = importlib.import_module(bench.BENCHMARKS[name][0]).build_parser()
    missing = [action.dest for action in parser._actions if not (action.help or "").strip()]
    assert missing == []
