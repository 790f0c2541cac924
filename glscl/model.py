"""The GLSCL head: temporal transformer, parameter-free global interaction, shared local interaction.

Every per-item computation (temporal encoding, query decoding) runs once per video or text; only the
cheap scorers in `glscl.similarity` are pairwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glscl.config import DEFAULT_BLOCK, GLSCLConfig
from glscl.local_decoder import OneDnnDecoder
from glscl.similarity import global_pair_scores, global_scores, local_pair_scores, local_scores


class VideoEncoding(NamedTuple):
    """Per-video GLSCL state: temporally-encoded frames [B, F, D] (padded frames zeroed), mask, local concepts."""

    frames: Tensor
    mask: Tensor
    local: Tensor


class TextEncoding(NamedTuple):
    """Per-text GLSCL state: sentence vector [B, D] and L2-normalised local concepts [B, K, D]."""

    sentence: Tensor
    local: Tensor


Encoded = TypeVar("Encoded", bound=tuple)


def encode_in_chunks(encode: Callable[[slice], Encoded], total: int, size: int) -> Encoded:
    """`encode` (items -> a NamedTuple of tensors, e.g. an encoding) over consecutive slices of at most `size` of
    range(total), concatenated field by field: a whole split encoded once, in bounded memory."""
    parts = [encode(slice(start, min(start + size, total))) for start in range(0, total, size)]
    return type(parts[0])(*(torch.cat(fields) for fields in zip(*parts, strict=True)))


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's GELU approximation, x * sigmoid(1.702 x), so CLIP text blocks can initialise the encoder."""
    return x * torch.sigmoid(1.702 * x)


def _key_padding(valid: Tensor) -> Tensor:
    """Key padding mask (True = ignore) from a valid mask; items with no valid position attend to all."""
    return ~valid & valid.any(-1, keepdim=True)


def real_length(valid: Tensor) -> int:
    """Positions [B, L] up to and including the batch's last valid one (all L when none is valid)."""
    used = valid.any(dim=0).nonzero()
    return int(used[-1]) + 1 if len(used) else valid.shape[1]


class TemporalTransformer(nn.Module):
    """CLIP4Clip-style sequence transformer over frame features: pre-LN encoder, output = enc(x + pos) + x."""

    def __init__(self, config: GLSCLConfig) -> None:
        super().__init__()
        activation = quick_gelu if config.temporal_activation == "quick_gelu" else "gelu"
        layer = nn.TransformerEncoderLayer(
            d_model=config.embed_dim,
            nhead=config.temporal_heads,
            dim_feedforward=config.temporal_ffn,
            dropout=config.temporal_dropout,
            activation=activation,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)
        self.frame_position = nn.Parameter(torch.empty(config.frame_position_size, config.embed_dim))
        nn.init.normal_(self.frame_position, std=0.01)

    def forward(self, frames: Tensor, valid: Tensor) -> Tensor:
        """frames [B, F, D], valid [B, F] bool -> [B, F, D]; padded frames are masked as attention keys."""
        num_frames = frames.shape[1]
        if num_frames > self.frame_position.shape[0]:
            raise ValueError(f"{num_frames} frames exceed the {self.frame_position.shape[0]} position slots")
        hidden = self.encoder(frames + self.frame_position[:num_frames], src_key_padding_mask=_key_padding(valid))
        return hidden + frames


# CLIP text-block parameter -> temporal encoder-layer parameter (open_clip ResidualAttentionBlock naming).
_CLIP_BLOCK_TO_LAYER = {
    "ln_1": "norm1",
    "attn.in_proj_weight": "self_attn.in_proj_weight",
    "attn.in_proj_bias": "self_attn.in_proj_bias",
    "attn.out_proj": "self_attn.out_proj",
    "ln_2": "norm2",
    "mlp.c_fc": "linear1",
    "mlp.c_proj": "linear2",
}


