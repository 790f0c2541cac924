"""Ray wiring for the ingest stages: connect to (or start) Ray, and run decode -> encode as Ray Data jobs that
stream encoded batches back to the single committer. The stages themselves live in decode.py and encode.py."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray
import ray.data

from glscl.backbone import BackboneConfig
from workers.decode import decode_item
from workers.encode import FrameEncoder, TextEncoder
from workers.sampling import SamplingConfig


@dataclass(frozen=True)
class RayConfig:
    """Where Ray runs (None: a local Ray started here; else an existing cluster's address) and stage sizes."""

    address: str | None = None
    num_cpus: int | None = None
    encode_actors: int = 1
    videos_per_encode_batch: int = 8
    texts_per_encode_batch: int = 128


def ensure_ray(config: RayConfig) -> None:
    """Start a local Ray (default) or join the cluster at `config.address`, once per process."""
    if ray.is_initialized():
        return
    # Ray starts its processes with fork+exec, which lancedb's fork warning does not concern.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    if config.address:
        ray.init(address=config.address, logging_level=logging.WARNING)
    else:
        # "local" always starts a fresh Ray here, even when an earlier `ray start` left its address behind.
        ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False


def cluster_has_gpu() -> bool:
    """Whether the Ray cluster offers a GPU: encode actors then ask for one and run on CUDA."""
    return ray.cluster_resources().get("GPU", 0) > 0


def _encoder_resources(gpu: bool) -> dict[str, float]:
    return {"num_gpus": 1} if gpu else {"num_cpus": 1}


def frames_job(
    items: list[dict], sampling: SamplingConfig, backbone: BackboneConfig, config: RayConfig
) -> Iterator[dict[str, np.ndarray]]:
    """Decode (CPU tasks) and encode (model actors) the given videos; yield encoded batches as they finish."""
    gpu = cluster_has_gpu()
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    dataset = dataset.map(
        decode_item, fn_kwargs={"sampling": sampling, "image_size": backbone.image_size}, num_cpus=1
    ).map_batches(
        FrameEncoder,
        fn_constructor_kwargs={"backbone": backbone, "use_gpu": gpu},
        batch_size=config.videos_per_encode_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.encode_actors),
        **_encoder_resources(gpu),
    )
    yield from dataset.iter_batches(batch_size=config.videos_per_encode_batch, batch_format="numpy")


def texts_job(
    captions: list[dict], backbone: BackboneConfig, max_words: int, config: RayConfig
) -> Iterator[dict[str, np.ndarray]]:
    """Encode caption texts with the text tower in model actors; yield encoded batches."""
    gpu = cluster_has_gpu()
    blocks = max(1, len(captions) // config.texts_per_encode_batch)
    dataset = ray.data.from_items(captions, override_num_blocks=blocks).map_batches(
        TextEncoder,
        fn_constructor_kwargs={"backbone": backbone, "max_words": max_words, "use_gpu": gpu},
        batch_size=config.texts_per_encode_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.encode_actors),
        **_encoder_resources(gpu),
    )
    yield from dataset.iter_batches(batch_size=config.texts_per_encode_batch, batch_format="numpy")
