"""The exact GLSCL re-rank of videos from their packed encodings (workers/index/packed_encodings.py), a block of
videos at a time: each block is unpacked to float32 and scored while it is still in the CPU cache, instead of
writing every candidate's float32 encodings to memory (26 MB for 200 videos of F = 64) and reading them back twice.
The scores are those of unpacking every row and scoring it with `GLSCL.pair_scores`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from glscl.model import GLSCL, TextEncoding
from workers.index.packed_encodings import unpack_encodings

# Videos unpacked and scored together: 32 videos of F = 64, D = 512 are 4 MB of float32, within this machine's
# 2 MB L2 + 32 MB L3 (benchmarks/RESULTS.md, re-rank).
RERANK_BLOCK = 32


@torch.inference_mode()
def packed_scores(
    model: GLSCL, text: TextEncoding, encodings: pa.ChunkedArray | pa.Array, slots: int, block: int = RERANK_BLOCK
) -> np.ndarray:
    """Exact scores [N] of one encoded text (a batch of 1) against the N videos of a packed `encodings` column."""
    column = encodings.combine_chunks() if isinstance(encodings, pa.ChunkedArray) else encodings
    config = model.config
    scores = [np.zeros(0, dtype=np.float32)]
    for start in range(0, len(column), block):
        video = unpack_encodings(column.slice(start, block), slots, config.num_queries, config.embed_dim)
        count = video.frames.shape[0]
        pairs = TextEncoding(text.sentence.expand(count, -1), text.local.expand(count, -1, -1))
        scores.append(model.pair_scores(pairs, video).numpy())
    return np.concatenate(scores)
