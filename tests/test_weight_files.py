"""Local CLIP weight files on the user's path (the CLI as a subprocess, a fresh Prefect home): OpenAI's TorchScript
archive, a state dict and a safetensors file each ingest, and a file whose weights are OpenAI's builds the QuickGELU
network whatever model name was typed. A truncated or non-CLIP file gets one line naming it, and nothing is stored.

The files are made here from random weights in OpenAI's layout: the TorchScript archive is an open_clip ViT-B-32
with QuickGELU, scripted with OpenAI's three extra entries (input_resolution, context_length, vocab_size); the
state dict and safetensors files are the tiny config's weights with the same extras. `glscl reproduce --dry-run
--weights FILE` takes the same archive in tests/test_reproduce.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lancedb
import pytest
import torch
from conftest import openai_layout_model, openai_torchscript_archive
from safetensors.torch import save_file
from test_first_run import FreshHome, fresh_home, glscl, last_line

from glscl.weights import inspect_weights
from pipelines.cli.failures import EXIT_BAD_INPUT
from workers.synthetic.videos import SyntheticConfig, generate_synthetic_dataset


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Iterator[FreshHome]:
    with fresh_home(tmp_path_factory.mktemp("home")) as home:
        yield home


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six short generated videos in ActivityNet format (four to train on, two held out)."""
    root = tmp_path_factory.mktemp("data")
    generate_synthetic_dataset(SyntheticConfig(out_dir=root, n_train=4, n_val=2, seed=0))
    return root


def ingest(user: FreshHome, dataset: Path, db: Path, model: str, weights: Path, splits=("train", "val_1")) -> tuple:
    """`glscl ingest` of the splits with `weights`, four frames per video."""
    args = [*(str(dataset / f"{split}.json") for split in splits), "--video-root", str(dataset / "videos")]
    return glscl(
        user.env,
        "ingest",
        *args,
        "--db",
        str(db),
        "--model",
        model,
        "--pretrained",
        str(weights),
        "--frames",
        "4",
        "--json",
    )


def stored_model_ids(db: Path, table: str) -> set[str]:
    return set(lancedb.connect(str(db)).open_table(table).to_arrow().column("model_id").to_pylist())


def tiny_openai_state() -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in openai_layout_model("glscl-tiny", seed=5).state_dict().items()}


@pytest.mark.parametrize("form", ["state dict", "safetensors"])
def test_a_weight_file_in_openais_layout_ingests_with_quickgelu(user, dataset, tmp_path, form):
    state = tiny_openai_state()
    weights = tmp_path / "clip-weights.bin"  # the format is read from the content, not the name
    if form == "safetensors":
        save_file(state, str(weights))
    else:
        torch.save(state, weights)
    assert inspect_weights(weights).format == form
    done = ingest(user, dataset, tmp_path / "db", "glscl-tiny", weights, splits=("val_1",))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert "built as glscl-tiny-quickgelu although glscl-tiny was named" in summary["backbone"]
    assert "No pretrained weights loaded" not in done.stderr
    assert summary["counts"]["ok"] == 2
    ids = stored_model_ids(tmp_path / "db", "frames") | stored_model_ids(tmp_path / "db", "texts")
    assert len(ids) == 1 and ids.pop().startswith("glscl-tiny-quickgelu@file-")


@pytest.mark.parametrize("damage", ["truncated", "not CLIP", "other model"])
def test_a_bad_weight_file_is_named_in_one_line_and_nothing_is_stored(user, dataset, tmp_path, damage):
    weights = tmp_path / "weights.pt"
    state = tiny_openai_state()
    torch.save(state if damage != "not CLIP" else {"encoder.weight": torch.zeros(2, 2)}, weights)
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    model = "ViT-B-32" if damage == "other model" else "glscl-tiny"
    done = ingest(user, dataset, tmp_path / "db", model, weights)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr[-3000:]
    line = last_line(done)
    assert line.startswith(f"glscl ingest: error: weight file {weights}"), line
    expected = {"truncated": "truncated", "not CLIP": "no CLIP weights", "other model": "not ViT-B-32 weights"}
    assert expected[damage] in line, line
    assert "Traceback" not in done.stderr
    stored = lancedb.connect(str(tmp_path / "db")).list_tables().tables if (tmp_path / "db").exists() else []
    assert stored == [], f"tables written despite the bad weights: {stored}"


@pytest.mark.slow(seconds=140)
def test_openais_torchscript_archive_ingests_and_fine_tunes(user, dataset, tmp_path):
    archive = openai_torchscript_archive(tmp_path / "ViT-B-32.pt")
    found = inspect_weights(archive)
    assert (found.format, found.quick_gelu) == ("torchscript", True)

    db = tmp_path / "db"
    done = ingest(user, dataset, db, "ViT-B-32", archive, splits=("train",))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built as ViT-B-32-quickgelu although ViT-B-32 was named" in json.loads(done.stdout)["backbone"]
    assert {i.split("@")[0] for i in stored_model_ids(db, "frames")} == {"ViT-B-32-quickgelu"}

    train = ["--db", str(db), "--model", "ViT-B-32", "--pretrained", str(archive), "--mode", "full"]
    out = tmp_path / "train"
    args = ["--batch-size", "2", "--epochs", "1", "--val-split=", "--output", str(out), "--json"]
    done = glscl(user.env, "train", *train, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["steps"] == 2
    recorded = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())["extra"]
    assert recorded["backbone_model_id"].startswith("ViT-B-32-quickgelu@file-")
