"""Pairwise GLSCL scorers (text x video) as plain tensor functions.

The global score is computed exactly, in blocks of texts x videos, from text-frame dot products and a per-video
F x F Gram matrix, so texts x videos x dims is never materialised. Low-precision inputs (bf16/fp16) are
upcast block by block and everything after loading is computed in float32 (float64 stays float64).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from glscl.config import DEFAULT_BLOCK

_NORM_EPS = 1e-8


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """Floating dtype to accumulate in: at least float32, float64 if any input is float64."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _blocks(block_size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise `block_size` to (text_block, video_block)."""
    text_block, video_block = (block_size, block_size) if isinstance(block_size, int) else block_size
    if text_block < 1 or video_block < 1:
        raise ValueError(f"block sizes must be >= 1, got {block_size}")
    return text_block, video_block


def _valid_mask(frames: Tensor, mask: Tensor | None) -> Tensor:
    """Boolean [Nv, F] frame mask (True = valid); None means every frame is valid."""
    if mask is None:
        return torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    if mask.shape != frames.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match frames {tuple(frames.shape[:2])}")
    return mask.bool()


def gram_matrices(frames: Tensor) -> Tensor:
    """Per-video frame Gram matrices G = V V^T, [Nv, F, F], in the accumulation dtype; cacheable per video."""
    dtype = _compute_dtype(frames)
    v = frames.to(dtype)
    return torch.bmm(v, v.transpose(1, 2))


def _pooled_cosine(logits: Tensor, gram: Tensor, temperature: float) -> Tensor:
    """<t, pooled> / |pooled| from masked logits [n, F, m] = <t, v_i> / temperature; returns [n, m].

    pooled = sum_i w_i v_i with w = softmax over F, so <t, pooled> = temperature * sum_i w_i logit_i and
    |pooled|^2 = w^T G w. Padded logits hold the dtype's minimum (finite, so 0 * logit stays 0).
    """
    weights = torch.softmax(logits, dim=1)
    numerator = temperature * (weights * logits).sum(1)
    pooled_sq = (torch.bmm(gram, weights) * weights).sum(1)
    return numerator / pooled_sq.clamp_min(0.0).sqrt().clamp_min(_NORM_EPS)


class _Prepared(NamedTuple):
    """Set-up shared by the scorers: temperature-scaled text, text norms, masks and the accumulation dtype."""

    scaled_text: Tensor
    text_norm: Tensor
    padding: Tensor
    has_frames: Tensor
    dtype: torch.dtype


