"""Ray wiring for the stages: connect to (or start) Ray; run ingest's decode -> encode as Ray Data jobs that stream
encoded batches back to the single committer; run the evaluation's shard protocol on actors; and build index rows
in tasks with back-pressure, each with a progress bar (workers/terminal.py). The stages themselves (decode.py,
encode.py, score.py, video_index.py) are plain code that Ray only schedules."""

from __future__ import annotations

import itertools
import logging
import math
import socket
import warnings
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data

from glscl.backbone_config import BackboneConfig
from glscl.metrics import RankAccumulator
from schemas.store import StoreConfig
from workers.evaluate.score import ShardScorer, ShardSpec
from workers.features import FeatureQuery
from workers.index.video_index import IndexShard, index_rows
from workers.ingest.decode import decode_item
from workers.ingest.encode import FrameEncoder, TextEncoder
from workers.ingest.sampling import SamplingConfig
from workers.ray_config import RayConfig
from workers.terminal import Update, adopt_loggers, current, progress


def ensure_ray(config: RayConfig) -> None:
    """Start a local Ray (default) or join the cluster at `config.address`, once per process. Under a quiet
    terminal (workers/terminal.py) Ray does not forward its workers' output to this process; with a log file its
    driver logs from INFO up."""
    if ray.is_initialized():
        return
    # Ray starts its processes with fork+exec, which lancedb's fork warning does not concern.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    terminal = current()
    adopt_loggers()  # Ray's loggers exist once ray and ray.data are imported
    settings = {
        "logging_level": logging.INFO if terminal.log_file else logging.WARNING,
        "log_to_driver": not terminal.quiet,
    }
    if config.address:
        check_reachable(config.address, config.connect_timeout_s)
        ray.init(address=config.address, **settings)
    else:
        # "local" always starts a fresh Ray here, even when an earlier `ray start` left its address behind.
        ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, **settings)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the callers draw their own bars


def check_reachable(address: str, timeout_s: float) -> None:
    """Refuse a cluster address nothing answers on within `timeout_s` (Ray itself keeps retrying for minutes).
    `auto` and other addresses without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at {address} within {timeout_s:g} s ({error})") from None


def cluster_has_gpu() -> bool:
    """Whether the Ray cluster offers a GPU: encode actors then ask for one and run on CUDA."""
    return ray.cluster_resources().get("GPU", 0) > 0


def _encoder_resources(gpu: bool) -> dict[str, float]:
    return {"num_gpus": 1} if gpu else {"num_cpus": 1}


def frames_job(
    items: list[dict],
    sampling: SamplingConfig,
    backbone: BackboneConfig,
    config: RayConfig,
    jpeg_quality: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Decode (CPU tasks) and encode (model actors) the given videos; yield encoded batches as they finish (with
    each video's frames as JPEG files when `jpeg_quality` is set)."""
    gpu = cluster_has_gpu()
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    decode_kwargs = {"sampling": sampling, "image_size": backbone.image_size, "jpeg_quality": jpeg_quality}
    dataset = dataset.map(decode_item, fn_kwargs=decode_kwargs, num_cpus=1).map_batches(
        FrameEncoder,
        fn_constructor_kwargs={"backbone": backbone, "use_gpu": gpu},
        batch_size=config.videos_per_encode_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.encode_actors),
        **_encoder_resources(gpu),
    )
    with progress("decode + encode videos", len(items), "videos") as update:
        for batch in dataset.iter_batches(batch_size=config.videos_per_encode_batch, batch_format="numpy"):
            update(advance=len(batch["video_id"]))
            yield batch


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
    with progress("encode texts", len(captions), "texts") as update:
        for batch in dataset.iter_batches(batch_size=config.texts_per_encode_batch, batch_format="numpy"):
            update(advance=len(batch["caption_id"]))
            yield batch


