"""Which CLIP backbone: an open_clip model name with its weights, the activation they were trained with, and the
id stored beside every feature row. Kept apart from the loaded network (glscl.backbone) so that configs and the
command line import without torch; open_clip's config registry is imported on first use."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from glscl.files import file_sha256

TINY_MODEL = "glscl-tiny"
QUICK_GELU_SUFFIX = "-quickgelu"
_CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def open_clip_registry() -> ModuleType:
    """open_clip with glscl's own model configs registered; imported on first use, as it takes seconds."""
    import open_clip

    open_clip.add_model_config(_CONFIG_DIR)
    return open_clip


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
        """Whether the network uses QuickGELU: what a pretrained tag was trained with, else what the name says.

        A name that asks for QuickGELU explicitly (`ViT-B-32-quickgelu`) with weights trained with GELU is refused:
        those weights would run through a different network than the one they were trained in.
        """
        named = bool(_model_config(self.model_name).get("quick_gelu", False))
        tag = _pretrained_tag_config(self.model_name, self.pretrained)
        if tag is None:
            return named
        trained = bool(tag.get("quick_gelu", False))
        if named and not trained:
            base = self.model_name.removesuffix(QUICK_GELU_SUFFIX)
            raise ValueError(
                f"--model {self.model_name} asks for QuickGELU but the {self.pretrained!r} weights were trained with "
                f"GELU: use --model {base} --pretrained {self.pretrained}"
            )
        return trained

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
        return f"backbone {self.architecture} ({activation}) with weights {self.pretrained}"


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
    """open_clip's config of a pretrained tag (None for no weights or a local file)."""
    if not pretrained or Path(pretrained).is_file():
        return None
    base = model_name.removesuffix(QUICK_GELU_SUFFIX)
    open_clip = open_clip_registry()
    found = open_clip.get_pretrained_cfg(model_name, pretrained) or open_clip.get_pretrained_cfg(base, pretrained)
    return found or None
