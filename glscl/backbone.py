"""The CLIP backbone through open_clip: frame features from the image tower, sentence and token features from
the text tower. Real use is ViT-B-32 with OpenAI weights; the offline default is a tiny randomly initialised
config shipped with this package, and that is always announced, never silent.

The network is built with the activation its weights were trained with: open_clip builds `ViT-B-32` with GELU,
but the OpenAI weights (and others, per open_clip's pretrained configs) were trained with QuickGELU, so a
pretrained tag that says `quick_gelu` always gets the QuickGELU network, whichever name was typed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from glscl import onednn
from glscl.backbone_config import BackboneConfig, clip_tokenizer, open_clip_registry
from glscl.text_tower import OneDnnTextTower
from glscl.weights import WeightFileError, read_state_dict


class Backbone:
    """A loaded open_clip model with the preprocessing constants and the two towers as batch functions."""

    def __init__(self, config: BackboneConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        open_clip = open_clip_registry()
        # Random weights come from the config's seed, drawn from a forked RNG: loading a backbone must not reset
        # the caller's stream (a training run seeds its head before it loads the backbone for order negatives).
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        from_file = config.weight_file is not None  # loaded below, by glscl.weights, not by open_clip
        with torch.random.fork_rng(devices=cuda, device_type="cuda"), _quiet_about_random_init(from_file):
            torch.manual_seed(config.seed)
            model = open_clip.create_model(
                config.model_name,
                pretrained=None if from_file else config.pretrained,
                precision=config.precision,
                device=self.device,
                force_quick_gelu=config.quick_gelu,
                require_pretrained=not config.is_random and not from_file,
            )
        if from_file:
            load_weight_file(model, config)
        self.model = model.eval()
        self.tokenizer = clip_tokenizer(config.model_name)
        preprocess = open_clip.get_model_preprocess_cfg(model)
        size = preprocess["size"]
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean = torch.tensor(preprocess["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess["std"], device=self.device).view(1, 3, 1, 1)
        self.embed_dim = int(model.text_projection.shape[1])
        self.dtype = next(model.parameters()).dtype
        if not hasattr(model, "token_embedding"):
            raise ValueError(
                f"open_clip model {config.model_name!r} has a custom text tower; glscl needs the CLIP text "
                "transformer for per-token features"
            )
        self.fast_tower = OneDnnTextTower(model) if OneDnnTextTower.supports(model) else None

    def pixels(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames [N, S, S, 3] (already resized and centre-cropped) to normalised model input [N, 3, S, S]."""
        images = torch.as_tensor(frames, device=self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return ((images - self.mean) / self.std).to(self.dtype)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame image embeddings [N, D] (CLS after ln_post and projection, not normalised) as float32."""
        if len(frames) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.model.encode_image(self.pixels(frames)).float().cpu().numpy()

    def blank_frame(self, grad: bool = False) -> torch.Tensor:
        """The image feature [D] of an all-zero model input: what the authors' loaders put in padded frame slots
        (their padding is zeros after normalisation), for heads that read encoded padding. With `grad`, it follows
        the backbone's weights differentiably (full fine-tuning)."""
        blank = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device, dtype=self.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self.model.encode_image(blank)[0].float()

    def tokenize(self, texts: list[str], max_words: int) -> torch.Tensor:
        """CLIP BPE tokens, [SOT] + words + [EOT], truncated and zero-padded to `max_words`."""
        return self.tokenizer(texts, context_length=max_words).to(self.device)

    def text_features(
        self, tokens: torch.Tensor, trim: bool = True, keep_padding: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sentence vectors [N, D] (EOT token), token features [N, L, D] and token mask [N, L], differentiably.

        The tower is causal, so a token's features do not depend on the positions after it: with `trim` it runs
        over the batch's real length only (up to the last end-of-text token), which gives the features of every
        real token at a fraction of the work; `trim=False` runs all L positions (the reference it is checked and
        timed against). Positions after a text's end-of-text token are returned as zeros either way: nothing
        reads them unless asked (the GLSCL head masks them), and zeros do not depend on the batch a text was encoded
        in. With `keep_padding` they hold the tower's outputs there instead, as the authors' text encoder gives them
        (all L positions run, padded positions masked as keys, so each attends to its text's tokens only): what a
        head with encoded padding reads. A word's features are the same either way (the tower is causal).
        """
        model = self.model
        length = tokens.shape[1]
        if length > model.positional_embedding.shape[0]:
            raise ValueError(f"max_words {length} exceeds the text tower's context length")
        eot = tokens.argmax(dim=-1)
        mask = torch.arange(length, device=tokens.device)[None, :] <= eot[:, None]
        if keep_padding:
            x = self.tower(tokens, words=mask)
            return x[torch.arange(x.shape[0], device=x.device), eot], x, mask
        run = int(eot.max()) + 1 if trim and eot.numel() else length
        x = self.tower(tokens[:, :run])
        sentence = x[torch.arange(x.shape[0], device=x.device), eot]
        x = F.pad(x, (0, 0, 0, length - run)).masked_fill(~mask[..., None], 0.0)
        return sentence, x, mask

    def tower(self, tokens: torch.Tensor, words: torch.Tensor | None = None) -> torch.Tensor:
        """Projected per-token features [N, L, D] of token ids [N, L]: CLIP's text transformer over L positions,
        with the first L positional embeddings and the causal mask cut to L x L (open_clip's modules, unpatched).
        With `words` [N, L] (True = a word) the positions after them are also masked as keys, per text.
        Without gradients on CPU the blocks' products run in oneDNN (glscl.text_tower), same fp32 features."""
        model = self.model
        length = tokens.shape[1]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
        mask = model.attn_mask[:length, :length]
        if words is not None:
            heads = model.transformer.resblocks[0].attn.num_heads
            mask = torch.where(words[:, None, :], mask, float("-inf")).repeat_interleave(heads, dim=0)
            x = model.transformer(x, attn_mask=mask.to(cast))
        elif (
            self.fast_tower is not None and not torch.is_grad_enabled() and onednn.available(model.positional_embedding)
        ):
            x = self.fast_tower(x, mask)
        else:
            x = model.transformer(x, attn_mask=mask)
        x = model.ln_final(x)
        projection = model.text_projection
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

    @torch.inference_mode()
    def encode_texts(
        self, texts: list[str], max_words: int, keep_padding: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sentence vectors, token features and masks for `texts` as float32/bool numpy arrays (`keep_padding`: the
        tower's outputs at padded positions too, see `text_features`)."""
        sentence, tokens, mask = self.text_features(self.tokenize(texts, max_words), keep_padding=keep_padding)
        return sentence.float().cpu().numpy(), tokens.float().cpu().numpy(), mask.cpu().numpy()


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_about_random_init(from_file: bool) -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning while a network whose weights come from a local file is built
    (they are loaded right after, by `load_weight_file`); it would tell the user the opposite of what happens."""
    quiet = _NoRandomInitWarning() if from_file else None
    root = logging.getLogger()
    if quiet:
        root.addFilter(quiet)
    try:
        yield
    finally:
        if quiet:
            root.removeFilter(quiet)


def load_weight_file(model: torch.nn.Module, config: BackboneConfig) -> None:
    """Load `config`'s local weight file into `model` (any format `glscl.weights` reads)."""
    model.load_state_dict(fitting_weights(model, config), strict=True)


def check_weight_file(config: BackboneConfig) -> None:
    """Read a local weight file and check it fits the named network, before a run writes anything: the network is
    built on the meta device (no memory, no time), so only the file's own read costs."""
    if config.weight_file is None:
        return
    with torch.device("meta"):
        model = open_clip_registry().create_model(
            config.model_name, precision=config.precision, device="meta", force_quick_gelu=config.quick_gelu
        )
    fitting_weights(model, config)


def fitting_weights(model: torch.nn.Module, config: BackboneConfig) -> dict[str, torch.Tensor]:
    """The weight file's state dict, refused with one line that names the file, the model and the first misfits
    when it does not fit `model`."""
    from open_clip.model import resize_pos_embed

    state = read_state_dict(config.pretrained)
    resize_pos_embed(state, model)
    expected = model.state_dict()
    misfits = {
        "missing": [key for key in expected if key not in state],
        "unexpected": [key for key in state if key not in expected],
        "wrong shape": [
            f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
            for key, value in expected.items()
            if key in state and state[key].shape != value.shape
        ],
    }
    problems = [f"{label} {len(found)} (e.g. {', '.join(found[:2])})" for label, found in misfits.items() if found]
    if problems:
        raise WeightFileError(
            f"weight file {config.pretrained}: not {config.model_name} weights ({'; '.join(problems)}); name the "
            "open_clip model these weights are for with --model"
        )
    return state


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis, leaving all-zero rows at zero."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