def _prepare(text: Tensor, frames: Tensor, mask: Tensor | None, temperature: float) -> _Prepared:
    if text.shape[-1] != frames.shape[-1]:
        raise ValueError(f"text dim {text.shape[-1]} != frame dim {frames.shape[-1]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = _valid_mask(frames, mask)
    has_frames = valid.any(-1)
    padding = (~valid & has_frames.unsqueeze(-1)).unsqueeze(-1)
    dtype = _compute_dtype(text, frames)
    t = text.to(dtype)
    return _Prepared(t / temperature, t.norm(dim=-1).clamp_min(_NORM_EPS), padding, has_frames, dtype)


def global_scores(
    text: Tensor,
    frames: Tensor,
    mask: Tensor | None,
    temperature: float,
    block_size: int | tuple[int, int] = DEFAULT_BLOCK,
    gram: Tensor | None = None,
) -> Tensor:
    """GLSCL global (text-conditioned frame pooling) cosine scores, [Nt, Nv], exact and blocked.

    text [Nt, D] sentence vectors, frames [Nv, F, D], mask [Nv, F] (True/1 = valid frame), optional cached
    `gram` from `gram_matrices`; block_size is an int or (texts, videos). A video with no valid frame scores 0.
    Padded frames get zero weight but must be finite (`GLSCL.encode_video` zeroes them).
    """
    text_block, video_block = _blocks(block_size)
    prep = _prepare(text, frames, mask, temperature)
    fill = torch.finfo(prep.dtype).min
    num_texts = text.shape[0]
    num_videos, num_frames, dim = frames.shape
    columns = []
    for v0 in range(0, num_videos, video_block):
        v1 = min(v0 + video_block, num_videos)
        v = frames[v0:v1].to(prep.dtype)
        g = gram_matrices(v) if gram is None else gram[v0:v1].to(prep.dtype)
        flat = v.reshape((v1 - v0) * num_frames, dim)
        rows = []
        for t0 in range(0, num_texts, text_block):
            t1 = min(t0 + text_block, num_texts)
            logits = (flat @ prep.scaled_text[t0:t1].T).view(v1 - v0, num_frames, t1 - t0)
            logits = logits.masked_fill_(prep.padding[v0:v1], fill)
            rows.append(_pooled_cosine(logits, g, temperature).T)
        columns.append(torch.cat(rows, dim=0) if rows else v.new_zeros(0, v1 - v0))
    scores = torch.cat(columns, dim=1) if columns else prep.scaled_text.new_zeros(num_texts, 0)
    return (scores / prep.text_norm.unsqueeze(-1)).masked_fill(~prep.has_frames, 0.0)


def _pair_logits(text: Tensor, frames: Tensor, mask: Tensor | None, temperature: float):
    """Set-up, frames in the accumulation dtype and masked logits [N, F, 1] of aligned pairs (text i, video i)."""
    if text.shape[0] != frames.shape[0]:
        raise ValueError(f"need as many texts as videos, got {text.shape[0]} and {frames.shape[0]}")
    prep = _prepare(text, frames, mask, temperature)
    v = frames.to(prep.dtype)
    if text.shape[0] > 1 and text.stride(0) == 0:
        # One text expanded over every video (a re-rank): one matrix-vector product, where a batched product of
        # N single columns is several times slower on CPU.
        logits = (v.reshape(-1, v.shape[-1]) @ prep.scaled_text[0]).reshape(*v.shape[:2], 1)
    else:
        logits = torch.bmm(v, prep.scaled_text.unsqueeze(-1))
    return prep, v, logits.masked_fill_(prep.padding, torch.finfo(prep.dtype).min)


def pooling_weights(text: Tensor, frames: Tensor, mask: Tensor | None, temperature: float) -> Tensor:
    """The global interaction's text-conditioned softmax weights over each video's frames for aligned pairs,
    [N, F]: which frames a text matches (padded frames weigh 0)."""
    _, _, logits = _pair_logits(text, frames, mask, temperature)
    return torch.softmax(logits, dim=1).squeeze(-1)


def global_pair_scores(
    text: Tensor, frames: Tensor, mask: Tensor | None, temperature: float, gram: Tensor | None = None
) -> Tensor:
    """Global scores of aligned pairs (text i, video i), [N]; e.g. for re-ranking gathered candidates."""
    prep, v, logits = _pair_logits(text, frames, mask, temperature)
    if gram is None:
        # One pair per video: pooling the frames directly (F x D) is cheaper than a Gram matrix (F x F x D), and as a
        # batched product half the time of a weighted sum (which writes an [N, F, D] product first).
        weights = torch.softmax(logits, dim=1)
        pooled = torch.bmm(weights.transpose(1, 2), v).squeeze(1)
        numerator = temperature * (weights * logits).sum((1, 2))
        scores = numerator / pooled.norm(dim=-1).clamp_min(_NORM_EPS) / prep.text_norm
        return scores.masked_fill(~prep.has_frames, 0.0)
    scores = _pooled_cosine(logits, gram.to(prep.dtype), temperature).squeeze(-1) / prep.text_norm
    return scores.masked_fill(~prep.has_frames, 0.0)


def local_scores(text_local: Tensor, video_local: Tensor) -> Tensor:
    """GLSCL local scores, [Nt, Nv]: mean over the K queries of <q_t,k, q_v,k> (inputs already normalised)."""
    if text_local.shape[1:] != video_local.shape[1:]:
        raise ValueError(f"local shapes differ: {tuple(text_local.shape)} vs {tuple(video_local.shape)}")
    dtype = _compute_dtype(text_local, video_local)
    num_queries = text_local.shape[1]
    return (text_local.flatten(1).to(dtype) @ video_local.flatten(1).to(dtype).T) / num_queries


def local_pair_scores(text_local: Tensor, video_local: Tensor) -> Tensor:
    """Local scores of aligned pairs (text i, video i), [N]."""
    if text_local.shape != video_local.shape:
        raise ValueError(f"local shapes differ: {tuple(text_local.shape)} vs {tuple(video_local.shape)}")
    dtype = _compute_dtype(text_local, video_local)
    return (text_local.to(dtype) * video_local.to(dtype)).sum((-1, -2)) / text_local.shape[1]
