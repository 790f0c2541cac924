"""Where Ray runs and how big the stages are, as a config the command line and flows share (no Ray import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs (None: a local Ray started here; else an existing cluster's address) and stage sizes."""

    address: str | None = None
    num_cpus: int | None = None
    encode_actors: int = 1
    videos_per_encode_batch: int = 8
    texts_per_encode_batch: int = 128
