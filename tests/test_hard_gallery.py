"""The hard gallery generator's invariants at a tiny width: event spans inside their videos, frame masks for
videos shorter than F seconds, overlapping events, both query kinds, and a trained head whose global pooling
concentrates on the described event's frames."""

import numpy as np
import torch

from benchmarks.hard_gallery import GALLERY_SPLIT, HardConfig, HardGenerator, HardSource, train_head
from benchmarks.search_bench import SearchBenchConfig

BENCH = SearchBenchConfig(root="", dim=32, frames=64, queries=12, topics=16, chunk=100)
HARD = HardConfig(words=8, train_videos=64, val_videos=32, epochs=2, batch_size=16, encode_batch=40)


def test_layout_frames_and_masks():
    generator = HardGenerator(BENCH, HARD)
    layout = generator.layout(GALLERY_SPLIT, 0, 200)
    present = layout.present
    assert (present.sum(1) >= 1).all() and (present.sum(1) <= HARD.max_events).all()
    inside = (layout.start >= 0) & (layout.end <= layout.duration[:, None] + 1e-9)
    assert inside[present].all()
    assert (layout.end - layout.start)[present].min() >= HARD.min_event_s
    assert np.array_equal(layout.valid, np.minimum(64, np.floor(layout.duration)).astype(int))
    assert (layout.valid < 64).any() and (layout.valid == 64).any()
    starts, ends = layout.start[:, :, None], layout.end[:, :, None]
    overlap = (starts < ends.transpose(0, 2, 1)) & (starts.transpose(0, 2, 1) < ends)
    pairs = present[:, :, None] & present[:, None, :] & ~np.eye(HARD.max_events, dtype=bool)
    assert (overlap & pairs).any(axis=(1, 2)).mean() > 0.2
    frames, mask = generator.frames(layout, np.random.default_rng(0))
    assert np.array_equal(mask.sum(1), layout.valid)
    assert np.abs(frames[~mask]).max() == 0 and np.allclose(np.linalg.norm(frames[mask], axis=-1), 10, rtol=1e-4)
    cover = generator.coverage(layout)
    assert not cover[~mask].any() and not cover.transpose(0, 2, 1)[~present].any()
    assert cover.any(1)[present].all()


def test_trained_head_pools_on_the_event_and_queries_have_both_kinds(tmp_path):
    model, facts = train_head(BENCH, HARD, tmp_path / "head")
    assert facts["steps"] == 2 * (HARD.train_videos // HARD.batch_size) and facts["head"] == "tiny"
    pooling = facts["trained"]["pooling"]
    assert pooling["event_weight"] > 0.9 and pooling["event_weight"] > 2 * pooling["event_frame_share"]
    assert pooling["max_weight"] > 0.4
    again, same = train_head(BENCH, HARD, tmp_path / "head")
    assert same == facts and torch.equal(again.logit_scale, model.logit_scale)
    source = HardSource(BENCH, HARD, model)
    text, targets, kinds = source.queries(300)
    assert set(kinds.tolist()) == {"sentence", "paragraph"} and len(targets) == BENCH.queries
    assert text.sentence.shape == (BENCH.queries, BENCH.dim) and text.local.shape[1] == model.config.num_queries
    video = source.videos(300, 1, 100, 200)
    assert video.frames.shape == (100, 64, BENCH.dim) and (video.mask.sum(1) < 64).any()
    assert video.frames[~video.mask].abs().max() == 0
