"""Encode stored frame features with a checkpoint's GLSCL head, a gallery slice at a time in bounded memory: the
evaluation shards and the index stage both start here."""

from __future__ import annotations

import numpy as np
import torch

from glscl.model import GLSCL, VideoEncoding, encode_in_chunks


def encode_videos(
    model: GLSCL, feats: np.ndarray, mask: np.ndarray, device: torch.device, batch: int = 512
) -> VideoEncoding:
    """Video encodings of a gallery slice, once, in batches."""

    def encode(rows: slice) -> VideoEncoding:
        return model.encode_video(*(torch.from_numpy(array[rows]).to(device) for array in (feats, mask)))

    return encode_in_chunks(encode, len(feats), batch)
