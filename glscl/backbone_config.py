"""Which CLIP backbone: an open_clip model name with its weights, the activation they were trained with, and the
id stored beside every feature row. Kept apart from the loaded network (glscl.backbone) so that configs and the
command line import without torch; open_clip's config registry is imported on first use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from glscl.files import file_sha256
from glscl.weights import WeightFile, inspect_weights

TINY_MODEL = "glscl-tiny"
QUICK_GELU_SUFFIX = "-quickgelu"
_CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def open_clip_registry() -> ModuleType:
    """open_clip with glscl's own model configs registered; imported on first use, as it takes seconds."""
    import open_clip

    open_clip.add_model_config(_CONFIG_DIR)
    return open_clip


@functools.cache
def clip_tokenizer(model_name: str) -> Callable[..., Any]:
    """open_clip's tokenizer for `model_name`, built once per process: building one reads the BPE vocabulary
    (about 85 ms), too slow to repeat for every batch a training reader tokenises."""
    return open_clip_registry().get_tokenizer(model_name)


@dataclass(frozen=True)
class BackboneConfig:
    """Which open_clip model to use: a model name plus a `pretrained` tag or local checkpoint path (or none)."""

    model_name: str = TINY_MODEL
    pretrained: str | None = None
    seed: int = 0
    precision: str = "fp32"

    @property
    def is_random(self) -> bool:
        """True when no weights are loaded: features come from a randomly initialised network."""
        return not self.pretrained

    @property
    def quick_gelu(self) -> bool:
        """Whether the network uses QuickGELU: what the weights were trained with where they say (a pretrained tag's
        open_clip config, or a local file's own marks: see `glscl.weights`), else what the name says.

        A name that asks for QuickGELU explicitly (`ViT-B-32-quickgelu`) with weights trained with GELU is refused:
        those weights would run through a different network than the one they were trained in.
        """
        named = bool(_model_config(self.model_name).get("quick_gelu", False))
        trained = self._trained_quick_gelu()
        if trained is None:
            return named
        if named and not trained:
            base = self.model_name.removesuffix(QUICK_GELU_SUFFIX)
            raise ValueError(
                f"--model {self.model_name} asks for QuickGELU but the {self.pretrained!r} weights were trained with "
                f"GELU: use --model {base} --pretrained {self.pretrained}"
            )
        return trained

    def _trained_quick_gelu(self) -> bool | None:
        """The activation the weights were trained with, where a tag's config or the file itself says."""
        if self.weight_file is not None:
            return self.weight_file.quick_gelu
        tag = _pretrained_tag_config(self.model_name, self.pretrained)
        return None if tag is None else bool(tag.get("quick_gelu", False))

    def check_weight_format(self) -> None:
        """Raise WeightFileError now for a local weight file of no known format (reads names only: no torch)."""
        self.weight_file  # noqa: B018 (the property reads the file's format)

    @property
    def weight_file(self) -> WeightFile | None:
        """What the local weight file is (None for a tag or random weights); raises WeightFileError for a file
        that is no weight file."""
        if not self.pretrained or not Path(self.pretrained).is_file():
            return None
        return inspect_weights(self.pretrained)

    @property
    def architecture(self) -> str:
        """The open_clip model name with its activation spelled out (`ViT-B-32-quickgelu` for OpenAI weights)."""
        if self.quick_gelu and not self.model_name.endswith(QUICK_GELU_SUFFIX):
            return self.model_name + QUICK_GELU_SUFFIX
        return self.model_name

    @property
    def model_id(self) -> str:
        """A stable id naming the exact network (activation included) and weights, stored beside every feature row."""
        if self.is_random:
            return f"{self.architecture}@random-seed{self.seed}"
        weights = Path(self.pretrained)
        if weights.is_file():
            return f"{self.architecture}@file-{file_sha256(weights)[:16]}"
        return f"{self.architecture}@{self.pretrained}"

    @property
    def image_size(self) -> int:
        """The square input size the image tower expects, read from the open_clip config (no weights loaded)."""
        return int(_model_config(self.model_name)["vision_cfg"]["image_size"])

    @property
    def embed_dim(self) -> int:
        """The joint embedding width D, read from the open_clip config."""
        return int(_model_config(self.model_name)["embed_dim"])

    def describe(self) -> str:
        """One line for logs and reports that says plainly what the features are worth."""
        if self.is_random:
            return (
                f"backbone {self.architecture} with RANDOM weights (seed {self.seed}): offline default, "
                "features are not CLIP features; use --model ViT-B-32 --pretrained openai for real use"
            )
        activation = "QuickGELU" if self.quick_gelu else "GELU"
        line = f"backbone {self.architecture} ({activation}) with weights {self.pretrained}"
        found = self.weight_file
        if found is None:
            return line
        line += f", a {found.describe()}"
        if self.architecture != self.model_name:
            line += f"; built as {self.architecture} although {self.model_name} was named, as its weights were trained"
        return line


def recorded_backbone(extra: dict) -> BackboneConfig:
    """The backbone a checkpoint was trained on, from its recorded facts: the config itself (checkpoints since it
    was recorded) or, for older ones, what their model id names (`arch@tag`, `arch@random-seedN`)."""
    if "backbone" in extra:
        return BackboneConfig(**extra["backbone"])
    architecture, _, weights = str(extra.get("backbone_model_id", "")).partition("@")
    if not architecture or weights.startswith("file-"):
        raise ValueError(
            f"the checkpoint does not name its backbone's weights ({extra.get('backbone_model_id')!r}): pass --model "
            "and --pretrained as the videos were ingested"
        )
    if weights.startswith("random-seed"):
        return BackboneConfig(model_name=architecture, seed=int(weights.removeprefix("random-seed")))
    return BackboneConfig(model_name=architecture, pretrained=weights)


def _model_config(model_name: str) -> dict:
    open_clip = open_clip_registry()
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; known: {', '.join(open_clip.list_models()[:8])}, ..."
        )
    return config


def _pretrained_tag_config(model_name: str, pretrained: str | None) -> dict | None:
    """open_clip's config of a pretrained tag (None for no weights)."""
    if not pretrained:
        return None
    base = model_name.removesuffix(QUICK_GELU_SUFFIX)
    open_clip = open_clip_registry()
    found = open_clip.get_pretrained_cfg(model_name, pretrained) or open_clip.get_pretrained_cfg(base, pretrained)
    return found or None
