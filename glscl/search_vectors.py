"""Indexable vectors for two-stage GLSCL search.

The exact score is global(t, v) + w * local(t, v). The local term is one dot product of flattened, normalised
K x D concept vectors divided by K; the global term depends on the text through its frame pooling, so it is
approximated by the cosine of the sentence with the video's mean frame. Concatenating both sides gives one
inner product that approximates the score:

    video: [ mean_frame / |mean_frame| , q_v (K*D) ]      text: [ s / |s| , (w / K) * q_t (K*D) ]

These (1 + K) * D vectors are projected onto the top principal directions of the video vectors (an uncentred
SVD, which preserves inner products), so the ANN index stays small; the candidates it returns are re-ranked
with the exact score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-8


def video_search_vectors(frames: Tensor, mask: Tensor, local: Tensor) -> Tensor:
    """[Nv, (1+K)*D] video vectors from encoded frames [Nv, F, D], frame mask [Nv, F] and concepts [Nv, K, D]."""
    valid = mask.to(frames.dtype).unsqueeze(-1)
    mean = (frames * valid).sum(1) / valid.sum(1).clamp_min(1.0)
    return torch.cat([F.normalize(mean, dim=-1, eps=_EPS), local.flatten(1)], dim=1).float()


def text_search_vectors(sentence: Tensor, local: Tensor, local_weight: float) -> Tensor:
    """[Nt, (1+K)*D] text vectors whose inner product with `video_search_vectors` approximates the score."""
    num_queries = local.shape[1]
    scaled = local.flatten(1) * (local_weight / num_queries)
    return torch.cat([F.normalize(sentence, dim=-1, eps=_EPS), scaled], dim=1).float()


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
