"""Optimiser pieces: the project's and the authors' warm-up cosine schedules, parameter groups, and BertAdam's step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny_glscl import make_trainer, synthetic_pairs, tiny_config

from glscl.model import GLSCL
from glscl.optim import BertAdam, WarmupCosine, param_groups
from glscl.training import TrainModule

pytestmark = pytest.mark.usefixtures("one_thread")


def test_warmup_cosine_over_the_real_number_of_steps() -> None:
    schedule = WarmupCosine.over(total_steps=100, warmup_fraction=0.1)
    assert schedule.warmup_steps == 10
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == schedule(10) == pytest.approx(1.0)
    assert schedule(55) == pytest.approx(0.5)
    assert schedule(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert schedule(100) == pytest.approx(0.0, abs=1e-12)
    factors = [schedule(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(factors))

    trainer = make_trainer(tiny_config(lr=2e-3), epochs=10, log_every=1)  # 48 videos / 16 = 3 steps per epoch, 30 steps
    lrs: list[float] = []
    trainer.fit(synthetic_pairs(), on_log=lambda r: lrs.append(r["lr"]) if r["event"] == "step" else None)
    assert trainer.schedule == WarmupCosine(30, 3)
    assert len(lrs) == 30
    assert lrs[2] == pytest.approx(2e-3)  # warmup ends at the third update
    assert lrs[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 26 / 27)))
    assert trainer.optimizer.param_groups[0]["lr"] == lrs[-1]


def test_param_groups_head_mode() -> None:
    config = tiny_config()
    module = TrainModule(GLSCL(config))
    groups = param_groups(module, config)
    names = {id(p): n for n, p in module.named_parameters()}
    by_group = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert set(by_group) == {"head_decay", "head_no_decay"}
    assert all(g["lr"] == config.lr for g in groups)
    decay, no_decay = by_group["head_decay"], by_group["head_no_decay"]
    assert {"head.local_interaction.queries", "head.temporal.frame_position", "head.logit_scale"} <= no_decay
    assert {n for n in names.values() if n.endswith("bias") or ".norm" in n} <= no_decay
    assert "head.temporal.encoder.layers.0.linear1.weight" in decay
    assert "head.local_interaction.decoder.layers.0.multihead_attn.in_proj_weight" in decay
    assert len(decay) + len(no_decay) == len(names)
    wd = {g["name"]: g["weight_decay"] for g in groups}
    assert wd == {"head_decay": config.weight_decay, "head_no_decay": 0.0}


def test_authors_schedule_runs_over_five_epochs_and_climbs_back() -> None:
    schedule = WarmupCosine.over(total_steps=200, warmup_fraction=0.1, form="authors", steps_per_epoch=20)
    assert (schedule.cosine_steps, schedule.warmup_steps) == (100, 10.0)
    assert schedule(0) == 0.0 and schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert schedule(100) == pytest.approx(0.0, abs=1e-12)
    assert schedule(150) == pytest.approx(0.5) and schedule(199) > schedule(150)


def test_authors_param_groups_decay_all_but_biases_and_move_the_logit_scale_to_clip_lr() -> None:
    config = tiny_config()
    module = TrainModule(GLSCL(config))
    groups = param_groups(module, config, decay="authors", logit_scale_lr="clip")
    names = {id(p): n for n, p in module.named_parameters()}
    by_group = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert by_group["backbone_decay"] == {"head.logit_scale"}
    assert {g["name"]: g["lr"] for g in groups}["backbone_decay"] == config.clip_lr
    assert by_group["head_no_decay"] == {n for n in names.values() if "bias" in n}
    assert {"head.local_interaction.queries", "head.temporal.frame_position"} <= by_group["head_decay"]
    assert "head.temporal.encoder.layers.0.norm1.weight" in by_group["head_decay"]


def test_bert_adam_step_matches_its_formula() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    param.grad = torch.tensor([0.5, -1.0], dtype=torch.float64)
    lr, wd, eps = 0.1, 0.2, 1e-6
    BertAdam([param], lr=lr, betas=(0.9, 0.98), eps=eps, weight_decay=wd, max_grad_norm=1.0).step()
    clipped = torch.tensor([0.5, -1.0], dtype=torch.float64) / math.sqrt(1.25)
    update = 0.1 * clipped / ((0.02 * clipped**2).sqrt() + eps) + wd * torch.tensor([1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), torch.tensor([1.0, 2.0], dtype=torch.float64) - lr * update)
