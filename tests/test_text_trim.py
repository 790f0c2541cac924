"""Texts run over their real length only: the CLIP text tower over the batch's longest real sequence and the GLSCL
text side over its last valid token give the full-length features, and the shorter run does happen."""

from __future__ import annotations

import pytest
import torch

from glscl import onednn
from glscl.backbone import Backbone
from glscl.backbone_config import TINY_MODEL, BackboneConfig
from glscl.config import HEAD_PRESETS, GLSCLConfig
from glscl.local_decoder import OneDnnDecoder
from glscl.model import GLSCL

TEXTS = [
    "a red square",
    "a man in a red jacket climbs a steep wall then waves at the camera twice",
    "",
    "two dogs run across a wet beach",
]
MAX_WORDS = 32


def lengths_seen(module: torch.nn.Module, argument: int = 0) -> list[int]:
    """Sequence lengths of a positional argument [B, L, D] `module` is called with, recorded from now on."""
    seen: list[int] = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[argument].shape[1]))
    return seen


@pytest.fixture(scope="module", params=[(TINY_MODEL, "tiny"), ("ViT-B-32", "paper")], ids=["tiny", "vit-b-32"])
def towers(request: pytest.FixtureRequest) -> tuple[Backbone, GLSCL]:
    model_name, head = request.param
    backbone = Backbone(BackboneConfig(model_name=model_name))
    torch.manual_seed(0)
    return backbone, GLSCL(GLSCLConfig(embed_dim=backbone.embed_dim, **HEAD_PRESETS[head])).eval()


@torch.inference_mode()
def test_clip_text_tower_trimmed_to_the_real_length_gives_the_full_length_features(towers):
    backbone, _ = towers
    tokens = backbone.tokenize(TEXTS, MAX_WORDS)
    eot = tokens.argmax(dim=-1)
    seen = lengths_seen(backbone.model.ln_final)
    sentence, features, mask = backbone.text_features(tokens)
    full_sentence, full_features, full_mask = backbone.text_features(tokens, trim=False)
    assert seen == [int(eot.max()) + 1, MAX_WORDS] and seen[0] < MAX_WORDS
    assert features.shape == full_features.shape == (len(TEXTS), MAX_WORDS, backbone.embed_dim)
    assert torch.equal(mask, full_mask) and mask.sum(dim=1).tolist() == (eot + 1).tolist()
    torch.testing.assert_close(sentence, full_sentence, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(features, full_features, rtol=1e-4, atol=1e-5)
    assert not features[~mask].any()
    reference = backbone.model.encode_text(backbone.tokenize(TEXTS, 77))
    torch.testing.assert_close(sentence, reference, rtol=1e-4, atol=1e-5)
    for row, text in enumerate(TEXTS):
        alone = backbone.text_features(backbone.tokenize([text], MAX_WORDS))[1][0]
        torch.testing.assert_close(features[row], alone, rtol=1e-4, atol=1e-5)


def test_text_tower_in_onednn_gives_open_clips_features_and_follows_weight_changes(towers):
    backbone, _ = towers
    assert backbone.fast_tower is not None, "open_clip's plain CPU text blocks take the oneDNN path"
    tokens = backbone.tokenize(TEXTS, MAX_WORDS)
    seen = lengths_seen(backbone.model.transformer)
    with torch.no_grad():
        fast = backbone.text_features(tokens)
    assert seen == [], "without gradients open_clip's transformer forward is not run"
    with torch.enable_grad():
        reference = backbone.text_features(tokens)
    assert len(seen) == 1
    with torch.no_grad(), onednn.disabled():
        backbone.text_features(tokens)
    assert len(seen) == 2, "onednn.disabled() runs open_clip's own forward"
    for ours, theirs in zip(fast, reference, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-5)
    fc = backbone.model.transformer.resblocks[0].mlp.c_fc
    with torch.no_grad():
        fc.weight.mul_(1.5)  # as a fine-tune's optimizer step does, in place
        changed = backbone.text_features(tokens)
        assert not torch.allclose(changed[0], fast[0], atol=1e-3)
        with torch.enable_grad():
            torch.testing.assert_close(changed[0], backbone.text_features(tokens)[0].detach(), rtol=1e-4, atol=1e-5)
        fc.weight.div_(1.5)


def test_glscl_text_side_in_onednn_gives_the_decoders_result(towers):
    backbone, model = towers
    decoder = model.local_interaction.decoder
    assert OneDnnDecoder.supports(decoder)
    with torch.no_grad():
        sentence, features, mask = backbone.text_features(backbone.tokenize(TEXTS, MAX_WORDS))
    mask[2] = False  # a text with no valid token attends to every position
    calls = lengths_seen(decoder)
    with torch.no_grad():
        fast = model.encode_text(sentence, features, mask).local
    assert calls == [], "without gradients nn.TransformerDecoder's forward is not run"
    with torch.enable_grad():
        reference = model.encode_text(sentence, features, mask).local.detach()
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_glscl_text_side_trimmed_to_the_last_valid_token_gives_the_full_length_encoding(towers):
    backbone, model = towers
    sentence, features, mask = backbone.text_features(backbone.tokenize(TEXTS, MAX_WORDS))
    noisy = features.masked_fill(~mask[..., None], 7.0)
    seen = lengths_seen(model.local_interaction)
    trimmed = model.encode_text(sentence, noisy, mask)
    full = model.encode_text(sentence, noisy, mask, trim=False)
    assert seen == [int(mask.sum(dim=1).max()), MAX_WORDS]
    torch.testing.assert_close(trimmed.local, full.local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trimmed.sentence, full.sentence)
    without = mask.clone()
    without[2] = False
    torch.testing.assert_close(
        model.encode_text(sentence, noisy, without).local,
        model.encode_text(sentence, noisy, without, trim=False).local,
        rtol=1e-4,
        atol=1e-5,
    )


@torch.inference_mode()
def test_glscl_text_side_attending_to_padding_is_not_trimmed(towers):
    backbone, model = towers
    attending = GLSCL(GLSCLConfig(**{**model.config.to_dict(), "local_padding_mask": False})).eval()
    sentence, features, mask = backbone.text_features(backbone.tokenize(TEXTS, MAX_WORDS))
    seen = lengths_seen(attending.local_interaction)
    attending.encode_text(sentence, features, mask)
    assert seen == [MAX_WORDS]
