"""GLSCL checkpoints: a directory holding `model.safetensors` and `config.json` (config, metadata, sha256).

Loading verifies the weights' sha256 before reading them and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from glscl.config import GLSCLConfig
from glscl.model import GLSCL

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "glscl-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, tampered with or does not fit the model."""


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / WEIGHTS_FILE


def checkpoint_hash(path: str | Path) -> str:
    """sha256 (hex) of a checkpoint's weights file; `path` is the checkpoint directory or the file itself."""
    weights = _weights_path(path)
    digest = hashlib.sha256()
    try:
        with weights.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint weights {weights}: {exc}") from exc
    return digest.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary sibling then rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | Path, model: GLSCL, config: GLSCLConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` (created if needed); returns it.

    `extra` is JSON metadata (step, metrics, feature model id...) stored alongside the config.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        extra_json = json.loads(json.dumps(extra or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint extra metadata is not JSON-serialisable: {exc}") from exc
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    _write_atomic(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT_NAME}))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights_file": WEIGHTS_FILE,
        "sha256": checkpoint_hash(weights),
        "created_at": datetime.now(UTC).isoformat(),
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "extra": extra_json,
    }
    _write_atomic(directory / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return directory


def _read_manifest(directory: Path) -> dict[str, Any]:
    config_path = directory / CONFIG_FILE
    try:
        manifest = json.loads(config_path.read_text())
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint config {config_path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint config {config_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_path} is not a {FORMAT_NAME} config")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {manifest.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    for key in ("sha256", "config"):
        if key not in manifest:
            raise CheckpointError(f"checkpoint config {config_path} lacks the {key!r} entry")
    return manifest


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[GLSCL, GLSCLConfig, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`; returns (model in eval mode, config, metadata).

    Raises CheckpointError, naming the file, when a file is missing or unreadable, the weights' sha256 does not
    match the recorded one (tampering, truncation), or the tensors do not match the model's parameters.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    weights = directory / WEIGHTS_FILE
    actual = checkpoint_hash(weights)
    if actual != manifest["sha256"]:
        raise CheckpointError(
            f"checkpoint weights {weights} have sha256 {actual}, but {directory / CONFIG_FILE} records "
            f"{manifest['sha256']}: the file is corrupt, truncated or was modified"
        )
    try:
        config = GLSCLConfig.from_dict(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model config in {directory / CONFIG_FILE}: {exc}") from exc
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors file {weights}: {exc}") from exc
    model = GLSCL(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"weights in {weights} do not fit the model config: missing keys {missing}, "
            f"unexpected keys {unexpected}, wrong shapes {wrong_shape}"
        )
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    meta = {key: manifest[key] for key in manifest if key != "config"}
    return model, config, meta


def recorded_extras(checkpoint: str | Path, meta: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The checkpoint's recorded training facts (`extra`), checked to hold `keys` (e.g. the backbone it was
    trained on), so that a checkpoint from elsewhere fails with a clear error instead of a KeyError."""
    extra = meta.get("extra", {})
    missing = [key for key in keys if key not in extra]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint} does not record {', '.join(missing)}: train it with glscl")
    return extra
