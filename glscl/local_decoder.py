"""The shared local decoder (K learned queries against a memory) for CPU inference with its products in oneDNN
(glscl.onednn): the query's GLSCL text side reads 12.6 M decoder weights for 8 query rows and a dozen memory rows.
Layer norms and the activation are PyTorch's own modules; the result equals `nn.TransformerDecoder`'s within float
rounding (tests/test_text_trim.py)."""

from __future__ import annotations

import weakref

import torch.nn.functional as F
from torch import Tensor, nn

from glscl import onednn

_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # decoder -> its OneDnnDecoder


def _plain(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.TransformerDecoderLayer)
        and not layer.norm_first
        and all(
            attn.batch_first and attn.in_proj_weight is not None and attn.in_proj_bias is not None
            for attn in (layer.self_attn, layer.multihead_attn)
        )
        and onednn.available(layer.linear1.weight)
    )


class OneDnnDecoder:
    """A post-norm `nn.TransformerDecoder` without final norm, computed with oneDNN products in eval mode.

    `of(decoder)` keeps one per decoder beside it rather than on the module, so the module still copies and
    pickles as plain PyTorch (oneDNN tensors do neither)."""

    @classmethod
    def of(cls, decoder: nn.TransformerDecoder) -> OneDnnDecoder:
        """The oneDNN form of `decoder`, built on first use."""
        built = _BUILT.get(decoder)
        if built is None:
            built = _BUILT[decoder] = cls(decoder)
        return built

    def __init__(self, decoder: nn.TransformerDecoder) -> None:
        self.layers = list(decoder.layers)
        pairs = []
        for layer in self.layers:
            width = layer.linear1.in_features
            cross = layer.multihead_attn
            pairs += [
                (layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias),
                (layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias),
                (cross.in_proj_weight[:width], cross.in_proj_bias[:width]),
                (cross.in_proj_weight[width:], cross.in_proj_bias[width:]),
                (cross.out_proj.weight, cross.out_proj.bias),
                (layer.linear1.weight, layer.linear1.bias),
                (layer.linear2.weight, layer.linear2.bias),
            ]
        self.weights = onednn.ConvertedWeights(pairs)

    @staticmethod
    def supports(decoder: nn.TransformerDecoder) -> bool:
        """Whether every layer is a batch-first post-norm fp32 CPU layer and there is no final norm."""
        return decoder.norm is None and all(_plain(layer) for layer in decoder.layers)

    def __call__(self, queries: Tensor, memory: Tensor, padding: Tensor | None) -> Tensor:
        """queries [B, K, D] decoded against memory [B, M, D]; padding [B, M] True = ignore (None: none)."""
        width = queries.shape[-1]
        keep = None if padding is None else ~padding[:, None, None, :]
        weights = self.weights.current()
        x = queries
        for index, layer in enumerate(self.layers):
            self_qkv, self_out, cross_q, cross_kv, cross_out, fc1, fc2 = weights[7 * index : 7 * index + 7]
            heads = layer.self_attn.num_heads
            x = layer.norm1(x + onednn.self_attention(x, self_qkv, self_out, heads))
            q = onednn.split_heads(onednn.linear(x, cross_q), heads)
            k, v = (onednn.split_heads(part, heads) for part in onednn.linear(memory, cross_kv).split(width, -1))
            attended = onednn.merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
            x = layer.norm2(x + onednn.linear(attended, cross_out))
            x = layer.norm3(x + onednn.linear(layer.activation(onednn.linear(x, fc1)), fc2))
        return x
