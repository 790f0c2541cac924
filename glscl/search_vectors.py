"""Indexable vectors for two-stage GLSCL search.

The exact score is global(t, v) + w * local(t, v). The local term is one dot product of flattened, normalised
K x D concept vectors divided by K; the global term depends on the text through its frame pooling, which
weighs the frames that match the text. It is approximated by the best cosine of the sentence with the mean
of one of S contiguous segments of the video (a text about one event of a two-event video matches that
event's segment, where the whole-video mean dilutes it). Each segment gives one vector, and the largest inner
product over a video's segments approximates its score:

    segment: [ seg_mean / |seg_mean| , sqrt(w / K) * q_v (K*D) ]    text: [ s / |s| , sqrt(w / K) * q_t (K*D) ]

The local weight w / K is split evenly between the two sides, so the concept block carries the same share of
each side's norm as it has in the score: the projection fitted on video vectors and the ANN partitions then
follow what ranks videos, instead of the (K times larger) raw concept block. Where events start and end anywhere
and the pooling rests on a few frames, a segment mean dilutes a short event: the "peaks" kind takes S single frames
of distinct content instead of S time segments (benchmarks/RESULTS.md, hard galleries). The (1 + K) * D vectors are
projected onto the top principal directions of the segment vectors (an uncentred SVD, which preserves inner
products), so the ANN index stays small; the candidates it returns are re-ranked with the exact score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-8


def segment_weights(mask: Tensor, segments: int) -> Tensor:
    """[Nv, F, S] 0/1 weights assigning each valid frame to one of `segments` contiguous, nearly equal groups
    of that video's valid frames (a video with fewer valid frames than S fills only the first groups)."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    valid = mask.bool()
    position = valid.long().cumsum(1) - 1
    count = valid.sum(1, keepdim=True).clamp_min(1)
    group = torch.div(position * segments, count, rounding_mode="floor")
    group = torch.where(count < segments, position, group).clamp(0, segments - 1)
    return F.one_hot(group, segments).to(torch.float32) * valid.unsqueeze(-1)


def peak_frame_weights(frames: Tensor, mask: Tensor, segments: int) -> Tensor:
    """[Nv, F, S] 0/1 weights picking one valid frame per group by farthest-point sampling on unit frames: first
    the frame least like the video's mean, then each time the frame least like any picked so far. Frames of
    distinct events are picked unaveraged, so a peaked text-conditioned pooling that rests on one or two frames of
    a short event still finds that event's vector; a video with fewer valid frames than S fills the first groups."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    valid = mask.bool()
    unit = F.normalize(frames.float(), dim=-1, eps=_EPS)
    rows = torch.arange(frames.shape[0])
    mean = F.normalize((unit * valid.unsqueeze(-1)).sum(1), dim=-1, eps=_EPS)
    distance = 1 - torch.einsum("nfd,nd->nf", unit, mean)
    weights = torch.zeros(*valid.shape, segments)
    available = valid.clone()
    for group in range(segments):
        pick = distance.masked_fill(~available, -math.inf).argmax(1)
        chosen = available[rows, pick]
        weights[rows[chosen], pick[chosen], group] = 1.0
        available[rows, pick] = False
        to_pick = 1 - torch.einsum("nfd,nd->nf", unit, unit[rows, pick])
        distance = to_pick if group == 0 else torch.minimum(distance, to_pick)
    return weights


SEGMENT_KINDS = {"time": lambda frames, mask, segments: segment_weights(mask, segments), "peaks": peak_frame_weights}


def video_segment_vectors(
    frames: Tensor, mask: Tensor, local: Tensor, segments: int, local_weight: float, kind: str = "time"
) -> tuple[Tensor, Tensor]:
    """Segment vectors [Nv, S, (1+K)*D] from encoded frames [Nv, F, D], frame mask [Nv, F] and concepts
    [Nv, K, D], and which segments hold frames [Nv, S] (a video with no valid frame keeps one, all-mean).
    `kind` "time" averages contiguous time segments, "peaks" takes single frames (`peak_frame_weights`)."""
    if kind not in SEGMENT_KINDS:
        raise ValueError(f"segment kind must be one of {tuple(SEGMENT_KINDS)}, got {kind!r}")
    weights = SEGMENT_KINDS[kind](frames, mask, segments)
    sums = torch.einsum("nfs,nfd->nsd", weights, frames.float())
    present = weights.sum(1) > 0
    present[:, 0] |= ~present.any(1)
    means = F.normalize(sums, dim=-1, eps=_EPS)
    scaled = local.flatten(1).float() * math.sqrt(local_weight / local.shape[1])
    vectors = torch.cat([means, scaled.unsqueeze(1).expand(-1, segments, -1)], dim=-1)
    return vectors, present


def fill_absent_segments(vectors: Tensor, present: Tensor) -> Tensor:
    """Segment vectors [Nv, S, W] with every absent segment replaced by the video's last present one, so each
    video has S vectors (a video with fewer valid frames than S fills only its first segments; repeating one
    changes no video's best segment)."""
    last = (present.long().cumsum(1) - 1).clamp_min(0)
    return vectors.gather(1, last.unsqueeze(-1).expand_as(vectors))


def text_search_vectors(sentence: Tensor, local: Tensor, local_weight: float) -> Tensor:
    """[Nt, (1+K)*D] text vectors whose inner product with a video's segment vectors approximates the score."""
    scaled = local.flatten(1).float() * math.sqrt(local_weight / local.shape[1])
    return torch.cat([F.normalize(sentence.float(), dim=-1, eps=_EPS), scaled], dim=1)


def fit_projection(vectors: Tensor, dim: int, seed: int = 0) -> Tensor:
    """An orthonormal [D_in, dim] basis: the top right singular vectors of `vectors` [N, D_in] (uncentred).

    When `dim` >= D_in the identity is returned (nothing to compress). With fewer vectors than `dim`, the span
    of the sample is completed by random orthonormal directions, so vectors added later keep a random (JL-style)
    share of their inner products. Seeded: the same sample gives the same basis.
    """
    rows, width = vectors.shape
    if dim >= width:
        return torch.eye(width)
    generator = torch.Generator().manual_seed(seed)
    rank = min(dim, rows)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        _, _, top = torch.svd_lowrank(vectors.float(), q=min(rank + 16, rows, width), niter=2)
    finally:
        torch.random.set_rng_state(generator_state)
    basis = top[:, :rank]
    if rank < dim:
        extra = torch.randn(width, dim - rank, generator=generator, dtype=torch.float64)
        basis, _ = torch.linalg.qr(torch.cat([basis.double(), extra], dim=1))
    return basis.float().contiguous()


def captured_energy(vectors: Tensor, basis: Tensor) -> float:
    """Mean fraction of each vector's squared norm that lies inside the projection's subspace (1.0 = lossless)."""
    projected = (vectors.double() @ basis.double()).square().sum(1)
    total = vectors.double().square().sum(1).clamp_min(_EPS)
    return float((projected / total).mean())
