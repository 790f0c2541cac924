"""Pair data and sampling: containers and their validation, hard negatives riding along, per-video and per-caption
batches fixed by seed and epoch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from tiny_glscl import make_trainer, synthetic_pairs, with_negatives

from glscl.config import TrainConfig
from glscl.data import PairData, PairSampler, TextInput

pytestmark = pytest.mark.usefixtures("one_thread")


def test_order_negatives_ride_along_with_their_videos() -> None:
    data = with_negatives(synthetic_pairs(6))
    batch = data.pairs(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 4]))
    assert batch.negative_valid.tolist() == [False, True, True]
    torch.testing.assert_close(batch.negatives.tokens[1], data.tokens[2].flip(0))
    with pytest.raises(ValueError, match="video_negative"):
        dataclasses.replace(data, video_negative=torch.full((6,), 5))
    with pytest.raises(ValueError, match="same fields"):
        dataclasses.replace(data, negatives=TextInput(data.tokens[:3, :2], data.sentence[:3], data.token_mask[:3, :2]))
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(data, video_negative=None)
    plain, hard = make_trainer(), make_trainer()
    plain.set_total_steps(1)
    hard.set_total_steps(1)
    batch = synthetic_pairs().pairs(torch.arange(16), torch.arange(16))
    harder = with_negatives(synthetic_pairs()).pairs(torch.arange(16), torch.arange(16))
    assert hard.train_step(harder)["contrastive"] > plain.train_step(batch)["contrastive"]


def test_train_config_and_pair_data_validation() -> None:
    config = TrainConfig(epochs=2, mode="full")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="partial")
    data = synthetic_pairs(6)
    assert (data.mode, data.num_videos, data.num_texts) == ("head", 6, 6)
    with pytest.raises(ValueError, match="sentence"):
        PairData(data.videos, data.video_mask, data.tokens, data.text_to_video)
    with pytest.raises(ValueError, match="text_to_video"):
        PairData(data.videos, data.video_mask, data.tokens, data.text_to_video + 1, data.sentence, data.token_mask)
    frames = torch.zeros(2, 2, 8, 8, 3, dtype=torch.uint8)
    raw = PairData(frames, np.ones((2, 2), bool), torch.zeros(3, 5, dtype=torch.long), [0, 1, 1])
    assert raw.mode == "full"
    with pytest.raises(ValueError, match="token ids"):
        PairData(frames, torch.ones(2, 2), torch.zeros(2, 5, 4), [0, 1])


def test_sampler_batches_are_per_video_and_fixed_by_seed_and_epoch() -> None:
    text_to_video = np.repeat(np.arange(20), np.arange(20) % 3)  # videos 0, 3, 6, ... have no text
    sampler = PairSampler(text_to_video, 20, batch_size=4, seed=7)
    assert len(sampler.videos) == 13 and sampler.steps_per_epoch == 3
    for epoch in range(3):
        batches = [sampler.batch(epoch, step) for step in range(sampler.steps_per_epoch)]
        fresh = PairSampler(text_to_video, 20, batch_size=4, seed=7)
        for step, (videos, texts) in enumerate(batches):
            assert np.array_equal(videos, fresh.batch(epoch, step)[0])
            assert np.array_equal(texts, fresh.batch(epoch, step)[1])
            assert np.array_equal(text_to_video[texts], videos)
        seen = np.concatenate([videos for videos, _ in batches])
        assert len(np.unique(seen)) == len(seen) == 12
    assert not np.array_equal(sampler.batch(0, 0)[0], sampler.batch(1, 0)[0])
    assert not np.array_equal(sampler.batch(0, 0)[0], PairSampler(text_to_video, 20, 4, seed=8).batch(0, 0)[0])
    with pytest.raises(IndexError):
        sampler.batch(0, 3)


def test_caption_batches_walk_every_text_once_per_epoch() -> None:
    text_to_video = np.repeat(np.arange(6), 4)
    sampler = PairSampler(text_to_video, 6, batch_size=8, seed=1, unit="captions")
    assert sampler.steps_per_epoch == 3
    seen = []
    for step in range(3):
        videos, texts = sampler.batch(0, step)
        np.testing.assert_array_equal(videos, text_to_video[texts])
        seen.extend(texts.tolist())
    assert sorted(seen) == list(range(24))
    assert any(len(set(sampler.batch(0, s)[0].tolist())) < 8 for s in range(3))
