"""Encode stages: callable classes that load the backbone once and map batches (dicts of numpy arrays) to
features. Ray Data runs them as actors; tests call them directly."""

from __future__ import annotations

import time

import numpy as np
import torch

from glscl.backbone import Backbone, normalise_rows
from glscl.backbone_config import BackboneConfig


def pick_device(use_gpu: bool) -> str:
    """CUDA when asked for and present, else CPU."""
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


class FrameEncoder:
    """Decoded frames [B, slots, S, S, 3] + mask to per-frame features [B, slots, D] and a mean vector [B, D]."""

    def __init__(self, backbone: BackboneConfig, use_gpu: bool = False, frames_per_batch: int = 256) -> None:
        self.backbone = Backbone(backbone, pick_device(use_gpu))
        self.frames_per_batch = frames_per_batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        frames, mask = batch.pop("frames"), batch["frame_mask"].astype(bool)
        valid = frames[mask]
        encoded = [
            self.backbone.encode_frames(valid[i : i + self.frames_per_batch])
            for i in range(0, len(valid), self.frames_per_batch)
        ]
        dim = self.backbone.embed_dim
        features = np.zeros((*mask.shape, dim), dtype=np.float32)
        if encoded:
            features[mask] = np.concatenate(encoded)
        batch["features"] = features
        batch["vector"] = mean_vector(features, mask)
        seconds = time.perf_counter() - start
        batch["encode_seconds"] = np.full(len(mask), seconds / max(len(mask), 1))
        if "jpeg" in batch:  # kept frames pass through; Ray hands them in as arrays it cannot convert back to Arrow
            batch["jpeg"] = as_object_lists(batch["jpeg"])
        return batch


def as_object_lists(column: np.ndarray | list) -> np.ndarray:
    """A column whose items are sequences (of JPEG files), as an object array of plain lists: the form Ray Data
    turns back into an Arrow list column (an object array of object arrays it would pickle instead)."""
    out = np.empty(len(column), dtype=object)
    out[:] = [list(items) for items in column]
    return out


def mean_vector(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CLIP4Clip-style mean pooling: normalise frames, average the valid ones, normalise again."""
    weights = mask.astype(np.float32)[..., None]
    pooled = (normalise_rows(features) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
    return normalise_rows(pooled).astype(np.float32)


class TextEncoder:
    """Caption texts to sentence vectors [B, D], token features [B, L, D] and token masks [B, L]. The token features
    keep the tower's outputs at padded positions (masked by `token_mask`): a head with the authors' encoded padding
    reads them, every other head masks them."""

    def __init__(self, backbone: BackboneConfig, max_words: int, use_gpu: bool = False) -> None:
        self.backbone = Backbone(backbone, pick_device(use_gpu))
        self.max_words = max_words

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vector, tokens, mask = self.backbone.encode_texts(
            [str(t) for t in batch["text"]], self.max_words, keep_padding=True
        )
        batch["vector"], batch["tokens"], batch["token_mask"] = vector, tokens, mask
        return batch
