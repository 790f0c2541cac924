"""Arrow row conversions, both ways: stage outputs into tables with the catalogue's schemas (columnar, no per-row
Python objects for the feature arrays), and stored list columns back into dense numpy arrays. numpy and pyarrow
only, like the rest of schemas/."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import CAPTIONS, FRAME_IMAGES, FRAMES, TEXTS, VIDEO_OK, VIDEOS


def now_utc() -> datetime:
    """The current time, timezone-aware, as every timestamp column stores it."""
    return datetime.now(UTC)


def vector_array(vectors: np.ndarray, dtype: type = np.float32) -> pa.FixedSizeListArray:
    """[N, D] to an Arrow fixed-size-list column of `dtype` (a LanceDB vector column)."""
    vectors = np.ascontiguousarray(vectors, dtype=dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def multivector_array(values: np.ndarray) -> pa.ListArray:
    """[N, M, D] to a list of fixed-size lists: the M float32 vectors of each row."""
    n, m, d = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, vector_array(values.reshape(-1, d)))


def list_array(values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """[N, M] to a list column with M items per row."""
    n, m = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type))


def videos_table(rows: Sequence[dict], run_id: str) -> pa.Table:
    """One `videos` row per attempted video (ok or failed), from decode results."""
    stamp = now_utc()
    columns = {name: [row.get(name) for row in rows] for name in VIDEOS.schema().names}
    columns["ingested_at"] = [stamp] * len(rows)
    columns["run_id"] = [run_id] * len(rows)
    for row_index, row in enumerate(rows):
        if row.get("status") != VIDEO_OK:
            for name in ("duration_s", "fps", "width", "height", "video_codec", "has_audio"):
                columns[name][row_index] = None
        else:
            columns["error"][row_index] = None
    return pa.Table.from_pydict(columns, schema=VIDEOS.schema())


def frames_table(
    batch: dict[str, np.ndarray], model_id: str, sampling: str, sampling_hash: str, run_id: str
) -> pa.Table:
    """`frames` rows for the ok videos of an encoded batch."""
    ok = np.asarray(batch["status"]) == VIDEO_OK
    features = np.asarray(batch["features"])[ok]
    mask = np.asarray(batch["frame_mask"])[ok].astype(bool)
    count = int(ok.sum())
    schema = FRAMES.schema(features.shape[-1])
    columns = {
        "video_id": pa.array(np.asarray(batch["video_id"])[ok].tolist(), pa.string()),
        "model_id": pa.array([model_id] * count, pa.string()),
        "sampling_hash": pa.array([sampling_hash] * count, pa.string()),
        "sampling": pa.array([sampling] * count, pa.string()),
        "num_frames": pa.array(mask.sum(axis=1).astype(np.int32)),
        "features": multivector_array(features),
        "frame_mask": list_array(mask, pa.bool_()),
        "timestamps": list_array(np.asarray(batch["timestamps"])[ok].astype(np.float32), pa.float32()),
        "vector": vector_array(np.asarray(batch["vector"])[ok]),
        "created_at": pa.array([now_utc()] * count, schema.field("created_at").type),
        "run_id": pa.array([run_id] * count, pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def frame_images_table(
    batch: dict[str, np.ndarray], sampling: str, sampling_hash: str, image_size: int, quality: int, run_id: str
) -> pa.Table:
    """`frame_images` rows (the sampled frames as JPEG) for the ok videos of a decoded batch."""
    ok = np.asarray(batch["status"]) == VIDEO_OK
    mask = np.asarray(batch["frame_mask"])[ok].astype(bool)
    count = int(ok.sum())
    schema = FRAME_IMAGES.schema()
    columns = {
        "video_id": pa.array(np.asarray(batch["video_id"])[ok].tolist(), pa.string()),
        "sampling_hash": pa.array([sampling_hash] * count, pa.string()),
        "sampling": pa.array([sampling] * count, pa.string()),
        "image_size": pa.array([image_size] * count, pa.int32()),
        "quality": pa.array([quality] * count, pa.int32()),
        "jpeg": pa.array([list(images) for images in np.asarray(batch["jpeg"])[ok]], pa.list_(pa.binary())),
        "frame_mask": list_array(mask, pa.bool_()),
        "created_at": pa.array([now_utc()] * count, schema.field("created_at").type),
        "run_id": pa.array([run_id] * count, pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def captions_table(rows: Sequence[dict], run_id: str) -> pa.Table:
    """`captions` rows (sentences and paragraphs) for videos whose id is known."""
    schema = CAPTIONS.schema()
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    columns["run_id"] = [run_id] * len(rows)
    return pa.Table.from_pydict(columns, schema=schema)


def texts_table(batch: dict[str, np.ndarray], model_id: str, max_words: int, run_id: str) -> pa.Table:
    """`texts` rows from an encoded caption batch."""
    mask = np.asarray(batch["token_mask"]).astype(bool)
    count = len(mask)
    schema = TEXTS.schema(np.asarray(batch["vector"]).shape[-1])
    columns = {
        "caption_id": pa.array(np.asarray(batch["caption_id"]).tolist(), pa.string()),
        "model_id": pa.array([model_id] * count, pa.string()),
        "max_words": pa.array([max_words] * count, pa.int32()),
        "vector": vector_array(np.asarray(batch["vector"])),
        "tokens": multivector_array(np.asarray(batch["tokens"], dtype=np.float32)),
        "token_mask": list_array(mask, pa.bool_()),
        "num_tokens": pa.array(mask.sum(axis=1).astype(np.int32)),
        "created_at": pa.array([now_utc()] * count, schema.field("created_at").type),
        "run_id": pa.array([run_id] * count, pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def dense(column: pa.ChunkedArray | pa.Array, rows: int, *shape: int, dtype=np.float32) -> np.ndarray:
    """A list (of fixed-size lists) column with equal lengths per row, as one [rows, *shape] array."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = pc.list_flatten(values)
    return values.to_numpy(zero_copy_only=False).astype(dtype).reshape(rows, *shape)