def scoring_job(
    store: StoreConfig,
    query: FeatureQuery,
    ids: list[str],
    checkpoint: str,
    shard_videos: int,
    block_size: tuple[int, int],
    dual_softmax: float | None,
) -> tuple[dict[str, RankAccumulator], dict]:
    """Score every text of `query` against the gallery `ids` in shards of about `shard_videos` videos, one
    ShardScorer actor each, in two rounds (true scores, then rank counts against them), and merge the shards'
    counts; also returns the shard count, how many Ray nodes the shards ran on, and the slowest shard's seconds
    per phase."""
    gpu = cluster_has_gpu()
    shards = max(1, math.ceil(len(ids) / shard_videos))
    bounds = np.linspace(0, len(ids), shards + 1).round().astype(int)
    # Every shard actor must be alive at once (round two needs round one's blocks): a whole CPU (or GPU) each
    # when the cluster has that many, else a token share spread over the nodes, so that placement never waits.
    available = ray.cluster_resources().get("GPU" if gpu else "CPU", 0.0)
    share = 1.0 if shards <= int(available) else 0.01
    resources = {"num_gpus": share, "num_cpus": 0} if gpu else {"num_cpus": share}
    resources["scheduling_strategy"] = "SPREAD"
    actor = ray.remote(**resources)(ShardScorer)
    scorers = [
        actor.remote(
            ShardSpec(
                store, query, query.sampling_hash, ids, int(lo), int(hi), checkpoint, block_size, gpu, dual_softmax
            )
        )
        for lo, hi in itertools.pairwise(bounds)
    ]
    with progress("evaluate: prepare shards", 3 * shards, "shard steps") as update:
        prepared = [s.prepare.remote() for s in scorers]
        texts = scorers[0].encode_texts.remote()  # once, while the other shards prepare; Ray hands it to every shard
        _get_counted(prepared, update)
        update(description="evaluate: score shards")
        true: dict[str, dict[int, float]] = {}
        for part in _get_counted([s.score.remote(texts) for s in scorers], update):
            for name, scores in part.items():
                true.setdefault(name, {}).update(scores)
        true_scores = {name: np.array([t[i] for i in range(len(t))], dtype=np.float32) for name, t in true.items()}
        update(description="evaluate: rank shards")
        partials = _get_counted([s.count.remote(true_scores) for s in scorers], update)
    stats = ray.get([s.stats.remote() for s in scorers])
    nodes = set(ray.get([s.node_id.remote() for s in scorers]))
    merged = partials[0]
    for partial in partials[1:]:
        for name, accumulator in partial.items():
            merged[name].merge(accumulator)
    timings = {key: max(s.get(key, 0.0) for s in stats) for key in sorted({key for s in stats for key in s})}
    return merged, {"shards": shards, "nodes": len(nodes), **{f"slowest_shard_{k}": v for k, v in timings.items()}}


def _get_counted(refs: list[ray.ObjectRef], update: Update) -> list:
    """`ray.get(refs)`, advancing the progress bar by one as each finishes."""
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        update(advance=len(done))
    return ray.get(refs)


def index_job(shards: list[IndexShard]) -> Iterator[pa.Table]:
    """Build each shard's video index rows in a Ray task (one CPU, retried twice) and yield them as tasks finish.
    At most two tasks per available CPU are in flight, so finished rows wait in the object store only as long as
    the caller takes to write the rows before them."""
    task = ray.remote(num_cpus=1, max_retries=2)(index_rows)
    capacity = max(1, int(ray.available_resources().get("CPU", 1)))
    pending, waiting = list(shards), []
    with progress("index videos", sum(len(shard.video_ids) for shard in shards), "videos") as update:
        while pending or waiting:
            while pending and len(waiting) < 2 * capacity:
                waiting.append(task.remote(pending.pop(0)))
            done, waiting = ray.wait(waiting, num_returns=1)
            rows = ray.get(done[0])
            update(advance=rows.num_rows)
            yield rows
