"""Every file glscl writes or reads for a model: checkpoints (`model.safetensors` + `config.json`: config, metadata),
a trainer's resumable state (`training_state.safetensors` + `training_state.json`: step, configs, optimizer) and
fine-tuned backbone weights (a plain safetensors file open_clip loads).

The first two are a safetensors file beside a JSON manifest that records its format, version and sha256. All are
written atomically; loading verifies the sha256 before reading the tensors and never unpickles anything.
`file_sha256` is the one file hash of the project (checkpoints, local backbone weights, video content ids).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from glscl.config import GLSCLConfig
from glscl.files import check_checkpoint_folder, file_sha256
from glscl.model import GLSCL

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "glscl-checkpoint"
FORMAT_VERSION = 1
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT = "glscl-training-state"
STATE_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint or training state is missing, corrupt, tampered with or does not fit the model."""


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / WEIGHTS_FILE


def checkpoint_hash(path: str | Path) -> str:
    """sha256 (hex) of a checkpoint's weights file; `path` is the checkpoint directory or the file itself."""
    weights = _weights_path(path)
    try:
        return file_sha256(weights)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint weights {weights}: {exc}") from exc


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary sibling then rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_tensors(path: Path, tensors: dict[str, Tensor], format_name: str) -> None:
    """Atomically write `tensors` as safetensors, tagged with `format_name`."""
    _write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": format_name}))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Atomically write a JSON manifest (indented, so a person can read it)."""
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))


def _read_manifest(path: Path, format_name: str, version: int, required: tuple[str, ...]) -> dict[str, Any]:
    """The JSON manifest at `path`, checked to be `format_name` at `version` and to hold the `required` entries."""
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise CheckpointError(f"{path} is not a {format_name} manifest")
    if manifest.get("format_version") != version:
        raise CheckpointError(f"{path} has format_version {manifest.get('format_version')}, this code reads {version}")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise CheckpointError(f"{path} lacks the entries {missing}")
    return manifest


def _verify_sha256(weights: Path, manifest_path: Path, recorded: str) -> None:
    """Refuse `weights` unless its sha256 is the one its manifest recorded."""
    actual = checkpoint_hash(weights)
    if actual != recorded:
        raise CheckpointError(
            f"{weights} has sha256 {actual}, but {manifest_path} records {recorded}: the file is corrupt, truncated "
            "or was modified"
        )


def _read_tensors(weights: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The tensors of a safetensors file, on `device`."""
    try:
        return load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors file {weights}: {exc}") from exc


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
    _write_tensors(weights, state, FORMAT_NAME)
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
    _write_manifest(directory / CONFIG_FILE, manifest)
    return directory


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[GLSCL, GLSCLConfig, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`; returns (model in eval mode, config, metadata).

    Raises CheckpointError, naming the file, when a file is missing or unreadable, the weights' sha256 does not
    match the recorded one (tampering, truncation), or the tensors do not match the model's parameters.
    """
    directory = Path(directory)
    try:
        check_checkpoint_folder(directory)
    except FileNotFoundError as error:
        raise CheckpointError(str(error)) from None
    manifest_path = directory / CONFIG_FILE
    manifest = _read_manifest(manifest_path, FORMAT_NAME, FORMAT_VERSION, ("sha256", "config"))
    weights = directory / WEIGHTS_FILE
    _verify_sha256(weights, manifest_path, manifest["sha256"])
    try:
        config = GLSCLConfig.from_dict(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model config in {manifest_path}: {exc}") from exc
    state = _read_tensors(weights, device)
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


def save_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Atomically write fine-tuned open_clip weights as a plain safetensors file that open_clip loads, so they can be
    given as `--pretrained FILE` to ingest again."""
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    _write_atomic(Path(path), lambda tmp: save_file(state, str(tmp)))


def recorded_extras(checkpoint: str | Path, meta: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The checkpoint's recorded training facts (`extra`), checked to hold `keys` (e.g. the backbone it was
    trained on), so that a checkpoint from elsewhere fails with a clear error instead of a KeyError."""
    extra = meta.get("extra", {})
    missing = [key for key in keys if key not in extra]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint} does not record {', '.join(missing)}: train it with glscl")
    return extra


def write_training_state(directory: str | Path, state: dict[str, Any], model_config: GLSCLConfig) -> Path:
    """Write a trainer's `state_dict()` as `training_state.safetensors` (every tensor) and `training_state.json`
    (step, configs, optimizer scalars); returns the directory. The state is identical on every rank, so one rank
    (usually 0) writes it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, optimizer_meta = _flatten_optimizer(state["optimizer"])
    tensors |= {f"model/{name}": tensor for name, tensor in state["model"].items()}
    tensors = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    weights = directory / STATE_TENSORS
    _write_tensors(weights, tensors, STATE_FORMAT)
    manifest = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "sha256": checkpoint_hash(weights),
        "step": state["step"],
        "total_steps": state["total_steps"],
        "train_config": state["train_config"],
        "model_config": model_config.to_dict(),
        "optimizer": optimizer_meta,
    }
    _write_manifest(directory / STATE_JSON, manifest)
    return directory


def read_training_state(directory: str | Path, model_config: GLSCLConfig) -> dict[str, Any]:
    """The trainer `state_dict()` in a `write_training_state` directory, after checking its sha256 and that it was
    trained with `model_config`."""
    directory = Path(directory)
    manifest_path = directory / STATE_JSON
    required = ("sha256", "step", "total_steps", "train_config", "model_config", "optimizer")
    manifest = _read_manifest(manifest_path, STATE_FORMAT, STATE_VERSION, required)
    weights = directory / STATE_TENSORS
    _verify_sha256(weights, manifest_path, manifest["sha256"])
    if manifest["model_config"] != model_config.to_dict():
        raise CheckpointError(f"{directory} was trained with a different GLSCLConfig")
    tensors = _read_tensors(weights)
    return {
        "model": {name.removeprefix("model/"): t for name, t in tensors.items() if name.startswith("model/")},
        "optimizer": _unflatten_optimizer(tensors, manifest["optimizer"]),
        "step": manifest["step"],
        "total_steps": manifest["total_steps"],
        "train_config": manifest["train_config"],
    }


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into named tensors ("optimizer/<param>/<key>") and JSON-able metadata."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = tensor
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
