"""Local CLIP weight files, whatever their format: OpenAI's TorchScript archives (`ViT-B-32.pt`), plain state dicts
(`torch.save`), safetensors, and open_clip training checkpoints (`{"state_dict": ...}`).

Read here rather than by open_clip's own loader for two reasons. torch >= 2.6 loads with `weights_only=True`, which
refuses TorchScript archives, so OpenAI's own file stopped loading at all. And the file can say which activation its
weights were trained with: OpenAI's CLIP (QuickGELU) leaves marks that no open_clip checkpoint has, so a user who
typed `ViT-B-32` still gets the network those weights were trained in. `inspect_weights` reads only names (archive
entries, pickle strings, the safetensors header), so it is cheap and needs no torch; `read_state_dict` loads them.
"""

from __future__ import annotations

import functools
import json
import pickletools
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glscl.files import file_version

if TYPE_CHECKING:
    import torch

# Entries OpenAI's CLIP model carries beside its weights (its TorchScript archives keep them as tensors); open_clip's
# model has none of them, so their presence says the weights are OpenAI's, trained with QuickGELU.
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
# What a file needs to hold to be taken for a CLIP checkpoint at all (open_clip's and OpenAI's common layout).
CLIP_KEYS = ("visual.conv1.weight", "token_embedding.weight", "text_projection")
# Buffers a scripted model saves beside its weights that open_clip rebuilds itself.
_NON_WEIGHTS = (*OPENAI_EXTRAS, "attn_mask")
_WRAPPERS = ("state_dict", "model", "module")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


class WeightFileError(ValueError):
    """A local weight file that cannot be read as CLIP weights; the message names the file and what was expected."""


@dataclass(frozen=True)
class WeightFile:
    """What a weight file is, read from its names only: its format, and what it says about the activation."""

    path: str
    format: str  # "torchscript", "state dict", "safetensors" or "legacy torch"
    quick_gelu: bool | None  # True/False when the file says; None when it does not
    evidence: str  # why quick_gelu is what it is, for logs and reports

    def describe(self) -> str:
        """One phrase for logs: the format, and what the file says about its activation."""
        return f"{self.format} file ({self.evidence})"


def inspect_weights(path: str | Path) -> WeightFile:
    """The format of `path` and the activation its weights were trained with, where the file tells; cached per
    `file_version`, since configs ask for it often. Raises WeightFileError for a file that is no
    weight file of any known format (truncated, or something else)."""
    try:
        version = file_version(path)
    except OSError as error:
        raise WeightFileError(f"weight file {path}: cannot read it ({error.strerror or error})") from None
    return _inspect(*version)


@functools.cache
def _inspect(path: str, size: int, mtime_ns: int) -> WeightFile:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(path):
        return _inspect_zip(path)
    keys = _safetensors_keys(path) if len(head) == 8 else None
    if keys is not None:
        return _from_keys(path, "safetensors", keys)
    if head[:1] == b"\x80":
        return WeightFile(path, "legacy torch", None, "the legacy format does not say which activation")
    raise WeightFileError(
        f"weight file {path}: not a weight file (expected a TorchScript archive, a torch.save state dict or a "
        "safetensors file; it may be truncated, or not weights at all)"
    )


def _inspect_zip(path: str) -> WeightFile:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            code = [n for n in names if "/code/" in n and n.endswith(".py")]
            if code:
                quick = any(b"QuickGELU" in archive.read(n) for n in code)
                evidence = f"its TorchScript code {'defines' if quick else 'has no'} QuickGELU"
                return WeightFile(path, "torchscript", quick, evidence)
            pickle = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pickle is None:
                raise WeightFileError(f"weight file {path}: a zip archive but no torch checkpoint (no data.pkl)")
            keys = _pickle_strings(archive.read(pickle))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if isinstance(error, WeightFileError):
            raise
        raise WeightFileError(f"weight file {path}: a damaged torch archive ({error}); is it truncated?") from None
    return _from_keys(path, "state dict", keys)


def _from_keys(path: str, kind: str, keys: list[str]) -> WeightFile:
    present = {key.rsplit(".", 1)[-1] if "." in key else key for key in keys}
    if all(extra in present for extra in OPENAI_EXTRAS):
        return WeightFile(path, kind, True, f"it carries OpenAI's {', '.join(OPENAI_EXTRAS)} entries")
    return WeightFile(path, kind, None, "nothing in it says which activation")


def _pickle_strings(data: bytes) -> list[str]:
    """Every string constant of a pickle, read opcode by opcode without unpickling (no code runs, no torch)."""
    try:
        return [arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    except Exception as error:  # pickletools raises ValueError or struct/eof errors on damaged data
        raise WeightFileError(f"damaged pickle ({type(error).__name__})") from None


def _safetensors_keys(path: str) -> list[str] | None:
    """The tensor names of a safetensors file, from its JSON header; None when the file is not safetensors."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if not 2 <= length <= _SAFETENSORS_MAX_HEADER:
            return None
        header = handle.read(length)
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return [key for key in parsed if key != "__metadata__"] if isinstance(parsed, dict) else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The CLIP weights of `path` as an open_clip state dict (wrappers, `module.` prefixes and OpenAI's extra entries
    removed). Raises WeightFileError naming the file when it cannot be read or holds no CLIP weights."""
    import torch

    found = inspect_weights(path)
    try:
        if found.format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                loaded = torch.jit.load(found.path, map_location="cpu").state_dict()
        elif found.format == "safetensors":
            from safetensors.torch import load_file

            loaded = load_file(found.path, device="cpu")
        else:
            loaded = torch.load(found.path, map_location="cpu", weights_only=True)
    except WeightFileError:
        raise
    except Exception as error:
        raise WeightFileError(
            f"weight file {path}: cannot load its {found.format} ({type(error).__name__}: {str(error)[:200]}); is it "
            "truncated or damaged?"
        ) from None
    state = _unwrap(loaded)
    missing = [key for key in CLIP_KEYS if key not in state]
    if missing:
        sample = ", ".join(list(state)[:3]) or "nothing"
        raise WeightFileError(
            f"weight file {path}: no CLIP weights in it (expected {', '.join(CLIP_KEYS)}; found {sample}, ...)"
        )
    return {key: value for key, value in state.items() if key not in _NON_WEIGHTS}


def _unwrap(loaded: object) -> dict:
    """The state dict inside a training checkpoint, with DataParallel's `module.` prefix removed."""
    while isinstance(loaded, dict):
        inner = next((loaded[key] for key in _WRAPPERS if isinstance(loaded.get(key), dict)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, dict):
        return {}
    return {(key[7:] if key.startswith("module.") else key): value for key, value in loaded.items()}
