"""CLIP's text transformer for CPU inference with its four products per block in oneDNN (glscl.onednn).

Everything else is open_clip's own modules (layer norms, activation, layer scale, causal mask), so the features
equal open_clip's within float rounding (tests/test_text_trim.py). Only open_clip's plain
`ResidualAttentionBlock` is taken; a model with other blocks keeps open_clip's forward."""

from __future__ import annotations

from torch import Tensor, nn

from glscl import onednn

_PLAIN_MLP = ("c_fc", "gelu", "c_proj")


def _plain(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return (
        type(block).__name__ == "ResidualAttentionBlock"
        and not hasattr(block, "ln_1_kv")
        and isinstance(attn, nn.MultiheadAttention)
        and attn.in_proj_weight is not None
        and attn.in_proj_bias is not None
        and tuple(dict(block.mlp.named_children())) == _PLAIN_MLP
        and onednn.available(attn.in_proj_weight)
    )


class OneDnnTextTower:
    """The residual blocks of an open_clip text transformer, computed with oneDNN products."""

    def __init__(self, model: nn.Module) -> None:
        self.blocks = list(model.transformer.resblocks)
        self.weights = onednn.ConvertedWeights(
            [
                pair
                for block in self.blocks
                for pair in (
                    (block.attn.in_proj_weight, block.attn.in_proj_bias),
                    (block.attn.out_proj.weight, block.attn.out_proj.bias),
                    (block.mlp.c_fc.weight, block.mlp.c_fc.bias),
                    (block.mlp.c_proj.weight, block.mlp.c_proj.bias),
                )
            ]
        )

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether `model`'s text transformer is batch-first and made of plain fp32 CPU blocks."""
        transformer = model.transformer
        return getattr(transformer, "batch_first", False) and all(_plain(block) for block in transformer.resblocks)

    def __call__(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """The blocks over embedded tokens x [N, L, D] with an additive attention mask [L, L]."""
        mask = attn_mask.to(x.dtype)
        weights = self.weights.current()
        for index, block in enumerate(self.blocks):
            qkv, out, fc, proj = weights[4 * index : 4 * index + 4]
            x = x + block.ls_1(onednn.self_attention(block.ln_1(x), qkv, out, block.attn.num_heads, mask))
            x = x + block.ls_2(onednn.linear(block.mlp.gelu(onednn.linear(block.ln_2(x), fc)), proj))
        return x
