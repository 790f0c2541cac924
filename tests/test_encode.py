"""Backbone and encode stages on the tiny random open_clip config: shapes, masks, the text path, weight files."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glscl.backbone import Backbone
from glscl.backbone_config import TINY_MODEL, BackboneConfig
from workers.ingest.encode import FrameEncoder, TextEncoder


@pytest.fixture(scope="module")
def backbone():
    return Backbone(BackboneConfig())


def test_frame_encoder_fills_valid_slots_and_pools_a_unit_vector():
    encoder = FrameEncoder(BackboneConfig(), frames_per_batch=3)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(2, 4, 64, 64, 3), dtype=np.uint8)
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    out = encoder({"frames": frames.copy(), "frame_mask": mask, "video_id": np.array(["a", "b"])})
    assert "frames" not in out
    assert out["features"].shape == (2, 4, 64)
    assert not out["features"][~mask].any() and np.abs(out["features"][mask]).sum(axis=-1).min() > 0
    np.testing.assert_allclose(np.linalg.norm(out["vector"], axis=1), 1.0, rtol=1e-5)
    alone = encoder({"frames": frames[1:, :1].copy(), "frame_mask": mask[1:, :1]})
    np.testing.assert_allclose(alone["features"][0, 0], out["features"][1, 0], rtol=1e-4, atol=1e-5)


def test_text_path_matches_open_clip_sentence_embedding(backbone):
    texts = ["a red square moves left.", "a blue circle moves up, then a green square moves down."]
    tokens = backbone.tokenize(texts, 77)
    with torch.inference_mode():
        reference = backbone.model.encode_text(tokens).numpy()
    sentence, token_features, _ = backbone.encode_texts(texts, 77)
    np.testing.assert_allclose(sentence, reference, rtol=1e-4, atol=1e-5)
    short_sentence, short_tokens, short_mask = backbone.encode_texts(texts, 16)
    np.testing.assert_allclose(short_sentence, reference, rtol=1e-4, atol=1e-5)
    assert short_tokens.shape == (2, 16, 64) and short_mask.shape == (2, 16)
    eot = tokens.argmax(dim=-1).tolist()
    assert short_mask.sum(axis=1).tolist() == [e + 1 for e in eot]
    np.testing.assert_allclose(short_tokens[short_mask], token_features[:, :16][short_mask], rtol=1e-4, atol=1e-5)


def test_text_encoder_batch():
    out = TextEncoder(BackboneConfig(), max_words=8)({"text": np.array(["one", "two words"], dtype=object)})
    assert out["vector"].shape == (2, 64) and out["tokens"].shape == (2, 8, 64)
    assert out["token_mask"].sum(axis=1).tolist() == [3, 4]


def test_local_weight_file_loads_and_is_named_by_its_digest(tmp_path, backbone):
    other = Backbone(BackboneConfig(seed=7))
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(weights))
    loaded = Backbone(BackboneConfig(TINY_MODEL, pretrained=str(weights)))
    frames = np.random.default_rng(1).integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.encode_frames(frames), other.encode_frames(frames), rtol=1e-5, atol=1e-6)
    assert not np.allclose(loaded.encode_frames(frames), backbone.encode_frames(frames))
    assert loaded.config.model_id.startswith(f"{TINY_MODEL}@file-") and not loaded.config.is_random


def test_backbone_naming_and_refusals():
    assert BackboneConfig().model_id == f"{TINY_MODEL}@random-seed0"
    assert "RANDOM weights" in BackboneConfig().describe()
    real = BackboneConfig("ViT-B-32", "openai")
    assert (real.model_id, real.image_size, real.embed_dim) == ("ViT-B-32-quickgelu@openai", 224, 512)
    with pytest.raises(ValueError, match="unknown open_clip model 'no-such-model'"):
        _ = BackboneConfig("no-such-model").image_size


def test_random_backbone_comes_from_its_seed_and_leaves_the_callers_rng_alone(backbone):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    again = Backbone(BackboneConfig())
    assert torch.equal(torch.rand(3), expected)
    state = again.model.state_dict()
    assert all(torch.equal(tensor, state[name]) for name, tensor in backbone.model.state_dict().items())
