"""Data-parallel training pieces in plain torch.distributed: an all-gather that keeps this rank's slice in the
autograd graph, and the gradient scaling that undoes DDP's averaging for gathered encodings."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def all_gather_with_grad(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's `tensor` along dim 0; only this rank's slice stays in the autograd graph.

    Every rank must pass the same shape. Other ranks' slices are constants here; their gradients are computed on
    their own ranks.
    """
    world_size = dist.get_world_size(group)
    send = tensor.detach().contiguous()
    if send.dtype == torch.bool:
        send = send.to(torch.uint8)
    parts = [torch.empty_like(send) for _ in range(world_size)]
    dist.all_gather(parts, send, group=group)
    parts = [part.to(tensor.dtype) for part in parts]
    parts[dist.get_rank(group)] = tensor
    return torch.cat(parts)


class ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient multiplied by `factor` backward."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None
