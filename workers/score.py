"""Exact gallery scoring in shards. Each ShardScorer owns a contiguous slice of the gallery: it reads that
slice from LanceDB, encodes its videos and all texts once with the checkpoint, and keeps its [texts x slice]
score block. Round one returns the true-pair scores found in the slice; round two counts, against the merged
true scores, how many items outrank each true pair (a RankAccumulator). No process ever holds the full
texts x videos matrix, and the counts equal a dense evaluation exactly."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from glscl.checkpoint import load_checkpoint
from glscl.metrics import RankAccumulator, dual_softmax
from glscl.model import GLSCL
from glscl.similarity import DEFAULT_BLOCK
from schemas.catalog import Catalog, StoreConfig
from workers.features import FeatureQuery, read_texts, read_videos


@dataclass(frozen=True)
class ShardSpec:
    """One evaluation shard: the gallery (ids in order), this shard's slice of it, and how to score."""

    store: StoreConfig
    query: FeatureQuery
    sampling_hash: str
    gallery_ids: list[str]
    start: int
    stop: int
    checkpoint: str
    block_size: tuple[int, int] = DEFAULT_BLOCK
    use_gpu: bool = False
    dual_softmax: float | None = None


def encode_texts(model: GLSCL, sentence: np.ndarray, tokens: np.ndarray, mask: np.ndarray, device, batch: int = 512):
    """Text encodings of a whole split, once, in batches."""
    parts = [
        model.encode_text(
            torch.from_numpy(sentence[i : i + batch]).to(device),
            torch.from_numpy(tokens[i : i + batch]).to(device),
            torch.from_numpy(mask[i : i + batch]).to(device),
        )
        for i in range(0, len(sentence), batch)
    ]
    return type(parts[0])(*(torch.cat(field) for field in zip(*parts, strict=True)))


def encode_videos(model: GLSCL, feats: np.ndarray, mask: np.ndarray, device, batch: int = 512):
    """Video encodings of a gallery slice, once, in batches."""
    parts = [
        model.encode_video(
            torch.from_numpy(feats[i : i + batch]).to(device), torch.from_numpy(mask[i : i + batch]).to(device)
        )
        for i in range(0, len(feats), batch)
    ]
    return type(parts[0])(*(torch.cat(field) for field in zip(*parts, strict=True)))


class ShardScorer:
    """Scores all texts against one gallery slice and counts ranks; a Ray actor in the evaluate flow."""

    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
        self.matrices: dict[str, torch.Tensor] = {}
        self.text_to_video: np.ndarray | None = None
        self.timings: dict[str, float] = {}

    @torch.inference_mode()
    def score(self) -> dict[str, dict[int, float]]:
        """Compute and keep this slice's [texts x slice] scores ("raw", plus "dual_softmax" when asked: the t2v
        prior is a softmax over texts per video, so a slice holding every text computes it exactly); return
        {matrix: {text index: true score}} for the texts whose video lies in the slice."""
        spec, start = self.spec, time.perf_counter()
        model, _, _ = load_checkpoint(spec.checkpoint, self.device)
        catalog = Catalog(spec.store)
        texts = read_texts(catalog, spec.query, spec.gallery_ids)
        videos = read_videos(catalog, spec.query, spec.sampling_hash, spec.gallery_ids[spec.start : spec.stop])
        self.timings["read"] = time.perf_counter() - start
        start = time.perf_counter()
        text_enc = encode_texts(model, texts.sentence, texts.tokens, texts.token_mask, self.device)
        video_enc = encode_videos(model, videos.feats, videos.mask, self.device)
        self.timings["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        self.matrices["raw"] = model.score(text_enc, video_enc, block_size=spec.block_size).float().cpu()
        if spec.dual_softmax:
            self.matrices["dual_softmax"] = dual_softmax(self.matrices["raw"], spec.dual_softmax, "t2v")
        self.timings["score"] = time.perf_counter() - start
        self.text_to_video = texts.text_to_video
        own = np.nonzero((texts.text_to_video >= spec.start) & (texts.text_to_video < spec.stop))[0]
        columns = texts.text_to_video[own] - spec.start
        return {
            name: dict(zip(own.tolist(), matrix[own, columns].tolist(), strict=True))
            for name, matrix in self.matrices.items()
        }

    def count(self, true_scores: dict[str, np.ndarray]) -> dict[str, RankAccumulator]:
        """Count, per matrix, for every text and every video of the slice, the items that outrank the true pair."""
        if not self.matrices:
            raise RuntimeError("score() must run before count()")
        start = time.perf_counter()
        counts = {}
        for name, matrix in self.matrices.items():
            accumulator = RankAccumulator(
                torch.tensor(true_scores[name]), torch.tensor(self.text_to_video), len(self.spec.gallery_ids)
            )
            accumulator.add(matrix, slice(None), slice(self.spec.start, self.spec.stop))
            counts[name] = accumulator
        self.timings["count"] = time.perf_counter() - start
        return counts

    def stats(self) -> dict[str, float]:
        """Seconds spent per phase in this shard."""
        return dict(self.timings)
