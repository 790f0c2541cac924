"""GLSCL head: shapes, masking, exactness of the blocked scorers against a plain reference, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glscl.config import GLSCLConfig
from glscl.losses import GLSCLLoss
from glscl.model import GLSCL, GlobalInteraction
from glscl.similarity import (
    global_pair_scores,
    global_scores,
    gram_matrices,
    local_pair_scores,
    local_scores,
)

DIM, FRAMES, WORDS, QUERIES = 32, 6, 7, 4


def tiny_config(**overrides: object) -> GLSCLConfig:
    values = dict(
        embed_dim=DIM,
        max_frames=FRAMES,
        max_words=WORDS,
        frame_position_size=10,
        temporal_layers=2,
        temporal_heads=4,
        temporal_ffn=64,
        num_queries=QUERIES,
        decoder_layers=2,
        decoder_heads=4,
        decoder_ffn=64,
    )
    values.update(overrides)
    return GLSCLConfig(**values)


def make_model(**overrides: object) -> GLSCL:
    torch.manual_seed(0)
    return GLSCL(tiny_config(**overrides)).eval()


def lengths_to_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def batch(num: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frame_lengths = [FRAMES - (i % FRAMES) for i in range(num)]
    word_lengths = [max(2, WORDS - 2 * i) for i in range(num)]
    return {
        "frame_feats": torch.randn(num, FRAMES, DIM, generator=g),
        "frame_mask": lengths_to_mask(frame_lengths, FRAMES),
        "sentence": torch.randn(num, DIM, generator=g),
        "tokens": torch.randn(num, WORDS, DIM, generator=g),
        "token_mask": lengths_to_mask(word_lengths, WORDS),
    }


def reference_global(t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Plain per-pair float64 loop: softmax-pool the valid frames with the text, then cosine."""
    t, v = t.double(), v.double()
    out = torch.zeros(t.shape[0], v.shape[0], dtype=torch.float64)
    for a in range(t.shape[0]):
        for b in range(v.shape[0]):
            frames = v[b][mask[b].bool()]
            if frames.shape[0] == 0:
                continue
            weights = torch.softmax(frames @ t[a] / temperature, dim=0)
            pooled = weights @ frames
            out[a, b] = t[a] @ pooled / (t[a].norm() * pooled.norm())
    return out


