"""A tiny GLSCL config, learnable synthetic pairs and trainers, shared by the data, optim, training and checkpoint
tests."""

from __future__ import annotations

import dataclasses
import math

import torch

from glscl.config import GLSCLConfig, TrainConfig
from glscl.data import PairData, TextInput
from glscl.model import GLSCL
from glscl.training import Trainer, TrainModule

DIM, FRAMES, WORDS, PAIRS = 32, 4, 6, 48


def tiny_config(**overrides: object) -> GLSCLConfig:
    """A GLSCL config small enough that a training step takes milliseconds; `overrides` replace its fields."""
    values = dict(
        embed_dim=DIM,
        max_frames=FRAMES,
        max_words=WORDS,
        frame_position_size=8,
        temporal_layers=1,
        temporal_heads=4,
        temporal_ffn=64,
        num_queries=4,
        decoder_layers=2,
        decoder_heads=4,
        decoder_ffn=64,
    )
    values.update(overrides)
    return GLSCLConfig(**values)


def synthetic_pairs(num_videos: int = PAIRS, texts_per_video: int = 1, seed: int = 0) -> PairData:
    """Learnable pairs: each text is a noisy fixed linear map of its video's mean frame feature."""
    g = torch.Generator().manual_seed(seed)
    videos = torch.randn(num_videos, FRAMES, DIM, generator=g)
    video_mask = torch.ones(num_videos, FRAMES, dtype=torch.bool)
    video_mask[::3, -1] = False
    mean = (videos * video_mask[..., None]).sum(1) / video_mask.sum(1, keepdim=True)
    signal = (mean @ torch.randn(DIM, DIM, generator=g) / math.sqrt(DIM)).repeat_interleave(texts_per_video, 0)
    num_texts = num_videos * texts_per_video
    sentence = signal + torch.randn(num_texts, DIM, generator=g)
    tokens = signal[:, None, :] + torch.randn(num_texts, WORDS, DIM, generator=g)
    token_mask = torch.ones(num_texts, WORDS, dtype=torch.bool)
    token_mask[::2, -2:] = False
    text_to_video = torch.arange(num_videos).repeat_interleave(texts_per_video)
    return PairData(videos, video_mask, tokens, text_to_video, sentence, token_mask)


def make_trainer(config: GLSCLConfig | None = None, init_seed: int = 0, **train: object) -> Trainer:
    """A head-mode trainer (3 epochs of batch 16 unless `train` says otherwise), head initialised from `init_seed`."""
    config = config or tiny_config()
    torch.manual_seed(init_seed)
    module = TrainModule(GLSCL(config))
    return Trainer(module, config, TrainConfig(**{"epochs": 3, "batch_size": 16, **train}))


def with_negatives(data: PairData, every: int = 2) -> PairData:
    """`data` plus a hard negative text for every `every`-th video: its own text with the token order reversed."""
    videos = torch.arange(0, data.num_videos, every)
    first_text = torch.stack([(data.text_to_video == v).nonzero()[0, 0] for v in videos.tolist()])
    negatives = TextInput(data.tokens[first_text].flip(1), data.sentence[first_text], data.token_mask[first_text])
    video_negative = torch.full((data.num_videos,), -1)
    video_negative[videos] = torch.arange(len(videos))
    return dataclasses.replace(data, negatives=negatives, video_negative=video_negative)
