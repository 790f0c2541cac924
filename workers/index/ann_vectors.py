"""The ANN vectors of videos and of queries under one AnnConfig: the same segment kind and count, and the same
concept weight on both sides, so their inner product approximates the GLSCL score (glscl.search_vectors)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pyarrow as pa
from torch import Tensor

from glscl.model import TextEncoding, VideoEncoding
from glscl.search_vectors import text_search_vectors, video_segment_vectors
from workers.index.config import AnnConfig


def segment_vectors(video: VideoEncoding, local_weight: float, ann: AnnConfig) -> tuple[Tensor, Tensor]:
    """Unprojected segment vectors [Nv, S, W] of encoded videos and which segments hold frames [Nv, S]."""
    weight = local_weight * ann.concept_weight
    return video_segment_vectors(video.frames, video.mask, video.local, ann.segments, weight, ann.segment_kind)


def query_vectors(text: TextEncoding, local_weight: float, ann: AnnConfig) -> Tensor:
    """Unprojected query vectors [Nt, W] of encoded texts."""
    return text_search_vectors(text.sentence, text.local, local_weight * ann.concept_weight)


def stored_ann(settings: dict) -> AnnConfig:
    """The AnnConfig a video index records it was built with (fields it does not record keep their defaults,
    fields this version does not know are ignored)."""
    known = {field.name for field in fields(AnnConfig)}
    return AnnConfig(**{key: value for key, value in settings.items() if key in known})


def stacked_segments(rows: pa.Table | pa.RecordBatch, columns: list[str]) -> np.ndarray:
    """The segment vector columns of some video index rows as one [rows, segments, width] array."""
    arrays = [rows[column] for column in columns]
    arrays = [array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array for array in arrays]
    return np.stack([array.flatten().to_numpy().reshape(rows.num_rows, -1) for array in arrays], axis=1)