def reference_local(qt: torch.Tensor, qv: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(qt.shape[0], qv.shape[0], dtype=torch.float64)
    for a in range(qt.shape[0]):
        for b in range(qv.shape[0]):
            out[a, b] = sum(qt[a, k].double() @ qv[b, k].double() for k in range(qt.shape[1])) / qt.shape[1]
    return out


def random_gallery(num_texts: int, num_videos: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(num_texts, DIM, generator=g)
    v = torch.randn(num_videos, FRAMES, DIM, generator=g)
    lengths = [int(x) for x in torch.randint(1, FRAMES + 1, (num_videos,), generator=g)]
    lengths[0] = 0
    lengths[-1] = FRAMES
    return t, v, lengths_to_mask(lengths, FRAMES)


def test_config_round_trip_and_unknown_keys() -> None:
    config = tiny_config()
    assert GLSCLConfig.from_dict(config.to_dict()) == config
    defaults = GLSCLConfig()
    assert (defaults.embed_dim, defaults.num_queries, defaults.global_temperature) == (512, 8, 3.0)
    with pytest.raises(ValueError, match="unknown GLSCLConfig key"):
        GLSCLConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(temporal_heads=5)


def test_encoding_shapes_and_normalisation() -> None:
    model = make_model()
    data = batch(5)
    video = model.encode_video(data["frame_feats"], data["frame_mask"])
    text = model.encode_text(data["sentence"], data["tokens"], data["token_mask"])
    assert video.frames.shape == (5, FRAMES, DIM)
    assert video.local.shape == text.local.shape == (5, QUERIES, DIM)
    assert text.sentence.shape == (5, DIM)
    torch.testing.assert_close(video.local.norm(dim=-1), torch.ones(5, QUERIES))
    torch.testing.assert_close(text.local.norm(dim=-1), torch.ones(5, QUERIES))
    assert torch.all(video.frames[~video.mask] == 0)
    assert model.score(text, video).shape == (5, 5)


def test_padding_values_do_not_matter() -> None:
    model = make_model()
    data = batch(5)
    garbage = batch(5, seed=7)
    noisy = dict(data)
    noisy["frame_feats"] = torch.where(data["frame_mask"][..., None], data["frame_feats"], garbage["frame_feats"])
    noisy["tokens"] = torch.where(data["token_mask"][..., None], data["tokens"], float("nan"))
    with torch.no_grad():
        clean_scores, clean_video, clean_text = model(**data)
        noisy_scores, noisy_video, noisy_text = model(**noisy)
    torch.testing.assert_close(noisy_video.frames, clean_video.frames)
    torch.testing.assert_close(noisy_video.local, clean_video.local)
    torch.testing.assert_close(noisy_text.local, clean_text.local)
    torch.testing.assert_close(noisy_scores, clean_scores)


def test_global_scores_ignore_finite_padding() -> None:
    t, v, mask = random_gallery(4, 5)
    noisy = torch.where(mask[..., None], v, 1e3 * torch.randn_like(v))
    torch.testing.assert_close(global_scores(t, noisy, mask, 3.0), global_scores(t, v, mask, 3.0))


def test_fully_padded_items_are_finite() -> None:
    model = make_model()
    data = batch(3)
    data["frame_mask"][1] = False
    data["token_mask"][2] = False
    with torch.no_grad():
        scores, video, text = model(**data)
    assert torch.isfinite(scores).all() and torch.isfinite(video.local).all() and torch.isfinite(text.local).all()


def test_global_module_has_no_parameters() -> None:
    assert list(GlobalInteraction(3.0).parameters()) == []
    model = make_model()
    assert not any(name.startswith("global_interaction") for name, _ in model.named_parameters())


@pytest.mark.parametrize("block_size", [1, 3, (2, 5), 512])
def test_global_scores_match_reference(block_size: int | tuple[int, int]) -> None:
    t, v, mask = random_gallery(7, 9)
    expected = reference_global(t, v, mask, 3.0)
    got = global_scores(t.double(), v.double(), mask, 3.0, block_size=block_size)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.all(got[:, 0] == 0), "a video without valid frames scores 0"
    got32 = global_scores(t, v, mask, 3.0, block_size=block_size, gram=gram_matrices(v))
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-4, atol=1e-5)


def test_global_scores_bfloat16_inputs() -> None:
    t, v, mask = random_gallery(5, 6)
    expected = reference_global(t.bfloat16(), v.bfloat16(), mask, 3.0)
    got = global_scores(t.bfloat16(), v.bfloat16(), mask, 3.0, block_size=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_pair_scores_match_full_matrix_diagonal() -> None:
    t, v, mask = random_gallery(6, 6)
    full = global_scores(t, v, mask, 3.0)
    torch.testing.assert_close(global_pair_scores(t, v, mask, 3.0), full.diagonal())
    qt = torch.nn.functional.normalize(torch.randn(6, QUERIES, DIM), dim=-1)
    qv = torch.nn.functional.normalize(torch.randn(6, QUERIES, DIM), dim=-1)
    torch.testing.assert_close(local_scores(qt, qv).double(), reference_local(qt, qv), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(local_pair_scores(qt, qv), local_scores(qt, qv).diagonal())
    one = t[:1].expand(6, -1)  # one text over every video, as a re-rank passes it (the matrix-vector path)
    assert one.stride(0) == 0
    torch.testing.assert_close(global_pair_scores(one, v, mask, 3.0), full[0])
    torch.testing.assert_close(global_pair_scores(one, v, mask, 3.0), global_pair_scores(one.clone(), v, mask, 3.0))


def test_model_score_matches_reference_and_block_size() -> None:
    model = make_model()
    data = batch(6)
    data["frame_mask"][2] = False
    with torch.no_grad():
        video = model.encode_video(data["frame_feats"], data["frame_mask"])
        text = model.encode_text(data["sentence"], data["tokens"], data["token_mask"])
        scores = model.score(text, video, block_size=4)
        expected = reference_global(text.sentence, video.frames, video.mask, 3.0) + 0.5 * reference_local(
            text.local, video.local
        )
        torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-5)
        for block_size in (1, (2, 3), 100):
            torch.testing.assert_close(model.score(text, video, block_size=block_size), scores)
        torch.testing.assert_close(model.pair_scores(text, video), scores.diagonal())
        cached = model.score(text, video, gram=gram_matrices(video.frames))
        torch.testing.assert_close(cached, scores)


def test_encoding_is_per_item() -> None:
    model = make_model()
    data = batch(4)
    with torch.no_grad():
        video = model.encode_video(data["frame_feats"], data["frame_mask"])
        single = model.encode_video(data["frame_feats"][2:3], data["frame_mask"][2:3])
    torch.testing.assert_close(single.local[0], video.local[2], rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    model = make_model(dropout=0.0)
    model.train()
    data = batch(6)
    scores, video, text = model(**data)
    losses = GLSCLLoss(model.config)(scores, model.logit_scale_exp(), video.local, text.local)
    losses["total"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        grad = param.grad[:FRAMES] if name == "temporal.frame_position" else param.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_logit_scale_init_and_clamp() -> None:
    model = make_model()
    torch.testing.assert_close(model.logit_scale_exp(), torch.tensor(100.0))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    torch.testing.assert_close(model.logit_scale_exp(), torch.tensor(100.0))


def test_temporal_transformer_starts_from_the_clip_text_tower() -> None:
    from glscl.backbone_config import TINY_MODEL, open_clip_registry
    from glscl.config import TINY_HEAD
    from glscl.model import init_temporal_from_clip

    clip = open_clip_registry().create_model(TINY_MODEL)
    config = GLSCLConfig(**{**TINY_HEAD, "embed_dim": 64, "temporal_activation": "gelu"})
    head = GLSCL(config)
    copied = init_temporal_from_clip(head.temporal, clip, config)
    assert len(copied) == 2 * 12 + 1
    for index, layer in enumerate(head.temporal.encoder.layers):
        block = clip.transformer.resblocks[index]
        torch.testing.assert_close(layer.self_attn.in_proj_weight, block.attn.in_proj_weight, rtol=0, atol=0)
        torch.testing.assert_close(layer.linear2.bias, block.mlp.c_proj.bias, rtol=0, atol=0)
        torch.testing.assert_close(layer.norm1.weight, block.ln_1.weight, rtol=0, atol=0)
        x = torch.randn(3, 5, 64)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), block(x))
    torch.testing.assert_close(head.temporal.frame_position, clip.positional_embedding, rtol=0, atol=0)


def test_paper_head_fits_vit_b32_and_misfits_are_refused_with_the_fix() -> None:
    import open_clip

    from glscl.model import init_temporal_from_clip

    paper = GLSCLConfig()
    clip = open_clip.create_model("ViT-B-32-quickgelu")
    head = GLSCL(paper)
    init_temporal_from_clip(head.temporal, clip, paper)
    torch.testing.assert_close(
        head.temporal.encoder.layers[3].linear1.weight, clip.transformer.resblocks[3].mlp.c_fc.weight
    )
    gelu = GLSCLConfig(temporal_activation="gelu")
    with pytest.raises(ValueError, match=r"temporal_activation=gelu \(text tower: quick_gelu\).*temporal_init=random"):
        init_temporal_from_clip(GLSCL(gelu).temporal, clip, gelu)
    small = tiny_config()
    with pytest.raises(ValueError, match=r"embed_dim=32 \(text tower: 512\)"):
        init_temporal_from_clip(GLSCL(small).temporal, clip, small)


def test_local_queries_attend_to_padding_only_without_the_mask() -> None:
    data = batch(4)
    torch.manual_seed(0)
    masked = GLSCL(tiny_config()).eval()
    unmasked = GLSCL(tiny_config(local_padding_mask=False)).eval()
    unmasked.load_state_dict(masked.state_dict())
    with torch.no_grad():
        with_mask = masked.encode_video(data["frame_feats"], data["frame_mask"]).local
        without = unmasked.encode_video(data["frame_feats"], data["frame_mask"]).local
    assert bool(data["frame_mask"][0].all()) and not bool(data["frame_mask"][1].all())
    torch.testing.assert_close(with_mask[0], without[0])
    assert not torch.allclose(with_mask[1], without[1])


def test_encoded_padding_decodes_the_encoders_outputs_at_padded_slots() -> None:
    """The authors' form, checked against a direct computation: padded frame slots hold the blank frame's feature
    through the temporal transformer, padded tokens hold what the text tower gave, and the decoder reads them all
    (PyTorch's own decoder, no key mask) where the zeros form reads zeros there."""
    data = batch(4)
    torch.manual_seed(1)
    encoded = GLSCL(tiny_config(local_padding_mask=False, padding_memory="encoded")).eval()
    zeros = GLSCL(tiny_config(local_padding_mask=False)).eval()
    zeros.load_state_dict({k: v for k, v in encoded.state_dict().items() if k != "blank_frame"})
    encoded.set_blank_frame(torch.randn(encoded.config.embed_dim))
    feats, mask = data["frame_feats"], data["frame_mask"].bool()
    tokens = torch.randn_like(data["tokens"])  # nonzero at padded positions, as the text tower leaves them
    queries = encoded.local_interaction.queries.unsqueeze(0)
    with torch.no_grad():
        video = encoded.encode_video(feats, mask)
        text = encoded.encode_text(data["sentence"], tokens, data["token_mask"])
        filled = torch.where(mask[..., None], feats, encoded.blank_frame)
        outputs = encoded.temporal(filled, mask)
        decoder = encoded.local_interaction.decoder
        with torch.enable_grad():  # PyTorch's decoder, not the oneDNN one the eval path takes
            direct_video = F.normalize(decoder(queries.expand(len(feats), -1, -1), outputs), dim=-1)
            direct_text = F.normalize(decoder(queries.expand(len(tokens), -1, -1), tokens), dim=-1)
        zero_video = zeros.encode_video(feats, mask)
        zero_text = zeros.encode_text(data["sentence"], tokens, data["token_mask"])
    torch.testing.assert_close(video.local, direct_video, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text.local, direct_text, atol=1e-5, rtol=1e-4)
    assert not bool(video.frames[~mask].any()), "padded frames must stay zero for the global interaction"
    padded_video, padded_text = ~mask.all(1), ~data["token_mask"].bool().all(1)
    assert padded_video.any() and padded_text.any()
    assert not torch.allclose(video.local[padded_video], zero_video.local[padded_video])
    assert not torch.allclose(text.local[padded_text], zero_text.local[padded_text])
    with pytest.raises(ValueError, match="needs local_padding_mask=False"):
        tiny_config(padding_memory="encoded")


def test_text_tower_keeps_its_outputs_at_padded_positions_when_asked() -> None:
    """Words' features are the same either way; a padded position attends to its text's words only (changing
    another padded position's token leaves it unchanged)."""
    from glscl.backbone import Backbone
    from glscl.backbone_config import BackboneConfig

    backbone = Backbone(BackboneConfig())
    tokens = backbone.tokenize(["a red square moves left", "blue"], 12)
    with torch.no_grad():
        sentence, words, mask = backbone.text_features(tokens)
        kept_sentence, kept, kept_mask = backbone.text_features(tokens, keep_padding=True)
        changed = tokens.clone()
        changed[1, 6] = 400
        _, other, _ = backbone.text_features(changed, keep_padding=True)
    assert torch.equal(mask, kept_mask)
    torch.testing.assert_close(kept_sentence, sentence, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(kept[mask], words[mask], atol=1e-5, rtol=1e-4)
    assert not bool(words[~mask].any()) and bool(kept[~mask].abs().gt(0).all(-1).all())
    torch.testing.assert_close(other[1, 7:], kept[1, 7:])
    assert not torch.allclose(other[1, 6], kept[1, 6])
