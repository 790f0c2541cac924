"""Where Ray runs and how big the stages are, as a config the command line and flows share (no Ray import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs (None: a local Ray started here; else an existing cluster's address, which must answer
    within `connect_timeout_s`) and stage sizes."""

    address: str | None = None
    connect_timeout_s: float = 10.0
    num_cpus: int | None = None
    encode_actors: int = 1
    videos_per_encode_batch: int = 8
    texts_per_encode_batch: int = 128


@dataclass(frozen=True)
class StreamConfig:
    """How training reads its batches: reader actors (they reserve no CPU, so that they start beside train
    workers that reserve every core; their number bounds them), steps per Ray Data block (fewer, larger blocks
    cost less scheduling: about 20 ms a block here) and how many steps the trainer reads ahead. A rank holds
    about `prefetch_steps` + `steps_per_block` batches, whatever the split's size."""

    readers: int = 2
    steps_per_block: int = 4
    prefetch_steps: int = 8

    def __post_init__(self) -> None:
        for name in ("readers", "steps_per_block", "prefetch_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream setting {name} must be at least 1, got {getattr(self, name)}")
