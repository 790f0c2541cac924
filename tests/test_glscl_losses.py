"""GLSCL losses: each term is minimal where it should be and grows where it should."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glscl.config import GLSCLConfig
from glscl.losses import GLSCLLoss, info_nce, inter_consistency_loss, intra_diversity_loss

K, D = 4, 8


def orthonormal_queries(batch: int) -> torch.Tensor:
    return torch.eye(D)[:K].expand(batch, K, D).clone()


def test_info_nce_prefers_diagonal() -> None:
    diagonal = torch.eye(5) * 0.9
    uniform = torch.full((5, 5), 0.3)
    off = 0.9 - torch.eye(5) * 0.9
    assert info_nce(diagonal, 100.0) < 1e-6
    torch.testing.assert_close(info_nce(uniform, 100.0), torch.tensor(math.log(5)))
    assert info_nce(diagonal, 100.0) < info_nce(uniform, 100.0) < info_nce(off, 100.0)


def test_info_nce_is_symmetric_in_direction() -> None:
    scores = torch.randn(6, 6)
    torch.testing.assert_close(info_nce(scores, 10.0), info_nce(scores.T, 10.0))


def test_intra_diversity_zero_for_orthogonal_positive_for_identical() -> None:
    assert intra_diversity_loss(orthonormal_queries(3), margin=0.1) == 0
    identical = F.normalize(torch.ones(3, K, D), dim=-1)
    torch.testing.assert_close(intra_diversity_loss(identical, margin=0.1), torch.tensor(0.2))
    assert intra_diversity_loss(identical[:, :1], margin=0.1) == 0


def test_intra_diversity_grows_with_overlap() -> None:
    base = orthonormal_queries(2)
    values = []
    for mix in (0.0, 0.95, 0.99, 1.0):
        q = base.clone()
        q[:, 1] = F.normalize(mix * base[:, 0] + (1 - mix) * base[:, 1], dim=-1)
        values.append(intra_diversity_loss(q, margin=0.1).item())
    assert values[0] == 0 and values[1] < values[2] < values[3]


def matched_at(video: torch.Tensor, cosine: float) -> torch.Tensor:
    """Unit text queries whose cosine with each matched video query is exactly `cosine`."""
    other = torch.roll(torch.eye(D)[:K], shifts=K, dims=1).expand(video.shape[0], K, D)
    return cosine * video + math.sqrt(1 - cosine**2) * other


def test_inter_consistency_mean_form_target_behaviour() -> None:
    video = orthonormal_queries(3)
    beta, target = 0.005, 0.75
    identical = inter_consistency_loss(video, video, beta, target, "mean")
    torch.testing.assert_close(identical, torch.tensor(beta * K * (1 - target) ** 2))
    at_target = matched_at(video, target)
    expected_mse = F.mse_loss(video.mean(0), at_target.mean(0))
    torch.testing.assert_close(inter_consistency_loss(video, at_target, beta, target, "mean"), expected_mse)
    opposite = inter_consistency_loss(video, -video, beta, target, "mean")
    assert opposite > identical


def test_inter_consistency_mean_form_uses_batch_mean() -> None:
    video = orthonormal_queries(5)
    small = inter_consistency_loss(video[:2], video[:2], 0.005, 0.75, "mean")
    large = inter_consistency_loss(video, video, 0.005, 0.75, "mean")
    torch.testing.assert_close(small, large)


def test_inter_consistency_authors_form_divides_the_batch_sum_by_k() -> None:
    batch, beta, target, cosine = 12, 0.005, 0.75, 0.3
    video = orthonormal_queries(batch)
    text = matched_at(video, cosine)
    mse = F.mse_loss(video.mean(0), text.mean(0))
    authors = inter_consistency_loss(video, text, beta, target)
    torch.testing.assert_close(authors, mse + beta * K * (batch / K * cosine - target) ** 2)

    # The diagonal terms pull a cosine of 0.3 in opposite directions: "authors" down (B/K * 0.3 > 0.75), "mean" up.
    def diagonal_gradient(form: str) -> float:
        leaf = text.clone().requires_grad_(True)
        term = inter_consistency_loss(video, leaf, beta, target, form) - inter_consistency_loss(video, leaf, 0, 0)
        term.backward()
        return float((leaf.grad * video).sum())

    assert diagonal_gradient("authors") > 0 > diagonal_gradient("mean")
    with pytest.raises(ValueError, match="ICL form"):
        inter_consistency_loss(video, text, beta, target, "other")


def test_total_combines_weighted_terms() -> None:
    torch.manual_seed(0)
    config = GLSCLConfig(embed_dim=D, temporal_heads=2, decoder_heads=2, num_queries=K, icl_weight=2.0)
    video = F.normalize(torch.randn(4, K, D), dim=-1)
    text = F.normalize(torch.randn(4, K, D), dim=-1)
    scores = torch.randn(4, 4)
    terms = GLSCLLoss(config)(scores, 100.0, video, text)
    assert set(terms) == {"contrastive", "icl", "idl", "total"}
    expected_idl = config.idl_alpha * (intra_diversity_loss(video, 0.1) + intra_diversity_loss(text, 0.1))
    torch.testing.assert_close(terms["idl"], expected_idl)
    torch.testing.assert_close(terms["total"], terms["contrastive"] + 2.0 * terms["icl"] + terms["idl"])
    visual_only = GLSCLLoss(GLSCLConfig(**{**config.to_dict(), "idl_both_modalities": False}))
    torch.testing.assert_close(
        visual_only(scores, 100.0, video, text)["idl"], config.idl_alpha * intra_diversity_loss(video, 0.1)
    )


def test_hard_negatives_join_the_video_to_text_softmax_only() -> None:
    torch.manual_seed(0)
    scores, negatives = torch.randn(4, 4), torch.randn(4, 4)
    none_valid = torch.zeros(4, dtype=torch.bool)
    torch.testing.assert_close(info_nce(scores, 10.0, negatives, none_valid), info_nce(scores, 10.0))
    valid = torch.tensor([True, False, True, True])
    text_to_video = sum(-torch.log_softmax(10.0 * scores[i], 0)[i] for i in range(4)) / 4
    video_to_text = 0.0
    for j in range(4):
        row = torch.cat([scores[:, j], negatives[valid, j]]) * 10.0
        video_to_text = video_to_text - torch.log_softmax(row, 0)[j] / 4
    torch.testing.assert_close(info_nce(scores, 10.0, negatives, valid), 0.5 * (text_to_video + video_to_text))
    diagonal = torch.eye(4) * 0.9
    assert info_nce(diagonal, 100.0, torch.zeros(4, 4)) < 1e-6
    # a negative that ties each video's own text halves its video-to-text probability: loss 0.5 * ln 2
    torch.testing.assert_close(info_nce(diagonal, 100.0, diagonal), torch.tensor(0.5 * math.log(2)))
