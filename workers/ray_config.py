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
    about `prefetch_steps` + `steps_per_block` batches, whatever the split's size.

    A split whose data (stored features, or decoded frames in full mode) is under `readers_from_mb` is read in the
    training process instead, still a batch at a time: the readers' start-up (about 5 s: each loads torch and
    lancedb) would cost such a run more than reading ahead saves. 0: readers always."""

    readers: int = 2
    steps_per_block: int = 4
    prefetch_steps: int = 8
    readers_from_mb: int = 256

    def __post_init__(self) -> None:
        for name in ("readers", "steps_per_block", "prefetch_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream setting {name} must be at least 1, got {getattr(self, name)}")
        if self.readers_from_mb < 0:
            raise ValueError(f"stream setting readers_from_mb must be 0 or more, got {self.readers_from_mb}")
