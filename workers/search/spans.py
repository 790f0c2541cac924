"""Where in a hit video the query matches, as a time span. GLSCL's temporal transformer mixes every frame into every
output, so the pooling weights over its outputs barely move with the moment described (measured on the demo: the
top hit's span was the last frame for most queries, whatever the event's time). The stored CLIP frame features are
the frames before that mixing: the text's CLIP sentence vector against each of them localises (benchmarks/
RESULTS.md, "Time spans"). They are read for the returned hits only, from the `frames` table."""

from __future__ import annotations

import lancedb
import numpy as np

from schemas.catalog import Catalog
from schemas.tables import FRAMES
from workers.features import VIDEO_COLUMNS, FeatureQuery, videos_in_order, videos_where

SPAN_LOGIT_SCALE = 100.0  # CLIP's: frames within a few hundredths of cosine of the best one count as matching


def span(
    weights: np.ndarray, timestamps: np.ndarray, mask: np.ndarray, duration: float | None
) -> tuple[float, float] | None:
    """Contiguous frames around the most-weighted one that keep at least half its weight, as seconds: from half a
    sampling interval before the first to half one after the last (so never shorter than one interval), within
    the video."""
    if not mask.any():
        return None
    peak = int(np.argmax(np.where(mask, weights, -np.inf)))
    keep = mask & (weights >= 0.5 * weights[peak])
    low = high = peak
    while low > 0 and keep[low - 1]:
        low -= 1
    while high + 1 < len(keep) and keep[high + 1]:
        high += 1
    valid = timestamps[mask]
    half = float(np.median(np.diff(valid))) / 2 if len(valid) > 1 else 0.5
    end = float(timestamps[high]) + half
    return max(0.0, float(timestamps[low]) - half), min(end, duration) if duration else end


def frame_match_weights(sentence: np.ndarray, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over each video's valid frames of the text's cosine similarity to them at CLIP's logit scale,
    [N, F] for a sentence [D] and frames [N, F, D]."""
    text = sentence / max(float(np.linalg.norm(sentence)), 1e-12)
    norms = np.maximum(np.linalg.norm(frames, axis=-1), 1e-12)
    logits = np.where(mask, SPAN_LOGIT_SCALE * (frames @ text) / norms, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True, initial=-np.inf, where=mask)
    weights = np.where(mask, np.exp(logits), 0.0)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


class StoredFrames:
    """The stored CLIP frame features of one backbone and sampling, read a few videos at a time through one open
    `frames` table (its BTREE index on video_id makes that a lookup, `workers.index.indexes.ensure_id_lookup`)."""

    def __init__(self, catalog: Catalog, model_id: str, sampling_hash: str) -> None:
        self.catalog = catalog
        self.query, self.sampling_hash = FeatureQuery("", model_id, 0, sampling_hash=sampling_hash), sampling_hash
        self._table: lancedb.table.Table | None = None

    def refresh(self) -> None:
        """Read the table's newest version from now on (videos ingested since it was opened)."""
        if self._table is not None:
            self._table.checkout_latest()

    def read(self, video_ids: list[str], slots: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Features [N, slots, D] and masks of `video_ids` in that order, or None when any is not stored."""
        if self._table is None:
            if not self.catalog.exists(FRAMES):
                return None
            self._table = self.catalog.open_existing(FRAMES)
        where = videos_where(self.query, self.sampling_hash, video_ids)
        rows = self._table.search().where(where).select(VIDEO_COLUMNS).to_arrow()
        if not video_ids or set(video_ids) - set(rows["video_id"].to_pylist()):
            return None
        videos = videos_in_order(rows, video_ids)
        return (videos.feats, videos.mask) if videos.mask.shape[1] == slots else None
