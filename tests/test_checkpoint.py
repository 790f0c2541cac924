"""Checkpoint and training-state I/O: round trip gives identical scores; tampering, truncation, missing keys and
changed settings are caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_glscl import make_trainer, synthetic_pairs, tiny_config

from glscl.checkpoint import STATE_TENSORS, CheckpointError, checkpoint_hash, load_checkpoint, save_checkpoint
from glscl.config import GLSCLConfig
from glscl.model import GLSCL

DIM, FRAMES, WORDS = 16, 5, 6


def tiny_model() -> GLSCL:
    torch.manual_seed(0)
    config = GLSCLConfig(
        embed_dim=DIM,
        max_frames=FRAMES,
        max_words=WORDS,
        frame_position_size=8,
        temporal_layers=1,
        temporal_heads=2,
        temporal_ffn=32,
        num_queries=3,
        decoder_layers=1,
        decoder_heads=2,
        decoder_ffn=32,
    )
    return GLSCL(config).eval()


def scores_of(model: GLSCL) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    frame_mask = torch.arange(FRAMES) < torch.tensor([[5], [3], [1], [4]])
    token_mask = torch.arange(WORDS) < torch.tensor([[6], [2], [4], [3]])
    with torch.no_grad():
        video = model.encode_video(torch.randn(4, FRAMES, DIM, generator=g), frame_mask)
        text = model.encode_text(torch.randn(4, DIM, generator=g), torch.randn(4, WORDS, DIM, generator=g), token_mask)
        return model.score(text, video)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, GLSCL]:
    model = tiny_model()
    directory = save_checkpoint(tmp_path / "ckpt", model, model.config, {"step": 12, "r1": 0.5})
    return directory, model


def test_round_trip_gives_identical_scores(saved: tuple[Path, GLSCL]) -> None:
    directory, model = saved
    loaded, config, meta = load_checkpoint(directory)
    assert config == model.config
    assert meta["extra"] == {"step": 12, "r1": 0.5}
    assert meta["sha256"] == checkpoint_hash(directory) == checkpoint_hash(directory / "model.safetensors")
    assert not loaded.training
    assert torch.equal(scores_of(loaded), scores_of(model))


def test_tampered_weights_raise(saved: tuple[Path, GLSCL]) -> None:
    directory, _ = saved
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*sha256"):
        load_checkpoint(directory)


def test_truncated_weights_raise(saved: tuple[Path, GLSCL]) -> None:
    directory, _ = saved
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(directory)


def test_missing_files_raise(saved: tuple[Path, GLSCL]) -> None:
    directory, _ = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(directory.parent / "nowhere")


def test_missing_keys_raise_even_with_matching_hash(saved: tuple[Path, GLSCL]) -> None:
    directory, model = saved
    weights = directory / "model.safetensors"
    state = {k: v for k, v in model.state_dict().items() if k != "logit_scale"}
    save_file(state, str(weights))
    manifest_path = directory / "config.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = checkpoint_hash(weights)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*logit_scale"):
        load_checkpoint(directory)


def test_unknown_config_key_raises(saved: tuple[Path, GLSCL]) -> None:
    directory, _ = saved
    manifest_path = directory / "config.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["surprise"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="surprise"):
        load_checkpoint(directory)


def test_extra_must_be_json(tmp_path: Path) -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path, model, model.config, {"tensor": torch.ones(1)})


@pytest.mark.usefixtures("one_thread")
def test_training_state_refuses_tampering_and_changed_settings(tmp_path: Path) -> None:
    trainer = make_trainer()
    trainer.fit(synthetic_pairs(), max_steps=1)
    trainer.save_training_state(tmp_path)
    with pytest.raises(ValueError, match="seed"):
        make_trainer(seed=1).load_training_state(tmp_path)
    with pytest.raises(CheckpointError, match="GLSCLConfig"):
        make_trainer(tiny_config(num_queries=2)).load_training_state(tmp_path)
    tensors = load_file(str(tmp_path / STATE_TENSORS))
    tensors["model/head.logit_scale"] = tensors["model/head.logit_scale"] + 1
    save_file(tensors, str(tmp_path / STATE_TENSORS))
    with pytest.raises(CheckpointError, match="sha256"):
        make_trainer().load_training_state(tmp_path)