def init_temporal_from_clip(temporal: TemporalTransformer, clip: nn.Module, config: GLSCLConfig) -> list[str]:
    """Copy the first `temporal_layers` residual blocks of `clip`'s text transformer and its positional embedding
    into `temporal` (the paper's and the authors' initialisation); returns the copied parameter names.

    `clip` is an open_clip CLIP model. A head that does not fit the text tower (width, heads, FFN size, depth,
    position slots or activation) is refused with what to change.
    """
    blocks = clip.transformer.resblocks
    block = blocks[0]
    activation = "quick_gelu" if type(block.mlp.gelu).__name__ == "QuickGELU" else "gelu"
    tower = {
        "embed_dim": clip.transformer.width,
        "temporal_heads": block.attn.num_heads,
        "temporal_ffn": block.mlp.c_fc.out_features,
        "temporal_activation": activation,
    }
    misfits = [
        f"{name}={getattr(config, name)} (text tower: {value})"
        for name, value in tower.items()
        if getattr(config, name) != value
    ]
    if config.temporal_layers > len(blocks):
        misfits.append(f"temporal_layers={config.temporal_layers} (text tower: {len(blocks)} blocks)")
    if config.frame_position_size > clip.positional_embedding.shape[0]:
        misfits.append(
            f"frame_position_size={config.frame_position_size} (text tower: {clip.positional_embedding.shape[0]})"
        )
    if misfits:
        raise ValueError(
            "the temporal transformer cannot start from the CLIP text tower: "
            + ", ".join(misfits)
            + "; match these with --set, or use --set temporal_init=random"
        )
    copied = []
    with torch.no_grad():
        for index, layer in enumerate(temporal.encoder.layers):
            source = dict(blocks[index].named_parameters())
            target = dict(layer.named_parameters())
            for name, tensor in source.items():
                prefix = next((p for p in _CLIP_BLOCK_TO_LAYER if name == p or name.startswith(p + ".")), None)
                if prefix is None:
                    raise ValueError(f"CLIP text block parameter {name!r} has no place in the temporal transformer")
                destination = _CLIP_BLOCK_TO_LAYER[prefix] + name[len(prefix) :]
                target[destination].copy_(tensor)
                copied.append(f"encoder.layers.{index}.{destination}")
        temporal.frame_position.copy_(clip.positional_embedding[: config.frame_position_size])
        copied.append("frame_position")
    return copied


class SharedLocalInteraction(nn.Module):
    """K learnable queries decoded against a memory by ONE decoder shared by both modalities.

    Unlike the authors' code, the memory key padding mask is passed by default (project decision), so padded
    frames and tokens are ignored; `local_padding_mask=False` attends to them as the authors do. Outputs are
    L2-normalised [B, K, D].
    """

    def __init__(self, config: GLSCLConfig) -> None:
        super().__init__()
        self.padding_mask = config.local_padding_mask
        self.queries = nn.Parameter(torch.rand(config.num_queries, config.embed_dim))
        layer = nn.TransformerDecoderLayer(
            d_model=config.embed_dim,
            nhead=config.decoder_heads,
            dim_feedforward=config.decoder_ffn,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=False,
        )
        self.decoder = nn.TransformerDecoder(layer, config.decoder_layers)

    def forward(self, memory: Tensor, valid: Tensor) -> Tensor:
        """memory [B, M, D], valid [B, M] bool -> normalised concept vectors [B, K, D]. In eval mode without
        gradients on CPU the decoder's products run in oneDNN (glscl.local_decoder), same fp32 result."""
        queries = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        padding = _key_padding(valid) if self.padding_mask else None
        if not self.training and not torch.is_grad_enabled() and OneDnnDecoder.supports(self.decoder):
            out = OneDnnDecoder.of(self.decoder)(queries, memory, padding)
        else:
            out = self.decoder(queries, memory, memory_key_padding_mask=padding)
        return F.normalize(out, dim=-1)


