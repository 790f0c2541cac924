"""What the scoring-cost measurement times: exhaustive text x video scoring by GLSCL's global-local scorer, an
X-Pool-style cross-attention head and mean pooling, over random per-item encodings at ActivityNet-like sizes, with the
analytic FLOP count of each head. Used by `glscl reproduce` (the scoring head's cost beside the paper's numbers) and
by `benchmarks/scoring.py`; `glscl.scoring_cost.timing` runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from glscl.baselines import MeanPooling, XPoolHead
from glscl.config import DEFAULT_BLOCK, GLSCLConfig
from glscl.model import GLSCL, TextEncoding, VideoEncoding
from glscl.similarity import gram_matrices, local_scores

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HEADS = ("glscl", "glscl_global", "glscl_local", "xpool", "meanpool")


@dataclass
class ScoringBenchConfig:
    """Sizes, shapes and timing policy of the scoring benchmark.

    `sizes` get the full table, `scaling_sizes` are extra gallery sizes for the scaling table and plot; every
    size means N texts x N videos. `max_seconds` bounds the text-proportional part of one timed call, except that
    a slice is never smaller than one text block (`glscl_block`, `xpool_text_block`; `min_texts` for the untiled
    local and mean-pooling heads).
    """

    sizes: tuple[int, ...] = (1000, 4917)
    scaling_sizes: tuple[int, ...] = (250, 500, 1000, 2000, 4917)
    frames: int = 64
    dim: int = 512
    queries: int = 8
    dtype: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    max_seconds: float = 10.0
    warmup: int = 1
    repeats: int = 3
    min_texts: int = 64
    glscl_block: int = DEFAULT_BLOCK[0]
    glscl_video_block: int = DEFAULT_BLOCK[1]
    xpool_text_block: int = 128
    xpool_video_block: int = 64
    gemm_size: int = 2048
    check_size: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or (self.scaling_sizes and min(self.scaling_sizes) < 1):
            raise ValueError(f"sizes must be non-empty and >= 1, got {self.sizes} and {self.scaling_sizes}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.max_seconds <= 0 or self.repeats < 1 or self.warmup < 0:
            raise ValueError("need max_seconds > 0, repeats >= 1 and warmup >= 0")
        if min(self.frames, self.dim, self.queries, self.min_texts, self.check_size, self.gemm_size) < 1:
            raise ValueError("frames, dim, queries, min_texts, check_size and gemm_size must be >= 1")

    def all_sizes(self) -> list[int]:
        """Every gallery size to measure, ascending."""
        return sorted(set(self.sizes) | set(self.scaling_sizes))


@dataclass(frozen=True)
class Workload:
    """One head's exhaustive scoring: `run(m)` scores the first m texts against every video.

    `min_texts` is the smallest text slice worth timing: one text block of the head's own tiling, so a slice runs
    the same kernel shapes as the full run. `per_video` is the head's per-video work; it runs inside `run` when
    `per_video_in_run` (then it is subtracted before extrapolating), otherwise it was done beforehand and is timed
    only for the record.
    """

    head: str
    run: Callable[[int], Tensor]
    pair_flops: float
    video_flops: float
    min_texts: int
    compute_dtype: torch.dtype
    per_video: Callable[[], object] | None = None
    per_video_in_run: bool = False


def glscl_global_flops(frames: int, dim: int) -> float:
    """Per pair: logits F*d MACs, softmax ~5F, numerator F MACs, |pooled|^2 = w^T G w with F^2 + F MACs."""
    return 2 * (frames * dim + frames * frames + 2 * frames) + 5 * frames


def glscl_local_flops(dim: int, queries: int) -> float:
    """Per pair: one dot product of the K*d concatenated concept vectors."""
    return 2 * queries * dim


def xpool_pair_flops(frames: int, dim: int) -> float:
    """Per pair of `XPoolHead.pool` with one head: logits F*d MACs, softmax ~5F, weights @ values F*d MACs,
    residual Linear d^2 MACs, two LayerNorms (~8d each), biases and residual (~3d), normalise (3d), cosine (2d)."""
    return 2 * (2 * frames * dim + dim * dim) + 5 * frames + 24 * dim


def xpool_video_flops(frames: int, dim: int) -> float:
    """Per video of `XPoolHead.encode_videos`: key, value and folded output projections (3 F d^2 MACs), input
    LayerNorm and biases (~10 F d)."""
    return 6 * frames * dim * dim + 10 * frames * dim


def meanpool_flops(dim: int) -> float:
    """Per pair: one d-dimensional dot product."""
    return 2 * dim


def random_encodings(num: int, config: ScoringBenchConfig, device: torch.device) -> tuple[TextEncoding, VideoEncoding]:
    """Random per-item GLSCL encodings for `num` texts and `num` videos, in the benchmark dtype.

    Videos keep between F/2 and F valid frames; padded frames are zeroed as `GLSCL.encode_video` does. Local
    concept vectors are unit-norm.
    """
    gen = torch.Generator().manual_seed(config.seed)
    frames, dim, queries = config.frames, config.dim, config.queries
    lengths = torch.randint(max(1, frames // 2), frames + 1, (num,), generator=gen)
    mask = torch.arange(frames) < lengths[:, None]
    video_frames = torch.randn(num, frames, dim, generator=gen).masked_fill(~mask[..., None], 0.0)
    sentence = torch.randn(num, dim, generator=gen)
    text_local = F.normalize(torch.randn(num, queries, dim, generator=gen), dim=-1)
    video_local = F.normalize(torch.randn(num, queries, dim, generator=gen), dim=-1)
    dtype = DTYPES[config.dtype]
    text = TextEncoding(sentence.to(device, dtype), text_local.to(device, dtype))
    video = VideoEncoding(video_frames.to(device, dtype), mask.to(device), video_local.to(device, dtype))
    return text, video


def first_videos(video: VideoEncoding, num: int) -> VideoEncoding:
    """The first `num` videos (views, no copy)."""
    return VideoEncoding(video.frames[:num], video.mask[:num], video.local[:num])


def first_texts(text: TextEncoding, num: int) -> TextEncoding:
    """The first `num` texts (views, no copy)."""
    return TextEncoding(text.sentence[:num], text.local[:num])


def scoring_model(config: ScoringBenchConfig, device: torch.device) -> GLSCL:
    """A GLSCL head whose `score` is the timed scorer; its encoders are never run, so they are kept minimal."""
    glscl_config = GLSCLConfig(
        embed_dim=config.dim,
        max_frames=config.frames,
        frame_position_size=max(config.frames, 77),
        num_queries=config.queries,
        temporal_layers=1,
        temporal_heads=1,
        temporal_ffn=config.dim,
        decoder_layers=1,
        decoder_heads=1,
        decoder_ffn=config.dim,
    )
    return GLSCL(glscl_config).to(device).eval()


def build_workloads(
    text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig, model: GLSCL
) -> list[Workload]:
    """The five timed heads over one gallery; per-video state is precomputed here, outside any timing."""
    frames, dim = config.frames, config.dim
    gram = gram_matrices(video.frames)
    global_flops = glscl_global_flops(frames, dim)
    local_flops = glscl_local_flops(dim, config.queries)
    glscl_dtype = torch.promote_types(torch.float32, video.frames.dtype)
    block = config.glscl_block
    blocks = (config.glscl_block, config.glscl_video_block)

    def glscl(m: int) -> Tensor:
        return model.score(first_texts(text, m), video, blocks, gram)

    def glscl_global(m: int) -> Tensor:
        return model.global_interaction(text.sentence[:m], video.frames, video.mask, blocks, gram)

    def glscl_local(m: int) -> Tensor:
        return local_scores(text.local[:m], video.local)

    def gram_work() -> Tensor:
        return gram_matrices(video.frames)

    return [
        Workload("glscl", glscl, global_flops + local_flops, 0.0, block, glscl_dtype, gram_work),
        Workload("glscl_global", glscl_global, global_flops, 0.0, block, glscl_dtype, gram_work),
        Workload("glscl_local", glscl_local, local_flops, 0.0, config.min_texts, glscl_dtype),
        xpool_workload(text, video, config),
        meanpool_workload(text, video, config),
    ]


def xpool_workload(text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig) -> Workload:
    """`XPoolHead.score` (one head, eval mode) over the gallery; its per-video projections run inside the call."""
    dtype = video.frames.dtype
    head = XPoolHead(dim=config.dim, num_heads=1).to(video.frames.device, dtype).eval()
    text_block, video_block = config.xpool_text_block, config.xpool_video_block
    num_videos = video.frames.shape[0]

    def run(m: int) -> Tensor:
        return head.score(text.sentence[:m], video.frames, video.mask, text_block, video_block)

    def per_video() -> list[tuple[Tensor, Tensor, Tensor]]:
        starts = range(0, num_videos, video_block)
        return [head.encode_videos(video.frames[s : s + video_block], video.mask[s : s + video_block]) for s in starts]

    pair_flops = xpool_pair_flops(config.frames, config.dim)
    video_flops = xpool_video_flops(config.frames, config.dim)
    return Workload("xpool", run, pair_flops, video_flops, text_block, dtype, per_video, per_video_in_run=True)


def meanpool_workload(text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig) -> Workload:
    """Mean pooling: pooled video vectors precomputed (`MeanPooling.embed_videos`), scoring is one matmul."""
    pool = MeanPooling()
    pooled = pool.embed_videos(video.frames, video.mask)

    def run(m: int) -> Tensor:
        return F.normalize(text.sentence[:m], dim=-1) @ pooled.T

    def per_video() -> Tensor:
        return pool.embed_videos(video.frames, video.mask)

    return Workload("meanpool", run, meanpool_flops(config.dim), 0.0, config.min_texts, pooled.dtype, per_video)
