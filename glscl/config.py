"""Typed hyperparameters of the GLSCL head, losses and optimiser, with the paper's values as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

TEMPORAL_ACTIVATIONS = ("quick_gelu", "gelu")
TEMPORAL_INITS = ("clip", "random")
ICL_FORMS = ("authors", "mean")
PADDING_MEMORIES = ("zeros", "encoded")
Mode = Literal["head", "full"]
BATCH_UNITS = ("videos", "captions")
CLIP_WEIGHT_STORAGE = ("fp32", "fp16")
SCHEDULES = ("project", "authors")
DECAY_RULES = ("project", "authors")
LOGIT_SCALE_LRS = ("head", "clip")
OPTIMIZERS = ("adamw", "bertadam")
# Texts x videos per block of exact scoring: tall, narrow blocks keep the [texts, videos, F] intermediates in cache
# (benchmarks/RESULTS.md, exhaustive scoring).
DEFAULT_BLOCK = (1024, 32)


@dataclass
class GLSCLConfig:
    """Every GLSCL hyperparameter in one place; defaults follow the paper (ActivityNet, ViT-B/32).

    `idl_both_modalities=True` regularises the textual queries too, as the abstract says; the authors' code
    applies the intra-diversity loss to the visual queries only (set False to match it).
    `temporal_init="clip"` starts the temporal transformer from the CLIP text tower's first blocks and positional
    embedding, as the paper and the authors do ("random" for ablation). `icl_form` picks the ICL diagonal term:
    "authors" divides the batch sum of per-query cosines by K, "mean" takes the batch mean (see `glscl.losses`).
    `local_padding_mask=False` lets the local queries attend to padded frames and tokens, as the authors' code does;
    `padding_memory` says what they find there: "zeros", or "encoded" (the authors' form: the temporal transformer's
    outputs over a blank frame's CLIP feature, and the text tower's outputs after the end-of-text token).
    """

    embed_dim: int = 512
    max_frames: int = 64
    max_words: int = 64
    frame_position_size: int = 77
    temporal_layers: int = 4
    temporal_heads: int = 8
    temporal_ffn: int = 2048
    temporal_dropout: float = 0.0
    temporal_activation: str = "quick_gelu"
    temporal_init: str = "clip"
    global_temperature: float = 3.0
    num_queries: int = 8
    decoder_layers: int = 3
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    dropout: float = 0.1
    local_padding_mask: bool = True
    padding_memory: str = "zeros"
    local_weight: float = 0.5
    logit_scale_init: float = 100.0
    logit_scale_max: float = 100.0
    idl_alpha: float = 1e-4
    idl_margin: float = 0.1
    idl_both_modalities: bool = True
    icl_beta: float = 0.005
    icl_target: float = 0.75
    icl_form: str = "authors"
    icl_weight: float = 1.0
    idl_weight: float = 1.0
    lr: float = 1e-4
    clip_lr: float = 1e-7
    weight_decay: float = 0.2
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        for heads_field in ("temporal_heads", "decoder_heads"):
            heads = getattr(self, heads_field)
            if heads <= 0 or self.embed_dim % heads:
                raise ValueError(f"embed_dim={self.embed_dim} is not divisible by {heads_field}={heads}")
        if self.max_frames > self.frame_position_size:
            raise ValueError(f"max_frames={self.max_frames} exceeds frame_position_size={self.frame_position_size}")
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if self.global_temperature <= 0:
            raise ValueError(f"global_temperature must be > 0, got {self.global_temperature}")
        if not 0 < self.logit_scale_init <= self.logit_scale_max:
            raise ValueError(
                f"need 0 < logit_scale_init ({self.logit_scale_init}) <= logit_scale_max ({self.logit_scale_max})"
            )
        for name, allowed in (
            ("temporal_activation", TEMPORAL_ACTIVATIONS),
            ("temporal_init", TEMPORAL_INITS),
            ("icl_form", ICL_FORMS),
            ("padding_memory", PADDING_MEMORIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.padding_memory == "encoded" and self.local_padding_mask:
            raise ValueError("padding_memory='encoded' needs local_padding_mask=False: masked padding is never read")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GLSCLConfig:
        """Build a config from `to_dict()` output; unknown keys are an error, missing keys take defaults."""
        return strict_from_dict(cls, values)


def strict_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build dataclass `cls` from a dict, refusing keys it does not know (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**values)


# Head presets: the paper's values, and a small head for the tiny offline backbone (64-d features, demo data).
TINY_HEAD: dict[str, Any] = {
    "temporal_layers": 2,
    "temporal_heads": 2,
    "temporal_ffn": 256,
    "decoder_layers": 2,
    "decoder_heads": 2,
    "decoder_ffn": 256,
    "num_queries": 4,
    "lr": 3e-3,
    "logit_scale_init": 20.0,
    "logit_scale_max": 20.0,
}
HEAD_PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "tiny": TINY_HEAD}


@dataclass
class TrainConfig:
    """Run settings; the optimiser's lr, clip_lr, weight_decay, warmup_fraction and grad_clip come from GLSCLConfig.

    `eval_every` counts steps between evaluations/checkpoints (0: only at epoch ends); `log_every` counts steps
    between step logs (0: none). `betas`/`eps` are the authors' BertAdam values (AdamW adds bias correction).
    `order_negatives` adds, per training video with two or more sentences, its sentences in reverse order as a
    hard negative text (a project addition, not in the paper: it makes event order matter to the loss).
    `optimizer`, `schedule`, `decay` and `logit_scale_lr` choose the project's or the authors' optimiser pieces
    (`glscl.optim`); `batches` = "videos" draws distinct videos with one of their texts each, "captions" walks
    all texts as the authors' loaders do (two captions of one video may meet in a batch, as negatives).
    `clip_weights` = "fp16" keeps the fine-tuned CLIP's matrices (the ones OpenAI's `convert_weights` casts) in
    fp16 with no fp32 master copy, as the authors' run does on a GPU: at clip_lr 1e-7 most updates then round
    away and CLIP stays nearly frozen. Full mode only; "fp32" lets every update count.
    """

    epochs: int = 5
    batch_size: int = 64
    seed: int = 42
    eval_every: int = 0
    log_every: int = 50
    mode: Mode = "head"
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    order_negatives: bool = False
    optimizer: str = "adamw"
    schedule: str = "project"
    decay: str = "project"
    logit_scale_lr: str = "head"
    batches: str = "videos"
    clip_weights: str = "fp32"

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        choices = {
            "mode": ("head", "full"),
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "decay": DECAY_RULES,
            "logit_scale_lr": LOGIT_SCALE_LRS,
            "batches": BATCH_UNITS,
            "clip_weights": CLIP_WEIGHT_STORAGE,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if min(self.seed, self.eval_every, self.log_every) < 0:
            raise ValueError("seed, eval_every and log_every must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from `to_dict()` output; unknown keys are an error."""
        return strict_from_dict(cls, values)
