"""The packed float16 layout of a video's GLSCL encoding in a `video_index` table: its encoded frames, its
concept vectors and its frame mask in one fixed-size column, so the re-rank reads each candidate with a single
random read (on a gallery larger than memory every column of a take is another read from disk).

Layout of one row, F frame slots, K concepts, D dims: [frames F*D | concepts K*D | mask F (1.0 valid, 0.0 not)].
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from glscl.model import VideoEncoding
from schemas.rows import dense, vector_array
from schemas.tables import encodings_width


def pack_encodings(video: VideoEncoding) -> pa.FixedSizeListArray:
    """Rows of packed encodings from frames [N, F, D], mask [N, F] and concepts [N, K, D]."""
    n = video.frames.shape[0]
    parts = [video.frames.reshape(n, -1), video.local.reshape(n, -1), video.mask.reshape(n, -1)]
    return vector_array(np.concatenate([part.float().numpy() for part in parts], axis=1), np.float16)


def unpack_encodings(column: pa.ChunkedArray | pa.Array, slots: int, num_queries: int, dim: int) -> VideoEncoding:
    """The VideoEncoding (float32 frames and concepts, bool mask) of packed rows. Each part is converted from
    float16 on its own, in torch (several times faster than numpy's conversion), into a contiguous tensor."""
    n = len(column)
    values = torch.from_numpy(dense(column, n, encodings_width(slots, num_queries, dim), dtype=np.float16))
    frames_end = slots * dim
    local_end = frames_end + num_queries * dim
    return VideoEncoding(
        values[:, :frames_end].float().reshape(n, slots, dim),
        values[:, local_end:] > 0.5,
        values[:, frames_end:local_end].float().reshape(n, num_queries, dim),
    )


def packed_slots(field: pa.Field, num_queries: int, dim: int) -> int:
    """The frame slots of a packed `encodings` field, from its width."""
    width = field.type.list_size
    slots, remainder = divmod(width - num_queries * dim, dim + 1)
    if remainder or slots < 1:
        raise ValueError(f"{field.name} holds {width} values per row, not a packing of K={num_queries}, D={dim}")
    return slots