class GlobalInteraction(nn.Module):
    """Parameter-free global interaction: text-conditioned softmax pooling of frames, then cosine."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        text: Tensor,
        frames: Tensor,
        mask: Tensor,
        block_size: int | tuple[int, int] = DEFAULT_BLOCK,
        gram: Tensor | None = None,
    ) -> Tensor:
        """[Nt, Nv] global scores; see `glscl.similarity.global_scores`."""
        return global_scores(text, frames, mask, self.temperature, block_size, gram)


class GLSCL(nn.Module):
    """GLSCL head over CLIP features: score = global + local_weight * local, with a clamped logit scale."""

    def __init__(self, config: GLSCLConfig) -> None:
        super().__init__()
        self.config = config
        self.temporal = TemporalTransformer(config)
        self.global_interaction = GlobalInteraction(config.global_temperature)
        self.local_interaction = SharedLocalInteraction(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        if self.encodes_padding:
            # The CLIP feature of a blank frame (an all-zero model input), which the authors' loaders put in padded
            # frame slots; training sets it from the backbone (`set_blank_frame`), and checkpoints keep it.
            self.register_buffer("blank_frame", torch.zeros(config.embed_dim))

    @torch.no_grad()
    def set_blank_frame(self, feature: Tensor) -> None:
        """Keep the backbone's feature of a blank frame for padded frame slots (encoded padding only)."""
        self.blank_frame.copy_(feature.reshape(-1))

    @property
    def encodes_padding(self) -> bool:
        """Whether the local decoder reads encoded padding (the authors' form) rather than zeros or nothing."""
        return self.config.padding_memory == "encoded"

    def _as_param_dtype(self, x: Tensor) -> Tensor:
        return x.to(self.logit_scale.dtype)

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor, blank: Tensor | None = None) -> VideoEncoding:
        """frame_feats [B, F, D] CLIP frame features, frame_mask [B, F] (1 = valid) -> VideoEncoding.

        Padded inputs are zeroed first, so whatever they hold (even NaN) cannot leak into an encoding. With
        encoded padding they hold the blank frame's feature instead (`blank`, else the stored one) and the local
        decoder reads the temporal transformer's outputs there, as the authors' code does; the returned frames
        (global interaction, re-rank) are zero at padded slots either way.
        """
        valid = frame_mask.bool()
        padding = ~valid.unsqueeze(-1)
        feats = self._as_param_dtype(frame_feats).masked_fill(padding, 0.0)
        if self.encodes_padding:
            feats = feats + padding * self._as_param_dtype(self.blank_frame if blank is None else blank)
        encoded = self.temporal(feats, valid)
        frames = encoded.masked_fill(padding, 0.0)
        memory = encoded if self.encodes_padding else frames
        return VideoEncoding(frames, valid, self.local_interaction(memory, valid))

    def encode_text(self, sentence: Tensor, tokens: Tensor, token_mask: Tensor, trim: bool = True) -> TextEncoding:
        """sentence [B, D] (EOT feature), tokens [B, L, D] word features, token_mask [B, L] -> TextEncoding.

        With `trim` and the padding mask on, the local decoder reads the tokens up to the batch's last valid one
        only: masked keys carry no attention weight, so the result is the same for less work (a text with no
        valid token attends to zero vectors only, alike at any length). Attending to padding (the authors'
        form), the padded count matters, so nothing is trimmed.
        """
        valid = token_mask.bool()
        if trim and self.local_interaction.padding_mask:
            length = real_length(valid)
            tokens, valid = tokens[:, :length], valid[:, :length]
        tokens = self._as_param_dtype(tokens)
        memory = tokens if self.encodes_padding else tokens.masked_fill(~valid.unsqueeze(-1), 0.0)
        local = self.local_interaction(memory, valid)
        return TextEncoding(self._as_param_dtype(sentence), local)

    def score(
        self,
        text: TextEncoding,
        video: VideoEncoding,
        block_size: int | tuple[int, int] = DEFAULT_BLOCK,
        gram: Tensor | None = None,
    ) -> Tensor:
        """All-pairs scores [Nt, Nv] = global + local_weight * local; `gram` is an optional cached Gram."""
        glob = self.global_interaction(text.sentence, video.frames, video.mask, block_size, gram)
        return glob + self.config.local_weight * local_scores(text.local, video.local)

    def pair_scores(self, text: TextEncoding, video: VideoEncoding, gram: Tensor | None = None) -> Tensor:
        """Scores [N] of aligned pairs (text i, video i), e.g. a text repeated over its re-rank candidates."""
        glob = global_pair_scores(text.sentence, video.frames, video.mask, self.global_interaction.temperature, gram)
        return glob + self.config.local_weight * local_pair_scores(text.local, video.local)

    def logit_scale_exp(self) -> Tensor:
        """The contrastive scale gamma = exp(logit_scale); `clamp_logit_scale_` keeps it <= logit_scale_max.

        Not clamped here: at the cap (its initial value) a forward clamp would block the gradient.
        """
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the stored logit scale in place to ln(logit_scale_max); call after each optimiser step."""
        self.logit_scale.clamp_(max=math.log(self.config.logit_scale_max))

    def forward(
        self, frame_feats: Tensor, frame_mask: Tensor, sentence: Tensor, tokens: Tensor, token_mask: Tensor
    ) -> tuple[Tensor, VideoEncoding, TextEncoding]:
        """Training step on a batch of matched pairs: returns the [B, B] score matrix and both encodings."""
        video = self.encode_video(frame_feats, frame_mask)
        text = self.encode_text(sentence, tokens, token_mask)
        return self.score(text, video), video, text
