"""Exact gallery scoring in shards. Each ShardScorer owns a contiguous slice of the gallery: it reads that
slice from LanceDB and encodes its videos with the checkpoint; one shard encodes all texts once and every shard
scores against those encodings, keeping its [texts x slice] score block. Round one returns the true-pair scores
found in the slice; round two counts, against the merged true scores, how many items outrank each true pair (a
RankAccumulator). A shard's block holds every text, hence every caption of each candidate video, which the
accumulator needs to rank videos by their best caption (video-to-text). No process ever holds the full texts x
videos matrix, and the counts equal a dense evaluation exactly."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

from glscl.checkpoint import load_checkpoint
from glscl.config import DEFAULT_BLOCK
from glscl.metrics import RankAccumulator, dual_softmax
from glscl.model import GLSCL, TextEncoding, VideoEncoding, encode_in_chunks
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.features import FeatureQuery, read_videos
from workers.glscl_encode import encode_videos
from workers.split_rows import locate_split
from workers.table_pairs import TablePairs


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


@dataclass(frozen=True)
class EncodedTexts:
    """The split's texts encoded once by the checkpoint (on CPU, to travel between shards), and each text's
    video position in the gallery."""

    encoding: TextEncoding
    text_to_video: np.ndarray


class ShardScorer:
    """Scores all texts against one gallery slice and counts ranks; a Ray actor in the evaluate flow.

    Calls in order: `prepare` (read and encode the slice), `encode_texts` on one shard only, `score` with those
    texts on every shard, then `count`."""

    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec
        self.device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
        self.matrices: dict[str, torch.Tensor] = {}
        self.text_to_video: np.ndarray | None = None
        self.timings: dict[str, float] = {}
        self.model: GLSCL | None = None
        self.videos: VideoEncoding | None = None

    @torch.inference_mode()
    def prepare(self) -> None:
        """Load the checkpoint, read this slice's videos and encode them."""
        spec, start = self.spec, time.perf_counter()
        self.model, _, _ = load_checkpoint(spec.checkpoint, self.device)
        videos = read_videos(
            Catalog(spec.store), spec.query, spec.sampling_hash, spec.gallery_ids[spec.start : spec.stop]
        )
        self.timings["read"] = time.perf_counter() - start
        start = time.perf_counter()
        self.videos = encode_videos(self.model, videos.feats, videos.mask, self.device)
        self.timings["encode_videos"] = time.perf_counter() - start

    @torch.inference_mode()
    def encode_texts(self, chunk: int = 512) -> EncodedTexts:
        """Encode every text of the split once (the other shards receive the result), reading `chunk` texts at a
        time: the shard holds the encodings, never the split's token features (L x D floats per text)."""
        if self.model is None:
            raise RuntimeError("prepare() must run before encode_texts()")
        start = time.perf_counter()
        rows = locate_split(Catalog(self.spec.store), self.spec.query)
        if rows.video_ids != self.spec.gallery_ids:
            raise RuntimeError(f"the gallery of {self.spec.query.split!r} changed while it was being evaluated")
        texts = TablePairs(rows)

        def encode(index: slice) -> TextEncoding:
            tokens, sentence, mask = (field.to(self.device) for field in texts.text_input(index))
            return TextEncoding(*(field.cpu() for field in self.model.encode_text(sentence, tokens, mask)))

        encoding = encode_in_chunks(encode, rows.num_texts, chunk)
        self.timings["encode_texts"] = time.perf_counter() - start
        return EncodedTexts(encoding, rows.text_to_video)

    @torch.inference_mode()
    def score(self, texts: EncodedTexts) -> dict[str, dict[int, float]]:
        """Compute and keep this slice's [texts x slice] scores ("raw", plus "dual_softmax" when asked: the t2v
        prior is a softmax over texts per video, so a slice holding every text computes it exactly); return
        {matrix: {text index: true score}} for the texts whose video lies in the slice."""
        if self.model is None or self.videos is None:
            raise RuntimeError("prepare() must run before score()")
        spec, start = self.spec, time.perf_counter()
        text_enc = TextEncoding(*(field.to(self.device) for field in texts.encoding))
        self.matrices["raw"] = self.model.score(text_enc, self.videos, block_size=spec.block_size).float().cpu()
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
        """Count, per matrix, for every text the videos of the slice that outrank its true video, and for every
        video of the slice the other videos whose best caption scores at least its own (the block holds all texts)."""
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

    def node_id(self) -> str:
        """The Ray node this shard's actor runs on."""
        return ray.get_runtime_context().get_node_id()
