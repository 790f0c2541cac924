"""The training stream: Ray Data reads each rank's batches from the tables ahead of the trainer, in step order.

A Ray Dataset of step numbers is mapped by reader actors that take each step's rows (`TablePairs.pairs`) and
emit them as numpy columns; the trainer iterates it with a bounded prefetch. Batches stay the ones the seeded
sampler fixes for (seed, epoch, step), so a stream started at any step (a resume), on any number of ranks, reads
exactly what the in-memory trainer would. Each rank streams its own slice: Ray Train's `streaming_split` hands
blocks to whichever worker asks first, which would make a rank's pairs depend on timing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import ray
import torch

from glscl.data import Batch, Pairs, PairSampler, TextInput, VideoInput, rank_batches
from glscl.training import BatchStream
from workers.ray_config import StreamConfig

_TEXT_FIELDS = ("tokens", "sentence", "mask")


def batch_columns(batch: Batch) -> dict[str, np.ndarray]:
    """A batch as named numpy arrays (absent fields left out), the form a Ray Data block carries."""
    columns = {"videos": batch.videos.data.numpy(), "video_mask": batch.videos.mask.numpy()}
    groups = {"text": batch.texts, "negative": batch.negatives}
    for prefix, texts in groups.items():
        for name, value in zip(_TEXT_FIELDS, texts or (), strict=False):
            if value is not None:
                columns[f"{prefix}_{name}"] = value.numpy()
    if batch.negative_valid is not None:
        columns["negative_valid"] = batch.negative_valid.numpy()
    return columns


def columns_batch(columns: dict[str, np.ndarray]) -> Batch:
    """The inverse of `batch_columns`."""

    def texts(prefix: str) -> TextInput | None:
        if f"{prefix}_tokens" not in columns:
            return None
        return TextInput(*(_tensor(columns.get(f"{prefix}_{name}")) for name in _TEXT_FIELDS))

    videos = VideoInput(_tensor(columns["videos"]), _tensor(columns["video_mask"]))
    return Batch(videos, texts("text"), texts("negative"), _tensor(columns.get("negative_valid")))


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    """A tensor of its own: the array may be a read-only view of Ray's object store."""
    return None if array is None else torch.from_numpy(np.array(array))


class StepReader:
    """A Ray Data map: a range of steps in (`first`, `stop`), one row per step out holding this rank's batch."""

    def __init__(self, data: Pairs, sampler: PairSampler, local: slice) -> None:
        self.data, self.sampler, self.local = data, sampler, local

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        steps = np.concatenate([np.arange(a, b) for a, b in zip(block["first"], block["stop"], strict=True)])
        read = []
        for step in steps:
            videos, texts = self.sampler.batch(*divmod(int(step), self.sampler.steps_per_epoch))
            read.append(batch_columns(self.data.pairs(videos[self.local], texts[self.local])))
        return {"step": steps, **{name: np.stack([r[name] for r in read]) for name in read[0]}}


def batch_stream(config: StreamConfig, data_bytes: int) -> BatchStream:
    """How a run reads a split holding `data_bytes`: through Ray Data readers, or in the training process when the
    split is under `config.readers_from_mb` (see `StreamConfig`). Both read a batch at a time."""
    if data_bytes < config.readers_from_mb * 2**20:
        return rank_batches
    return ray_batches(config)


def ray_batches(config: StreamConfig) -> BatchStream:
    """A `glscl.training.BatchStream` that reads through Ray Data with `config` (Ray must be running)."""

    def stream(data: Pairs, sampler: PairSampler, local: slice, start: int, stop: int) -> Iterator[Batch]:
        if stop <= start:
            return
        # One item per block of steps, built here: `ray.data.range` and `from_numpy` start tasks that wait for a
        # free CPU, and train workers may hold them all.
        firsts = range(start, stop, config.steps_per_block)
        ranges = [{"first": first, "stop": min(first + config.steps_per_block, stop)} for first in firsts]
        dataset = ray.data.from_items(ranges, override_num_blocks=len(ranges)).map_batches(
            StepReader,
            fn_constructor_kwargs={"data": data, "sampler": sampler, "local": local},
            batch_size=1,
            concurrency=min(config.readers, len(ranges)),
            num_cpus=0,
        )
        dataset.context.execution_options.preserve_order = True
        dataset.context.enable_progress_bars = False
        expected = start
        for row in dataset.iter_batches(batch_size=1, prefetch_batches=config.prefetch_steps, batch_format="numpy"):
            if int(row["step"][0]) != expected:
                raise RuntimeError(f"the training stream delivered step {int(row['step'][0])}, expected {expected}")
            expected += 1
            yield columns_batch({name: value[0] for name, value in row.items() if name != "step"})

    return stream
