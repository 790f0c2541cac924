"""Trainer: full-mode fine-tuning, learning, bit-identical resume, distributed gather and DDP, the authors recipe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from tiny_glscl import PAIRS, WORDS, make_trainer, synthetic_pairs, tiny_config
from torch.nn.parallel import DistributedDataParallel

from glscl.checkpoint import STATE_JSON, STATE_TENSORS
from glscl.config import TrainConfig
from glscl.data import PairData
from glscl.distributed import all_gather_with_grad
from glscl.model import GLSCL
from glscl.optim import BertAdam
from glscl.training import Trainer, TrainModule

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_mode_fine_tunes_the_backbone_at_clip_lr() -> None:
    from glscl.backbone import Backbone
    from glscl.backbone_config import BackboneConfig

    backbone = Backbone(BackboneConfig())
    config = tiny_config(embed_dim=backbone.embed_dim, max_frames=2, clip_lr=1e-3)
    torch.manual_seed(0)
    module = TrainModule(GLSCL(config), backbone)
    trainer = Trainer(module, config, TrainConfig(epochs=1, batch_size=3, mode="full"))
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"head_decay", "head_no_decay", "backbone_decay", "backbone_no_decay"}
    assert groups["backbone_decay"]["lr"] == groups["backbone_no_decay"]["lr"] == 1e-3
    assert groups["head_decay"]["lr"] == config.lr
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen == {"clip.logit_scale", "clip.visual.conv1.weight"}

    g = torch.Generator().manual_seed(0)
    size = backbone.image_size
    frames = torch.randint(0, 256, (3, 2, size, size, 3), generator=g, dtype=torch.uint8)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    ids = backbone.tokenize(["a red square", "a blue circle moves left", "green"], WORDS)
    data = PairData(frames, mask, ids, torch.arange(3))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer.fit(data)
    changed = {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}
    assert "clip.visual.transformer.resblocks.0.mlp.c_fc.weight" in changed
    assert "clip.token_embedding.weight" in changed
    assert not changed & frozen
    metrics = trainer.evaluate(data, block_size=2, batch_size=2)
    assert set(metrics) == {"t2v", "v2t"}


def test_training_lowers_the_loss_and_raises_train_recall() -> None:
    data = synthetic_pairs(texts_per_video=2)
    trainer = make_trainer(tiny_config(lr=1e-2), epochs=15, log_every=1)
    before = trainer.evaluate(data)["t2v"]["R@1"]
    logs: list[dict] = []
    epochs = trainer.fit(data, on_log=logs.append)
    losses = [r["total"] for r in logs if r["event"] == "step"]
    assert len(losses) == 45
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    after = trainer.evaluate(data)["t2v"]["R@1"]
    assert before < 20 and after > 60, (before, after)
    assert len(epochs) == 15 and all(e["pairs"] == 48 and e["pairs_per_s"] > 0 for e in epochs)
    assert [r["epoch"] for r in logs if r["event"] == "epoch"] == list(range(15))


def test_a_run_stopped_between_checkpoints_leaves_one_where_it_stopped() -> None:
    data, val = synthetic_pairs(), synthetic_pairs(16, seed=1)
    checkpoints: list[dict] = []
    make_trainer().fit(data, val, on_checkpoint=checkpoints.append, max_steps=2)  # epochs end at steps 3, 6, 9
    assert [(c["step"], c["epoch"]) for c in checkpoints] == [(2, 0)] and checkpoints[0]["metrics"] is not None


def test_resume_reaches_bit_identical_parameters(tmp_path: Path) -> None:
    data, val = synthetic_pairs(), synthetic_pairs(16, seed=1)
    unbroken = make_trainer(eval_every=2)
    assert unbroken.head.config.dropout > 0  # dropout masks must be replayed too
    evals: list[dict] = []
    unbroken.fit(data, val, on_eval=evals.append)
    assert [e["step"] for e in evals] == [2, 3, 4, 6, 8, 9]

    first = make_trainer(eval_every=2)
    checkpoints: list[dict] = []
    first.fit(data, val, on_checkpoint=checkpoints.append, max_steps=4)
    assert first.step == 4 and [c["step"] for c in checkpoints] == [2, 3, 4]
    first.save_training_state(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_JSON, STATE_TENSORS])

    resumed = make_trainer(init_seed=123, eval_every=2)
    resumed.load_training_state(tmp_path)
    assert resumed.step == 4
    resumed.fit(data, val)
    params = dict(resumed.raw.named_parameters())
    for name, param in unbroken.raw.named_parameters():
        assert torch.equal(param, params[name]), name
    for index, state in unbroken.optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed.optimizer.state_dict()["state"][index][key]), (index, key)


def _distributed_worker(rank: int, world_size: int, out_dir: str) -> None:
    """One rank: check the gather, then train a DDP-wrapped module for 3 steps; results go to a safetensors file.
    The ranks meet through a file (no port to choose, so none another process can take first)."""
    torch.set_num_threads(1)
    rendezvous = f"file://{Path(out_dir) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        local = (torch.arange(6.0).view(3, 2) + 10 * rank).requires_grad_()
        gathered = all_gather_with_grad(local)
        (gathered * torch.arange(gathered.numel()).view_as(gathered)).sum().backward()
        mask = all_gather_with_grad(torch.tensor([rank == 0, True]))
        results = {"gathered": gathered.detach(), "grad": local.grad, "mask": mask}
        config = tiny_config(dropout=0.0)
        torch.manual_seed(0)
        module = TrainModule(GLSCL(config))
        trainer = Trainer(
            DistributedDataParallel(module),
            config,
            TrainConfig(epochs=3, batch_size=16),
            rank=rank,
            world_size=world_size,
            gather=all_gather_with_grad,
        )
        trainer.fit(synthetic_pairs(), max_steps=3)
        results |= {f"param/{name}": p.detach() for name, p in module.named_parameters()}
        results |= {f"grad/{name}": p.grad for name, p in module.named_parameters()}
        save_file(results, str(Path(out_dir) / f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_all_gather_with_grad_and_ddp_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_distributed_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    full = torch.cat([torch.arange(6.0).view(3, 2), torch.arange(6.0).view(3, 2) + 10])
    weights = torch.arange(12.0).view(6, 2)
    for rank, result in enumerate(ranks):
        assert torch.equal(result["gathered"], full)
        assert torch.equal(result["grad"], weights[3 * rank : 3 * rank + 3])
        assert torch.equal(result["mask"], torch.tensor([True, True, False, True]))

    single = make_trainer(tiny_config(dropout=0.0))
    single.fit(synthetic_pairs(), max_steps=3)
    for name, param in single.raw.named_parameters():
        assert torch.equal(ranks[0][f"param/{name}"], ranks[1][f"param/{name}"]), name
        torch.testing.assert_close(ranks[0][f"grad/{name}"], param.grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(ranks[0][f"param/{name}"], param.detach(), rtol=1e-4, atol=1e-6, msg=name)


def test_authors_recipe_trains_with_bert_adam_from_a_zero_first_lr() -> None:
    from glscl.recipes import apply_recipe

    config, train = apply_recipe("authors", tiny_config(), TrainConfig(epochs=2, batch_size=16, log_every=1))
    assert (config.icl_form, config.idl_both_modalities, config.local_padding_mask) == ("authors", False, False)
    torch.manual_seed(0)
    trainer = Trainer(TrainModule(GLSCL(config)), config, train)
    assert isinstance(trainer.optimizer, BertAdam)
    records: list[dict] = []
    trainer.fit(synthetic_pairs(texts_per_video=2), on_log=records.append)
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 2 * (PAIRS * 2 // 16) and steps[0]["lr"] == 0.0 and steps[1]["lr"] > 0
    assert all(math.isfinite(r["total"]) for r in steps)
    with pytest.raises(ValueError, match="unknown recipe"):
        apply_recipe("nope", config, train)


def test_fp16_stored_clip_weights_round_away_updates_far_below_their_precision() -> None:
    """The authors' run keeps CLIP's matrices in fp16 with no fp32 master copy: steps at CLIP's lr of 1e-7 move
    almost none of them, where fp32 storage moves them all."""
    from glscl.backbone import Backbone
    from glscl.backbone_config import BackboneConfig
    from glscl.training import half_stored_parameters

    moved = {}
    for storage in ("fp32", "fp16"):
        backbone = Backbone(BackboneConfig())
        config = tiny_config(embed_dim=backbone.embed_dim, max_frames=2, clip_lr=1e-7)
        torch.manual_seed(0)
        trainer = Trainer(
            TrainModule(GLSCL(config), backbone),
            config,
            TrainConfig(epochs=3, batch_size=3, mode="full", clip_weights=storage),
        )
        matrices = [p for p in half_stored_parameters(backbone.model) if p.ndim == 2]
        assert "ln_final.weight" not in {n for n, p in backbone.model.named_parameters() if p in set(matrices)}
        if storage == "fp16":
            assert all(torch.equal(p, p.half().float()) for p in matrices), "not stored in fp16 from the start"
        before = [p.detach().clone() for p in matrices]
        g = torch.Generator().manual_seed(0)
        size = backbone.image_size
        frames = torch.randint(0, 256, (3, 2, size, size, 3), generator=g, dtype=torch.uint8)
        ids = backbone.tokenize(["a red square", "a blue circle moves left", "green"], WORDS)
        trainer.fit(PairData(frames, torch.ones(3, 2, dtype=torch.bool), ids, torch.arange(3)))
        changed = [float((p.detach() != old).float().mean()) for p, old in zip(matrices, before, strict=True)]
        moved[storage] = sum(changed) / len(changed)
    assert moved["fp32"] > 0.5 and moved["fp16"] < 0.1, moved
