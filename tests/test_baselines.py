"""Tests for the baseline heads: plain per-pair references, masks, tiling and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glscl.baselines import MeanPooling, XPoolHead

DIM = 8


def make_inputs(num_texts: int = 5, num_videos: int = 4, num_frames: int = 6, seed: int = 0):
    """Random float64 texts, frames and a mask with a different number of valid frames per video."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(num_texts, DIM, generator=gen, dtype=torch.float64)
    V = torch.randn(num_videos, num_frames, DIM, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([num_frames, 1, 3, num_frames - 1][:num_videos])
    mask = (torch.arange(num_frames)[None, :] < lengths[:, None]).long()
    return t, V, mask


def with_garbage(V: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy of V whose padded frames hold huge values and NaN."""
    dirty = V.clone()
    padded = mask == 0
    dirty[padded] = 1e6
    dirty[padded.nonzero()[0, 0], padded.nonzero()[0, 1], 0] = float("nan")
    return dirty


def random_xpool(num_heads: int = 1, ffn_gelu: bool = False, seed: int = 0) -> XPoolHead:
    """An XPoolHead in float64 eval mode with random (non-identity) parameters."""
    torch.manual_seed(seed)
    head = XPoolHead(dim=DIM, num_heads=num_heads, ffn_gelu=ffn_gelu).double().eval()
    with torch.no_grad():
        for param in head.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    return head


def mean_pooling_reference(t, V, mask, normalize_frames: bool) -> torch.Tensor:
    scores = torch.empty(t.shape[0], V.shape[0], dtype=t.dtype)
    for b in range(V.shape[0]):
        frames = V[b][mask[b].bool()]
        if normalize_frames:
            frames = frames / frames.norm(dim=-1, keepdim=True)
        video = frames.mean(dim=0)
        for a in range(t.shape[0]):
            scores[a, b] = torch.dot(t[a], video) / (t[a].norm() * video.norm())
    return scores


def xpool_reference(head: XPoolHead, t, V, mask) -> torch.Tensor:
    """X-Pool's equations, one (text, video) pair at a time, over the valid frames only."""
    scores = torch.empty(t.shape[0], V.shape[0], dtype=t.dtype)
    dh = head.head_dim
    for a in range(t.shape[0]):
        query = head.q_proj(head.input_norm(t[a]))
        for b in range(V.shape[0]):
            frames = head.input_norm(V[b][mask[b].bool()])
            keys, values = head.k_proj(frames), head.v_proj(frames)
            heads = []
            for h in range(head.num_heads):
                part = slice(h * dh, (h + 1) * dh)
                weights = torch.softmax(keys[:, part] @ query[part] / math.sqrt(dh), dim=0)
                heads.append(weights @ values[:, part])
            attended = head.attn_norm(head.out_proj(torch.cat(heads)))
            pooled = head.out_norm(attended + head.ffn_act(head.ffn(attended)))
            scores[a, b] = torch.dot(t[a], pooled) / (t[a].norm() * pooled.norm())
    return scores


@pytest.mark.parametrize("normalize_frames", [True, False])
def test_mean_pooling_matches_reference(normalize_frames):
    t, V, mask = make_inputs()
    head = MeanPooling(normalize_frames=normalize_frames)
    scores = head.score(t, V, mask)
    assert scores.shape == (5, 4)
    torch.testing.assert_close(scores, mean_pooling_reference(t, V, mask, normalize_frames))
    torch.testing.assert_close(head(t, V, mask.bool()), scores)


def test_mean_pooling_ignores_padded_frames():
    t, V, mask = make_inputs()
    head = MeanPooling()
    torch.testing.assert_close(head.score(t, with_garbage(V, mask), mask), head.score(t, V, mask))


@pytest.mark.parametrize(("num_heads", "ffn_gelu"), [(1, False), (2, False), (4, True)])
def test_xpool_matches_per_pair_reference(num_heads, ffn_gelu):
    t, V, mask = make_inputs()
    head = random_xpool(num_heads, ffn_gelu)
    with torch.no_grad():
        scores = head.score(t, V, mask, text_block=2, video_block=3)
        expected = xpool_reference(head, t, V, mask)
    assert scores.shape == (5, 4)
    torch.testing.assert_close(scores, expected)


def test_xpool_pool_shape():
    t, V, mask = make_inputs()
    head = random_xpool(num_heads=2)
    queries, _ = head.encode_texts(t)
    keys, values, valid = head.encode_videos(V, mask)
    assert queries.shape == (2, 5, DIM // 2)
    assert keys.shape == (2, 4 * 6, DIM // 2)
    assert values.shape == (4, 2 * 6, DIM)
    assert head.pool(queries, keys, values, valid).shape == (4, 5, DIM)


@pytest.mark.parametrize(("text_block", "video_block"), [(1, 1), (2, 3), (4, None), (None, None), (100, 100)])
def test_xpool_tiling_does_not_change_scores(text_block, video_block):
    t, V, mask = make_inputs(num_texts=7, num_videos=4)
    head = random_xpool(num_heads=2)
    with torch.no_grad():
        reference = head.score(t, V, mask, text_block=None, video_block=None)
        torch.testing.assert_close(head.score(t, V, mask, text_block, video_block), reference)


def test_xpool_ignores_padded_frames():
    t, V, mask = make_inputs()
    head = random_xpool(num_heads=2)
    with torch.no_grad():
        torch.testing.assert_close(head.score(t, with_garbage(V, mask), mask), head.score(t, V, mask))


def test_xpool_identity_init_and_defaults():
    head = XPoolHead()
    assert (head.dim, head.num_heads) == (512, 1)
    assert torch.equal(head.q_proj.weight, torch.eye(512))
    assert isinstance(head.ffn_act, nn.Identity)
    t, V, mask = make_inputs()
    small = XPoolHead(dim=DIM).double().eval()
    scores = small(t, V, mask)
    assert scores.shape == (5, 4)
    assert bool(torch.isfinite(scores).all())
    assert bool((scores.abs() <= 1 + 1e-9).all())


def test_gradients_reach_every_xpool_parameter():
    t, V, mask = make_inputs()
    head = random_xpool(num_heads=2, ffn_gelu=True).train()
    t.requires_grad_(True)
    scores = head.score(t, V, mask, text_block=2, video_block=2)
    F.cross_entropy(scores[:4] * 10, torch.arange(4)).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert bool(torch.isfinite(param.grad).all()), name
        assert float(param.grad.abs().sum()) > 0, name
    assert t.grad is not None


def test_errors():
    t, V, mask = make_inputs()
    mask[2] = 0
    with pytest.raises(ValueError, match="no valid frame"):
        MeanPooling().score(t, V, mask)
    with pytest.raises(ValueError, match="no valid frame"):
        random_xpool().score(t, V, mask)
    with pytest.raises(ValueError, match="mask"):
        MeanPooling().score(t, V, mask[:, :3])
    with pytest.raises(ValueError, match="divisible"):
        XPoolHead(dim=10, num_heads=3)
    with pytest.raises(ValueError, match="block size"):
        random_xpool().score(t, V, make_inputs()[2], text_block=0)


def test_linear_mean_pooling_learns_a_mapping_mean_pooling_cannot_see():
    from glscl.baselines import LinearMeanPooling, MeanPooling, fit_linear_mean_pooling
    from glscl.metrics import both_directions

    torch.manual_seed(0)
    videos = torch.randn(40, 3, 16)
    mask = torch.ones(40, 3, dtype=torch.bool)
    mixing = torch.randn(16, 16)
    texts = videos.mean(dim=1) @ mixing + 0.05 * torch.randn(40, 16)
    text_to_video = torch.arange(40)
    before = both_directions(MeanPooling().score(texts, videos, mask))["t2v"]["R@1"]
    model = fit_linear_mean_pooling(texts, MeanPooling().embed_videos(videos, mask), text_to_video, steps=150, batch=20)
    assert isinstance(model, LinearMeanPooling)
    with torch.no_grad():
        after = both_directions(model.score(texts, videos, mask))["t2v"]["R@1"]
    assert after > before + 30
