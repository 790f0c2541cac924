"""Optimiser pieces of a training run: parameter groups, the learning-rate schedule, and the authors' BertAdam.

Two recipes differ here (see `glscl.recipes`): the project's (AdamW, a cosine over the steps after warm-up, no decay
on norms, positions and queries, the logit scale at the head's lr) and the authors' (BertAdam, their warm-up
cosine over five epochs of steps, decay on everything but biases, the logit scale at CLIP's lr).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from glscl.config import DECAY_RULES, LOGIT_SCALE_LRS, OPTIMIZERS, SCHEDULES, GLSCLConfig

# The authors' cosine runs over five epochs of steps whatever the epoch count (their main_retrieval.py).
AUTHORS_SCHEDULE_EPOCHS = 5
# Parameters named like this are never weight-decayed under the project's rule (besides every parameter with fewer
# than 2 dimensions: biases, norm weights, the logit scale): positional embeddings and the learnable queries.
NO_DECAY_NAMES = frozenset({"frame_position", "queries", "positional_embedding", "class_embedding"})


@dataclass(frozen=True)
class WarmupCosine:
    """Learning-rate factor of update `step` (0-based).

    Form "project": linear warm-up to 1 over `warmup_steps` (the first update already at 1/warmup), then a cosine
    from 1 down to 0 over the remaining steps of `total_steps`. Form "authors" (their BertAdam `warmup_cosine`):
    with x = step / cosine_steps, x / warmup_fraction while x < warmup_fraction (the first update at 0), then
    0.5 (1 + cos(pi x)); `cosine_steps` is five epochs of steps, so a longer run climbs back up after epoch five.
    """

    total_steps: int
    warmup_steps: float
    form: str = "project"
    cosine_steps: int | None = None

    @classmethod
    def over(
        cls, total_steps: int, warmup_fraction: float, form: str = "project", steps_per_epoch: int | None = None
    ) -> WarmupCosine:
        """The schedule of a run of `total_steps` updates (`steps_per_epoch` sizes the authors' cosine)."""
        if form not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {form!r}")
        if form == "authors":
            cosine = AUTHORS_SCHEDULE_EPOCHS * (steps_per_epoch or total_steps)
            return cls(total_steps, warmup_fraction * cosine, form, cosine)
        warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
        return cls(total_steps, min(warmup, total_steps))

    def __call__(self, step: int) -> float:
        """The factor applied to each group's base lr for update `step`."""
        if self.form == "authors":
            if step < self.warmup_steps:
                return step / self.warmup_steps
            return 0.5 * (1.0 + math.cos(math.pi * step / self.cosine_steps))
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _is_no_decay(name: str, param: Tensor, rule: str) -> bool:
    """Project: biases, norm weights, scalars, positional embeddings and queries. Authors: names with 'bias'."""
    if rule == "authors":
        return "bias" in name
    return param.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES


def param_groups(
    module: nn.Module, config: GLSCLConfig, decay: str = "project", logit_scale_lr: str = "head"
) -> list[dict[str, Any]]:
    """Optimiser groups: head (lr) and backbone (clip_lr), each split into decayed and not; empty ones dropped.

    Backbone parameters are those under `clip.`; with `logit_scale_lr="clip"` the head's logit scale joins them (as
    CLIP's own scale does in the authors' code, which keeps it near its start). Frozen parameters are left out.
    """
    if decay not in DECAY_RULES or logit_scale_lr not in LOGIT_SCALE_LRS:
        raise ValueError(f"decay must be one of {DECAY_RULES} and logit_scale_lr one of {LOGIT_SCALE_LRS}")
    groups: dict[tuple[str, bool], list[Tensor]] = {
        (part, decayed): [] for part in ("head", "backbone") for decayed in (True, False)
    }
    for name, param in module.named_parameters():
        if param.requires_grad:
            at_clip_lr = name.startswith("clip.") or (logit_scale_lr == "clip" and name == "head.logit_scale")
            groups["backbone" if at_clip_lr else "head", not _is_no_decay(name, param, decay)].append(param)
    lrs = {"head": config.lr, "backbone": config.clip_lr}
    return [
        {
            "name": f"{part}_{'decay' if decayed else 'no_decay'}",
            "params": params,
            "lr": lrs[part],
            "base_lr": lrs[part],
            "weight_decay": config.weight_decay if decayed else 0.0,
        }
        for (part, decayed), params in groups.items()
        if params
    ]


class BertAdam(torch.optim.Optimizer):
    """The authors' optimiser (BERT's Adam): Adam moments without bias correction, weight decay added to the
    update before the learning rate, and each parameter's gradient clipped to `max_grad_norm` first.

    update = m / (sqrt(v) + eps) + weight_decay * p;  p -= lr * update.
    The learning rate comes from each group's `lr` (the trainer applies the schedule to it).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        if lr < 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid BertAdam settings: lr={lr}, betas={betas}, eps={eps}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(param, group["max_grad_norm"])
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update.add_(param, alpha=group["weight_decay"])
                param.add_(update, alpha=-group["lr"])
        return loss


def make_optimizer(
    module: nn.Module, config: GLSCLConfig, kind: str, betas: tuple[float, float], eps: float, **groups: str
) -> torch.optim.Optimizer:
    """AdamW (project) or BertAdam (authors) over `param_groups(module, config, **groups)`."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    parameter_groups = param_groups(module, config, **groups)
    if kind == "bertadam":
        return BertAdam(parameter_groups, betas=betas, eps=eps, max_grad_norm=config.grad_clip)
    return torch.optim.AdamW(parameter_groups, betas=betas, eps=eps)
