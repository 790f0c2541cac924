"""CLIP's text transformer for CPU inference with its matrix products in oneDNN.

A query runs the text tower over a dozen or so token rows, so each product reads a whole weight matrix (38 M
floats for ViT-B-32) for little arithmetic. PyTorch's fp32 `F.linear` goes through MKL there; oneDNN's
inner-product primitive, with the weights converted to its layout once, does the same fp32 product about 1.4-1.5x
faster on this project's CPU (benchmarks/RESULTS.md). Everything else is open_clip's own modules (layer norms,
activation, layer scale, causal mask); the features equal open_clip's within float rounding
(tests/test_text_trim.py). Only open_clip's plain `ResidualAttentionBlock` is taken; other blocks keep
open_clip's forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PLAIN_MLP = ("c_fc", "gelu", "c_proj")


def _weights(linear: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    weight, bias = linear
    return weight.detach().to_mkldnn(), bias.detach().to_mkldnn()


def _linear(x: Tensor, weight_bias: tuple[Tensor, Tensor]) -> Tensor:
    """x [..., in] times a converted weight [out, in], plus bias, through oneDNN."""
    rows = x.reshape(-1, x.shape[-1]).to_mkldnn()
    out = torch._C._nn.mkldnn_linear(rows, *weight_bias).to_dense()
    return out.reshape(*x.shape[:-1], out.shape[-1])


class OneDnnTextTower:
    """The residual blocks of an open_clip text transformer with their four products per block in oneDNN.

    Built from the model's current weights; `current()` says whether they are still the model's (a fine-tune
    changes them in place), so a caller rebuilds before using stale copies."""

    def __init__(self, model: nn.Module) -> None:
        self.blocks = list(model.transformer.resblocks)
        self.parameters = [p for block in self.blocks for p in block.parameters()]
        self.versions = [p._version for p in self.parameters]
        self.products = [
            [
                _weights((block.attn.in_proj_weight, block.attn.in_proj_bias)),
                _weights((block.attn.out_proj.weight, block.attn.out_proj.bias)),
                _weights((block.mlp.c_fc.weight, block.mlp.c_fc.bias)),
                _weights((block.mlp.c_proj.weight, block.mlp.c_proj.bias)),
            ]
            for block in self.blocks
        ]

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether `model`'s text transformer is made of plain fp32 CPU blocks this class computes alike."""
        if not torch.backends.mkldnn.is_available() or not getattr(model.transformer, "batch_first", False):
            return False
        for block in model.transformer.resblocks:
            attn = getattr(block, "attn", None)
            if (
                type(block).__name__ != "ResidualAttentionBlock"
                or hasattr(block, "ln_1_kv")
                or not isinstance(attn, nn.MultiheadAttention)
                or attn.in_proj_weight is None
                or attn.in_proj_bias is None
                or tuple(dict(block.mlp.named_children())) != _PLAIN_MLP
                or attn.in_proj_weight.dtype != torch.float32
                or attn.in_proj_weight.device.type != "cpu"
            ):
                return False
        return True

    def current(self) -> bool:
        """Whether no weight changed in place since the conversion."""
        return all(p._version == version for p, version in zip(self.parameters, self.versions, strict=True))

    def __call__(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """The blocks over embedded tokens x [N, L, D] with an additive attention mask [L, L]."""
        count, length, width = x.shape
        mask = attn_mask.to(x.dtype)
        for block, (qkv, out, fc, proj) in zip(self.blocks, self.products, strict=True):
            heads = block.attn.num_heads
            q, k, v = (
                part.reshape(count, length, heads, width // heads).transpose(1, 2)
                for part in _linear(block.ln_1(x), qkv).split(width, dim=-1)
            )
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.ls_1(_linear(attended.transpose(1, 2).reshape(count, length, width), out))
            x = x + block.ls_2(_linear(block.mlp.gelu(_linear(block.ln_2(x), fc)), proj))
        return x
