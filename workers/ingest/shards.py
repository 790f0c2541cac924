"""One ingest shard's outcome as rows to commit, its commit, and the run's totals over its shards (stage seconds,
frames, failures, throughput per stage worker): plain code the ingest flow calls between its Ray jobs."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.catalog import Catalog
from schemas.rows import frame_images_table, frames_table, videos_table
from schemas.tables import FRAME_IMAGES, FRAMES, VIDEO_FAILED, VIDEOS


@dataclass
class ShardResult:
    """Encoded rows of one shard, ready to commit, with the stage times measured inside the workers."""

    videos: list[dict]
    frames: pa.Table
    images: pa.Table | None
    decode_seconds: float
    encode_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class FramesRecipe:
    """What a shard's rows are made with: the backbone's model id and input size, the sampling (as stored and its
    hash) and the JPEG quality of kept frames (None: none kept)."""

    model_id: str
    image_size: int
    sampling: str
    sampling_hash: str
    jpeg_quality: int | None = None


def shard_result(batches: Iterable[dict[str, np.ndarray]], recipe: FramesRecipe, run_id: str) -> ShardResult:
    """Collect a shard's encoded batches (as the frames job yields them) into `videos` rows, one `frames` table
    and (when frames are kept) one `frame_images` table, summing the decode and encode seconds the workers
    measured."""
    start = time.perf_counter()
    videos, frames, images, decode_s, encode_s = [], [], [], 0.0, 0.0
    for batch in batches:
        n = len(batch["video_id"])
        columns = [name for name in (*VIDEOS.schema().names, "retry") if name in batch]
        videos.extend({name: _plain(batch[name][i]) for name in columns} for i in range(n))
        frames.append(frames_table(batch, recipe.model_id, recipe.sampling, recipe.sampling_hash, run_id))
        if recipe.jpeg_quality is not None:
            images.append(
                frame_images_table(
                    batch, recipe.sampling, recipe.sampling_hash, recipe.image_size, recipe.jpeg_quality, run_id
                )
            )
        decode_s += float(np.sum(batch["decode_seconds"]))
        encode_s += float(np.sum(batch["encode_seconds"]))
    kept = pa.concat_tables(images) if images else None
    return ShardResult(videos, pa.concat_tables(frames), kept, decode_s, encode_s, time.perf_counter() - start)


def commit_shard_rows(catalog: Catalog, result: ShardResult, embed_dim: int, run_id: str) -> dict[str, int]:
    """Write a shard: `videos` first (new rows; failed rows retried successfully are updated), then `frames` and
    kept `frame_images`, each one merge on its key, so a shard committed twice leaves one row per video."""
    retried, fresh = [], []
    for video in result.videos:
        (retried if video.pop("retry") else fresh).append(video)
    inserted = catalog.merge(VIDEOS, videos_table(fresh, run_id)).inserted
    updated = catalog.merge(VIDEOS, videos_table(retried, run_id), update=True).updated if retried else 0
    frames = catalog.merge(FRAMES, result.frames, embed_dim).inserted
    images = catalog.merge(FRAME_IMAGES, result.images).inserted if result.images is not None else 0
    return {"videos_inserted": inserted, "videos_updated": updated, "frames_rows": frames, "frame_images": images}


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class ShardTally:
    """Running totals over the shards of a run, for the summary."""

    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    frames_wall: float = 0.0
    commit_seconds: float = 0.0
    frames: int = 0

    def add(self, result: ShardResult, commit_seconds: float) -> int:
        """Add one committed shard; returns its frame count."""
        shard_frames = int(np.sum(result.frames["num_frames"].to_numpy())) if result.frames.num_rows else 0
        self.decode_seconds += result.decode_seconds
        self.encode_seconds += result.encode_seconds
        self.frames_wall += result.wall_seconds
        self.commit_seconds += commit_seconds
        self.frames += shard_frames
        return shard_frames

    def record(
        self, result: ShardResult, written: dict[str, int], commit_seconds: float, counts: Counter, failures: Counter
    ) -> tuple[int, int]:
        """Add one committed shard to the totals, its videos to `counts` (ok, failed, frames, frame rows written)
        and its failures by reason to `failures`; returns its frame and failed-video counts."""
        shard_frames = self.add(result, commit_seconds)
        shard_failures = Counter(v["error"] for v in result.videos if v["status"] == VIDEO_FAILED)
        failures.update(shard_failures)
        failed = sum(shard_failures.values())
        counts.update(ok=len(result.videos) - failed, failed=failed, frames=shard_frames)
        counts["frames_rows_written"] += written["frames_rows"]
        if written["frame_images"]:
            counts["frame_images_written"] += written["frame_images"]
        return shard_frames, failed

    def throughput(self, attempted: int) -> dict[str, float]:
        """Videos and frames per second, end to end and per stage worker."""
        return {
            "videos_per_s_end_to_end": attempted / max(self.frames_wall + self.commit_seconds, 1e-9),
            "decode_videos_per_s_per_worker": attempted / self.decode_seconds if self.decode_seconds else 0.0,
            "decode_frames_per_s_per_worker": self.frames / self.decode_seconds if self.decode_seconds else 0.0,
            "encode_frames_per_s_per_actor": self.frames / self.encode_seconds if self.encode_seconds else 0.0,
        }
