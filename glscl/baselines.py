"""Baseline similarity heads on the same inputs as the GLSCL head, for side-by-side accuracy and cost.

Inputs everywhere: sentence vectors ``t [Nt, D]``, per-frame features ``V [Nv, F, D]`` and a frame mask
``mask [Nv, F]`` (1 or True = valid frame). Scores are ``[Nt, Nv]`` cosines. Padded frames are zeroed before
use, so whatever they hold (even NaN) cannot leak into a score. A video needs at least one valid frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _valid_frames(V: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes, return (V with padded frames zeroed, boolean mask); reject videos with no valid frame."""
    if V.ndim != 3 or mask.shape != V.shape[:2]:
        raise ValueError(f"expected V [Nv, F, D] and mask [Nv, F], got {tuple(V.shape)} and {tuple(mask.shape)}")
    valid = mask.to(device=V.device) != 0
    empty = (~valid.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{empty.numel()} video(s) have no valid frame (first: index {int(empty[0])})")
    return V.masked_fill(~valid[..., None], 0.0), valid


def _blocks(size: int, block: int | None) -> list[slice]:
    """Consecutive slices of at most ``block`` items covering ``range(size)`` (one slice when ``None``)."""
    step = size if block is None else block
    if step < 1:
        raise ValueError(f"block size must be positive, got {block}")
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


class MeanPooling(nn.Module):
    """CLIP4Clip's parameter-free ``meanP`` head: cosine of the text with the masked mean of the frames.

    As in CLIP4Clip, each frame is L2-normalised before the mean (``normalize_frames=False`` averages the raw
    features instead); the mean is normalised again. The video embedding does not depend on the text, so the
    whole score matrix is one matmul and the video side is indexable by any vector search.
    """

    def __init__(self, normalize_frames: bool = True) -> None:
        super().__init__()
        self.normalize_frames = normalize_frames

    def embed_videos(self, V: Tensor, mask: Tensor) -> Tensor:
        """Unit-norm video embeddings ``[Nv, D]``: normalised masked mean of the valid frames."""
        frames, valid = _valid_frames(V, mask)
        if self.normalize_frames:
            frames = F.normalize(frames, dim=-1)
        counts = valid.sum(dim=1, keepdim=True).to(frames.dtype)
        return F.normalize(frames.sum(dim=1) / counts, dim=-1)

    def score(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Cosine similarities ``[Nt, Nv]`` of texts and videos."""
        return self.score_pooled(t, self.embed_videos(V, mask))

    def score_pooled(self, t: Tensor, pooled: Tensor) -> Tensor:
        """`score` from videos already pooled by `embed_videos` (the `vector` ingest stores)."""
        return F.normalize(t, dim=-1) @ pooled.T

    def pair_scores(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Cosine similarities ``[N]`` of aligned pairs (text i, video i)."""
        return (F.normalize(t, dim=-1) * self.embed_videos(V, mask)).sum(dim=-1)

    def forward(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Same as :meth:`score`."""
        return self.score(t, V, mask)


class XPoolHead(nn.Module):
    """X-Pool-style text-conditioned attention pooling (Gorti et al., CVPR 2022) with a frame mask.

    For a text a and video b: a shared LayerNorm on the text and on the frames; queries from the text,
    keys and values from the frames (D -> D projections, ``num_heads`` heads); scaled dot-product attention
    of the text over the valid frames; an output projection; LayerNorm; a residual linear block
    (``Linear -> [GELU] -> dropout``, added back) and a final LayerNorm. That gives a text-conditioned video
    embedding per pair, and the score is its cosine with the (raw) text vector. Projection weights start as
    the identity and biases at zero, and dropout defaults to 0.3, as in X-Pool.

    X-Pool's residual block has no activation; ``ffn_gelu=True`` inserts a GELU after its Linear.

    Cost: keys, values and the output projection are applied to the frames once per video (the output
    projection is folded into the values, exact because attention weights sum to one), so per pair only the
    attention (~2FD MACs for one head), two LayerNorms and the D x D residual Linear (D^2 MACs) remain. That
    per-pair work, unlike GLSCL's, cannot be cached per item. :meth:`score` walks (text block x video block)
    tiles so peak memory is a few times ``text_block * video_block * max(D, num_heads * F)`` values.
    """

    def __init__(self, dim: int = 512, num_heads: int = 1, dropout: float = 0.3, ffn_gelu: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.input_norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Linear(dim, dim)
        self.ffn_act: nn.Module = nn.GELU() if ffn_gelu else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(dim)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.ffn):
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_texts(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-text work, once per text: queries ``[H, Nt, D/H]`` and unit text vectors ``[Nt, D]``."""
        queries = self.q_proj(self.input_norm(t)).view(t.shape[0], self.num_heads, self.head_dim)
        return queries.transpose(0, 1).contiguous(), F.normalize(t, dim=-1)

    def encode_videos(self, V: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-video work, once per video: keys ``[H, Nv*F, D/H]``, values already passed through the
        output projection ``[Nv, H*F, D]`` (bias excluded), and the boolean frame mask ``[Nv, F]``."""
        frames, valid = _valid_frames(V, mask)
        num_videos, num_frames, _ = frames.shape
        heads, head_dim = self.num_heads, self.head_dim
        normed = self.input_norm(frames).reshape(num_videos * num_frames, self.dim)
        keys = self.k_proj(normed).view(-1, heads, head_dim).transpose(0, 1).contiguous()
        values = self.v_proj(normed).view(-1, heads, head_dim).transpose(0, 1)
        out_weight = self.out_proj.weight.view(self.dim, heads, head_dim).permute(1, 2, 0)
        projected = torch.bmm(values, out_weight).view(heads, num_videos, num_frames, self.dim)
        return keys, projected.transpose(0, 1).reshape(num_videos, heads * num_frames, self.dim), valid

    def pool(self, queries: Tensor, keys: Tensor, values: Tensor, valid: Tensor) -> Tensor:
        """Text-conditioned video embeddings ``[Nv, Nt, D]`` for every pair of encoded texts and videos
        (video-major, so that each video's frames are one batched matmul)."""
        num_videos, num_frames = valid.shape
        num_texts = queries.shape[1]
        logits = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(self.head_dim)
        logits = logits.view(self.num_heads, num_texts, num_videos, num_frames)
        logits = logits.masked_fill(~valid[None, None], -torch.inf)
        weights = torch.softmax(logits, dim=-1).permute(2, 1, 0, 3).reshape(num_videos, num_texts, -1)
        attended = self.attn_norm(torch.baddbmm(self.out_proj.bias, weights, values))
        return self.out_norm(attended + self.dropout(self.ffn_act(self.ffn(attended))))

    def score(
        self,
        t: Tensor,
        V: Tensor,
        mask: Tensor,
        text_block: int | None = 128,
        video_block: int | None = 64,
    ) -> Tensor:
        """Cosine similarities ``[Nt, Nv]``, computed tile by tile (``None`` = one tile along that axis).

        Tile sizes change memory and speed only, never the scores beyond float rounding.
        """
        queries, text_units = self.encode_texts(t)
        columns = []
        for videos in _blocks(V.shape[0], video_block):
            keys, values, valid = self.encode_videos(V[videos], mask[videos])
            column = []
            for texts in _blocks(t.shape[0], text_block):
                pooled = F.normalize(self.pool(queries[:, texts], keys, values, valid), dim=-1)
                column.append((pooled * text_units[texts]).sum(dim=-1).T)
            columns.append(torch.cat(column, dim=0))
        return torch.cat(columns, dim=1)

    def forward(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Same as :meth:`score` with the default tile sizes."""
        return self.score(t, V, mask)


class LinearMeanPooling(nn.Module):
    """Mean pooling with a trained linear map per side (a CLIP4Clip meanP head fitted on frozen features): the
    fair order-blind baseline, since it learns from the same pairs as GLSCL but cannot see frame order."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pool = MeanPooling()
        self.text = nn.Linear(dim, dim)
        self.video = nn.Linear(dim, dim)

    def embed(self, t: Tensor, V: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Unit-norm mapped text ``[Nt, D]`` and mapped pooled video ``[Nv, D]`` embeddings."""
        return self.embed_pooled(t, self.pool.embed_videos(V, mask))

    def embed_pooled(self, t: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """`embed` from videos already mean-pooled (``MeanPooling.embed_videos``, the `vector` ingest stores)."""
        texts = F.normalize(self.text(F.normalize(t, dim=-1)), dim=-1)
        return texts, F.normalize(self.video(pooled), dim=-1)

    def score(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Cosine similarities ``[Nt, Nv]`` of the mapped texts and mapped pooled videos."""
        return self.score_pooled(t, self.pool.embed_videos(V, mask))

    def score_pooled(self, t: Tensor, pooled: Tensor) -> Tensor:
        """`score` from videos already mean-pooled."""
        texts, videos = self.embed_pooled(t, pooled)
        return texts @ videos.T

    def pair_scores(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        """Cosine similarities ``[N]`` of aligned pairs (text i, video i)."""
        texts, videos = self.embed(t, V, mask)
        return (texts * videos).sum(dim=-1)

    def forward(self, t: Tensor, V: Tensor, mask: Tensor) -> Tensor:
        return self.score(t, V, mask)


def fit_linear_mean_pooling(
    t: Tensor, pooled: Tensor, text_to_video: Tensor, steps: int = 400, batch: int = 64, seed: int = 0
) -> LinearMeanPooling:
    """Train LinearMeanPooling with symmetric InfoNCE (logit scale 20, AdamW 1e-3) on random batches of
    (text, its video) pairs whose videos are distinct. Videos come mean-pooled ([Nv, D]): the fit needs
    nothing else, so it never holds a split's frames."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LinearMeanPooling(t.shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = min(batch, int(text_to_video.max()) + 1)
    for _ in range(steps):
        texts = torch.randperm(len(t), generator=generator)
        _, first = torch.unique(text_to_video[texts], return_inverse=True)
        keep = torch.zeros(int(first.max()) + 1, dtype=torch.long).scatter_(0, first.flip(0), texts.flip(0))
        chosen = keep[torch.randperm(len(keep), generator=generator)[:size]]
        videos = text_to_video[chosen]
        logits = 20.0 * model.score_pooled(t[chosen], pooled[videos])
        labels = torch.arange(len(chosen))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
