"""GLSCL training losses: symmetric InfoNCE, inter-consistency (ICL) and intra-diversity (IDL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glscl.config import GLSCLConfig


def info_nce(
    scores: Tensor,
    logit_scale: Tensor | float,
    negative_scores: Tensor | None = None,
    negative_valid: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE on logit_scale * scores [B, B] (texts x videos); the diagonal holds the positives.

    Hard negative texts (`negative_scores` [M, B], negatives x videos; `negative_valid` [M] marks the real
    ones) join the video-to-text softmax: each video must pick its own text over them as well as over the other
    videos' texts. The text-to-video side is unchanged (a negative text has no video to find).
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square [B, B] matrix, got {tuple(scores.shape)}")
    logits = logit_scale * scores
    targets = torch.arange(scores.shape[0], device=scores.device)
    video_to_text = logits.T
    if negative_scores is not None:
        if negative_scores.ndim != 2 or negative_scores.shape[1] != scores.shape[1]:
            raise ValueError(f"negative_scores must be [M, {scores.shape[1]}], got {tuple(negative_scores.shape)}")
        negatives = logit_scale * negative_scores
        if negative_valid is not None:
            negatives = negatives.masked_fill(~negative_valid.bool().unsqueeze(1), float("-inf"))
        video_to_text = torch.cat([video_to_text, negatives.T], dim=1)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(video_to_text, targets))


def inter_consistency_loss(
    video_local: Tensor, text_local: Tensor, beta: float, target: float, form: str = "authors"
) -> Tensor:
    """ICL on matched pairs' normalised query outputs [B, K, D]: pulls the two modalities' concepts together.

    MSE(batch-mean video queries, batch-mean text queries) + beta * sum_k (c_k - target)^2, where c_k sums the
    B matched cosines of query k and divides by K (form "authors", as the authors' code: c_k = (B/K) * mean
    cosine, so matched concepts are pushed gently towards 0.75 K/B) or by B (form "mean", a batch mean; its
    gradient is about B/K times weaker and pulls the other way, which nearly switches the term off at beta 0.005).
    """
    if video_local.shape != text_local.shape:
        raise ValueError(f"shape mismatch: {tuple(video_local.shape)} vs {tuple(text_local.shape)}")
    if form not in ("authors", "mean"):
        raise ValueError(f"ICL form must be 'authors' or 'mean', got {form!r}")
    mse = F.mse_loss(video_local.mean(0), text_local.mean(0))
    cosines = (video_local * text_local).sum(-1)
    divisor = video_local.shape[1] if form == "authors" else video_local.shape[0]
    consistency = cosines.sum(0) / divisor
    return mse + beta * ((consistency - target) ** 2).sum()


def intra_diversity_loss(local: Tensor, margin: float) -> Tensor:
    """IDL hinge on one modality's queries [B, K, D]: pushes the K concepts of an item apart.

    With G the batch-mean K x K Gram, sum over i != j of max(0, m + G_ij - G_ii) + max(0, m + G_ij - G_jj),
    divided by K(K-1). Zero for K = 1. The caller applies the alpha weight.
    """
    num_queries = local.shape[1]
    if num_queries < 2:
        return local.new_zeros(())
    gram = torch.einsum("bkd,bjd->kj", local, local) / local.shape[0]
    diag = gram.diagonal()
    off_diagonal = ~torch.eye(num_queries, dtype=torch.bool, device=local.device)
    hinge = F.relu(margin + gram - diag.unsqueeze(1)) + F.relu(margin + gram - diag.unsqueeze(0))
    return hinge[off_diagonal].sum() / (num_queries * (num_queries - 1))


class GLSCLLoss:
    """Total GLSCL loss: InfoNCE + icl_weight * ICL + idl_weight * alpha * IDL (visual, and textual if set)."""

    def __init__(self, config: GLSCLConfig) -> None:
        self.config = config

    def __call__(
        self,
        scores: Tensor,
        logit_scale: Tensor | float,
        video_local: Tensor,
        text_local: Tensor,
        negative_scores: Tensor | None = None,
        negative_valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Terms for a batch of B matched pairs (and optional hard negative texts, see `info_nce`): keys
        contrastive, icl, idl and total (all scalars)."""
        cfg = self.config
        contrastive = info_nce(scores, logit_scale, negative_scores, negative_valid)
        icl = inter_consistency_loss(video_local, text_local, cfg.icl_beta, cfg.icl_target, cfg.icl_form)
        idl = intra_diversity_loss(video_local, cfg.idl_margin)
        if cfg.idl_both_modalities:
            idl = idl + intra_diversity_loss(text_local, cfg.idl_margin)
        idl = cfg.idl_alpha * idl
        total = contrastive + cfg.icl_weight * icl + cfg.idl_weight * idl
        return {"contrastive": contrastive, "icl": icl, "idl": idl, "total": total}
