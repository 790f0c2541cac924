"""The packed layout of a video's GLSCL encoding in a `video_index` table: its encoded frames, its concept vectors
and its frame mask in one fixed-size column, so the re-rank reads each candidate with a single random read (on a
gallery larger than memory every column of a take is another read from disk).

Two forms, told apart by the column's value type (`schemas.tables.encodings_form`), F frame slots, K concepts, D dims:
- float16: [frames F*D | concepts K*D | mask F (1.0 valid, 0.0 not)];
- int8: [frame codes F*D | concept codes K*D | scales (F + K) float32, little-endian, 4 bytes each | mask F (1, 0)],
  each frame and concept vector quantised symmetrically on its own (`quantize`): about half the bytes of float16
  (37 against 70 KB a video at F = 64, K = 8, D = 512), so half the re-rank's read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from glscl.model import VideoEncoding
from schemas.rows import dense, vector_array
from schemas.tables import ENCODINGS_FORMS, SCALE_BYTES, encodings_form, encodings_width

_SCALE = np.dtype("<f4")
_CODE_MAX = 127


def quantize(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 codes [..., D] of vectors [..., D] and one float32 scale per vector [...]: code = round(v / s)
    with s = max |v| / 127, so v ~ code * s within s / 2 per value (a zero vector: scale 0, codes 0)."""
    vectors = vectors.float()
    scale = vectors.abs().amax(-1) / _CODE_MAX
    codes = (vectors / scale.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)).round()
    return codes.clamp_(-_CODE_MAX, _CODE_MAX).to(torch.int8), scale


def pack_encodings(video: VideoEncoding, form: str = "float16") -> pa.FixedSizeListArray:
    """Rows of packed encodings in `form` from frames [N, F, D], mask [N, F] and concepts [N, K, D]."""
    if form not in ENCODINGS_FORMS:
        raise ValueError(f"encodings must be one of {ENCODINGS_FORMS}, got {form!r}")
    n = video.frames.shape[0]
    if form == "int8":
        frames, frame_scale = quantize(video.frames)
        local, local_scale = quantize(video.local)
        scales = torch.cat([frame_scale, local_scale], 1).numpy().astype(_SCALE).view(np.int8)
        mask = video.mask.reshape(n, -1).to(torch.int8)
        parts = [frames.reshape(n, -1).numpy(), local.reshape(n, -1).numpy(), scales, mask.numpy()]
        return vector_array(np.concatenate(parts, axis=1), np.int8)
    parts = [video.frames.reshape(n, -1), video.local.reshape(n, -1), video.mask.reshape(n, -1)]
    return vector_array(np.concatenate([part.float().numpy() for part in parts], axis=1), np.float16)


def unpack_encodings(column: pa.ChunkedArray | pa.Array, slots: int, num_queries: int, dim: int) -> VideoEncoding:
    """The VideoEncoding (float32 frames and concepts, bool mask) of packed rows of either form. Each part is
    converted on its own, in torch (several times faster than numpy's conversion), into a contiguous tensor; int8
    codes are converted, then scaled in place (multiplying the int8 codes by float32 scales directly, one pass on
    paper, takes torch's slower mixed-type path: 4.6 against 2.9 ms for 200 videos of F = 64)."""
    n, form = len(column), encodings_form(column.type)
    width = encodings_width(slots, num_queries, dim, form)
    frames_end = slots * dim
    local_end = frames_end + num_queries * dim
    if form == "int8":
        raw = dense(column, n, width, dtype=np.int8)
        scales_end = local_end + SCALE_BYTES * (slots + num_queries)
        scales = torch.from_numpy(raw[:, local_end:scales_end].copy().view(_SCALE))  # a copy: rows of 4-byte scales
        codes = torch.from_numpy(raw)
        return VideoEncoding(
            codes[:, :frames_end].float().reshape(n, slots, dim).mul_(scales[:, :slots, None]),
            codes[:, scales_end:] > 0,
            codes[:, frames_end:local_end].float().reshape(n, num_queries, dim).mul_(scales[:, slots:, None]),
        )
    values = torch.from_numpy(dense(column, n, width, dtype=np.float16))
    return VideoEncoding(
        values[:, :frames_end].float().reshape(n, slots, dim),
        values[:, local_end:] > 0.5,
        values[:, frames_end:local_end].float().reshape(n, num_queries, dim),
    )


def packed_slots(field: pa.Field, num_queries: int, dim: int) -> int:
    """The frame slots of a packed `encodings` field, from its form and width."""
    width = field.type.list_size
    per_slot, fixed = dim + 1, num_queries * dim
    if encodings_form(field.type) == "int8":
        per_slot, fixed = per_slot + SCALE_BYTES, fixed + SCALE_BYTES * num_queries
    slots, remainder = divmod(width - fixed, per_slot)
    if remainder or slots < 1:
        raise ValueError(f"{field.name} holds {width} values per row, not a packing of K={num_queries}, D={dim}")
    return slots
