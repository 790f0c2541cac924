"""The backbone runs with the activation its weights were trained with (QuickGELU for OpenAI CLIP), taking the
user's path: open_clip resolves the `openai` tag to its Hugging Face download, here answered offline from a cache
that holds random weights in that download's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from glscl.backbone_config import BackboneConfig

# Where open_clip's `openai` tag for ViT-B-32 points on the Hugging Face hub (open_clip's pretrained config).
OPENAI_REPO = "timm/vit_base_patch32_clip_224.openai"
SNAPSHOT = "0" * 40

PROBE = """
import json, sys, warnings
warnings.simplefilter("error", UserWarning)
from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig
out = {}
for name in ("ViT-B-32", "ViT-B-32-quickgelu"):
    backbone = Backbone(BackboneConfig(name, "openai"))
    model = backbone.model
    out[name] = {
        "model_id": backbone.config.model_id,
        "visual_act": type(model.visual.transformer.resblocks[0].mlp.gelu).__name__,
        "text_act": type(model.transformer.resblocks[0].mlp.gelu).__name__,
        "projection_sum": float(model.text_projection.detach().sum()),
    }
print(json.dumps(out))
"""


def seed_openai_download(cache: Path) -> float:
    """Random ViT-B-32 weights stored where huggingface_hub caches the OpenAI download; returns a checksum."""
    import open_clip

    torch.manual_seed(3)
    model = open_clip.create_model("ViT-B-32-quickgelu")
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    repo = cache / f"models--{OPENAI_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "open_clip_model.safetensors"))
    return float(state["text_projection"].float().sum())


def test_openai_tag_builds_quickgelu_whatever_name_was_typed(tmp_path):
    checksum = seed_openai_download(tmp_path / "hub")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("ViT-B-32", "ViT-B-32-quickgelu"):
        assert built[name]["visual_act"] == built[name]["text_act"] == "QuickGELU", built
        assert built[name]["model_id"] == "ViT-B-32-quickgelu@openai"
        assert built[name]["projection_sum"] == pytest.approx(checksum, rel=1e-3)
    assert "QuickGELU mismatch" not in done.stderr


def test_activation_follows_the_weights_and_is_part_of_the_model_id(tmp_path):
    assert BackboneConfig("ViT-B-32", "openai").quick_gelu
    assert BackboneConfig("ViT-B-32", "laion2b_s34b_b79k").model_id == "ViT-B-32@laion2b_s34b_b79k"
    assert "QuickGELU" in BackboneConfig("ViT-B-32", "openai").describe()
    weights = tmp_path / "clip.safetensors"  # a file that says nothing of its activation: the name decides
    save_file({"visual.conv1.weight": torch.zeros(2, 3, 1, 1)}, str(weights))
    assert not BackboneConfig("ViT-B-32", str(weights)).quick_gelu
    assert BackboneConfig("ViT-B-32-quickgelu", str(weights)).model_id.startswith("ViT-B-32-quickgelu@file-")
    assert BackboneConfig("ViT-B-32-quickgelu").model_id == "ViT-B-32-quickgelu@random-seed0"


def test_quickgelu_name_with_gelu_weights_is_refused_with_the_fix():
    config = BackboneConfig("ViT-B-32-quickgelu", "laion2b_s34b_b79k")
    with pytest.raises(ValueError, match="use --model ViT-B-32 --pretrained laion2b_s34b_b79k"):
        _ = config.model_id
