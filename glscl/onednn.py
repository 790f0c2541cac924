"""Matrix products of inference on few rows through oneDNN, with the weights converted to its layout once.

A query's text tower and GLSCL text side multiply a dozen or so rows by every weight matrix, so each product
reads a whole matrix for little arithmetic. PyTorch's fp32 `F.linear` goes through MKL there; oneDNN's inner
product does the same fp32 product about 1.4-1.5x faster on this project's CPU (benchmarks/RESULTS.md). The
converted copies are rebuilt when a weight changes in place (an optimizer step of a fine-tune), so they never
serve stale weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

WeightBias = tuple[Tensor, Tensor]
_switch = {"on": True}


@contextmanager
def disabled() -> Iterator[None]:
    """Run PyTorch's own modules instead within the block (process-wide), e.g. to time one against the other."""
    before = _switch["on"]
    _switch["on"] = False
    try:
        yield
    finally:
        _switch["on"] = before


def available(weight: Tensor) -> bool:
    """Whether products with `weight` go through oneDNN: fp32 on a CPU with oneDNN built in, not `disabled()`."""
    return (
        _switch["on"]
        and torch.backends.mkldnn.is_available()
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
    )


def linear(x: Tensor, weight_bias: WeightBias) -> Tensor:
    """x [..., in] times a converted weight [out, in], plus bias."""
    rows = x.reshape(-1, x.shape[-1]).to_mkldnn()
    out = torch._C._nn.mkldnn_linear(rows, *weight_bias).to_dense()
    return out.reshape(*x.shape[:-1], out.shape[-1])


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[N, L, D] -> [N, heads, L, D / heads]."""
    count, length, width = x.shape
    return x.reshape(count, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[N, heads, L, d] -> [N, L, heads * d]."""
    count, heads, length, width = x.shape
    return x.transpose(1, 2).reshape(count, length, heads * width)


def self_attention(x: Tensor, qkv: WeightBias, out: WeightBias, heads: int, mask: Tensor | None = None) -> Tensor:
    """Multi-head self-attention of x [N, L, D] with packed query/key/value and output projections (converted),
    as `nn.MultiheadAttention` computes it; `mask` is additive [L, L] or boolean (True = attend)."""
    q, k, v = (split_heads(part, heads) for part in linear(x, qkv).split(x.shape[-1], -1))
    return linear(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), out)


def _version(tensor: Tensor) -> int | None:
    """In-place modification count (None for an inference-mode tensor, which keeps none)."""
    return None if tensor.is_inference() else tensor._version


class ConvertedWeights:
    """oneDNN copies of (weight, bias) pairs, converted again when any of them changed in place (weights made
    in inference mode keep no count: they are taken as they are)."""

    def __init__(self, pairs: list[WeightBias]) -> None:
        self.pairs = pairs
        self._convert()

    def _convert(self) -> None:
        self.versions = self._versions()
        self.converted = [(weight.detach().to_mkldnn(), bias.detach().to_mkldnn()) for weight, bias in self.pairs]

    def _versions(self) -> list[tuple[int | None, int | None]]:
        return [(_version(weight), _version(bias)) for weight, bias in self.pairs]

    def current(self) -> list[WeightBias]:
        """The converted pairs, in the order given, of the weights as they are now."""
        if self._versions() != self.versions:
            self._convert()
        return self.converted
