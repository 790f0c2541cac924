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
