"""Named training recipes: the project's defaults, and the authors' recipe as their released code trains
(zchoi/GLSCL). Every difference between the two is one named setting of GLSCLConfig or TrainConfig, so any of
them can also be set alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glscl.config import GLSCLConfig, TrainConfig


@dataclass(frozen=True)
class Recipe:
    """Settings a recipe fixes in the head config and in the training config (the rest keep their values)."""

    description: str
    head: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "project": Recipe(
        "the project's defaults: AdamW, cosine over the steps after warm-up, no decay on norms, positions and "
        "queries, logit scale at the head's lr, distinct videos per batch, padding masked, IDL on both modalities"
    ),
    "authors": Recipe(
        "the authors' released training: BertAdam (no bias correction), warm-up cosine over five epochs of steps, "
        "decay on all but biases, logit scale at CLIP's lr, batches over captions, CLIP's matrices stored in fp16 "
        "(full mode), ICL divided by K, IDL on the "
        "visual queries only, local queries attending to the encoders' outputs at padded frames and tokens",
        head={
            "icl_form": "authors",
            "idl_both_modalities": False,
            "local_padding_mask": False,
            "padding_memory": "encoded",
        },
        train={
            "optimizer": "bertadam",
            "schedule": "authors",
            "decay": "authors",
            "logit_scale_lr": "clip",
            "batches": "captions",
            "clip_weights": "fp16",
        },
    ),
}


def recipe(name: str) -> Recipe:
    """The recipe called `name`, or a ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}")
    return RECIPES[name]


def apply_recipe(name: str, head: GLSCLConfig, train: TrainConfig) -> tuple[GLSCLConfig, TrainConfig]:
    """`head` and `train` with the recipe's settings in place of theirs."""
    chosen = recipe(name)
    return dataclasses.replace(head, **chosen.head), dataclasses.replace(train, **chosen.train)


def recipe_head(
    preset: str, name: str, overrides: dict[str, Any], embed_dim: int, frames: int, max_words: int, quick_gelu: bool
) -> GLSCLConfig:
    """The GLSCL config of a run: a head preset, the recipe's settings, then overrides, sized to the stored features.

    The temporal transformer takes the backbone's activation (`quick_gelu`: QuickGELU for OpenAI weights) unless an
    override names one, whether it starts from the CLIP text tower or not, so `temporal_init` alone changes only
    the start.
    """
    from glscl.config import HEAD_PRESETS, GLSCLConfig

    if preset not in HEAD_PRESETS:
        raise ValueError(f"unknown head preset {preset!r}: use one of {sorted(HEAD_PRESETS)}")
    values = {**HEAD_PRESETS[preset], **recipe(name).head, **overrides}
    values.setdefault("temporal_activation", "quick_gelu" if quick_gelu else "gelu")
    return GLSCLConfig(**{**values, "embed_dim": embed_dim, "max_frames": frames, "max_words": max_words})


def recipe_train(train: TrainConfig, name: str) -> TrainConfig:
    """A run's training config with the recipe's settings in place (the twin of `recipe_head`)."""
    return dataclasses.replace(train, **recipe(name).train)
