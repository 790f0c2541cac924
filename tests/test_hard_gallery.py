"""The hard gallery generator's invariants at a tiny width: event spans inside their videos, frame masks for
videos shorter than F seconds, overlapping events, both query kinds, a trained head whose global pooling
concentrates on the described event's frames, and the mean-pool baseline built from the raw frames."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks.hard_gallery import (
    GALLERY_SPLIT,
    HardConfig,
    HardGenerator,
    HardSource,
    encode_videos,
    head_config,
    train_head,
)
from benchmarks.search_bench import SearchBenchConfig, TextSide, baseline_entry, load_or_build
from glscl.backbone_config import TINY_MODEL
from glscl.model import GLSCL
from workers.index.config import AnnConfig

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


def _mean_pooled(frames: np.ndarray, mask: np.ndarray, normalise_mean: bool = True) -> np.ndarray:
    """CLIP4Clip's meanP in numpy: each valid frame L2-normalised, their mean, normalised again."""
    norms = np.linalg.norm(frames, axis=-1, keepdims=True)
    unit = np.where(mask[..., None], frames / np.maximum(norms, 1e-12), 0.0)
    mean = unit.sum(1) / mask.sum(1, keepdims=True)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True) if normalise_mean else mean


def _top10(sentences: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    queries = sentences / np.linalg.norm(sentences, axis=-1, keepdims=True)
    return np.argsort(-(queries @ pooled.T), axis=1, kind="stable")[:, :10]


def test_mean_pool_baseline_ranks_the_raw_frames(tmp_path):
    """A tiny hard gallery's mean-pool baseline: its exact top-10 is a direct numpy ranking of the raw frames
    mean-pooled (not of the head's encoded frames, nor of a mean left unnormalised), and its ANN row, every partition
    probed, finds that top-10 and scores it against the exact GLSCL top-10, with latencies beside."""
    size = 120
    bench = dataclasses.replace(
        BENCH,
        root=str(tmp_path),
        sizes=(size,),
        chunk=50,
        nprobes=(4,),
        probe_all_below=0,
        text_model=TINY_MODEL,
        ann=AnnConfig(min_rows=100, num_partitions=4, sample_rate=16, max_iterations=5),
    )
    torch.manual_seed(0)
    model = GLSCL(head_config(bench, HARD)).eval()  # untrained: its encoded frames differ from the raw ones
    source = HardSource(bench, HARD, model)
    built = load_or_build(bench, size, source)
    baseline = baseline_entry(bench, built, TextSide(TINY_MODEL, HARD.words))
    assert baseline["index_type"] == "IVF_FLAT" and baseline["partitions"] == 4 and baseline["index_s"] > 0
    [row] = baseline["sweep"]
    assert row["method"] == "mean-pool ANN" and row["nprobes"] == 4 and row["videos"] == size
    assert row["p95_ms"] >= row["p50_ms"] > 0 and row["total_p50_ms"] > row["p50_ms"] and row["load_avg_1m"] >= 0

    chunks = [(chunk, low, min(low + bench.chunk, size)) for chunk, low in enumerate(range(0, size, bench.chunk))]
    parts = (part for chunk in chunks for part in source._raw_frames(*chunk))
    frames, mask = (np.concatenate(field) for field in zip(*parts, strict=True))
    sentences = source.raw_sentences(size)
    with np.load(tmp_path / f"n{size}/baseline.npz") as data:
        stored = data["exact_top10"]
    top = _top10(sentences, _mean_pooled(frames, mask))
    assert np.array_equal(stored, top)
    glscl = built["exact_top10"].tolist()
    expected = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top.tolist(), glscl, strict=True)])
    assert row["own_recall@10"] == 1.0 and row["recall@10"] == pytest.approx(expected)
    assert baseline["exact"]["recall@10"] == pytest.approx(expected) and expected < 1.0
    encoded = encode_videos(model, frames, mask, HARD.encode_batch).frames.numpy()
    assert not np.array_equal(np.sort(stored, 1), np.sort(_top10(sentences, _mean_pooled(encoded, mask)), 1))
    unnormalised = _top10(sentences, _mean_pooled(frames, mask, normalise_mean=False))
    assert not np.array_equal(np.sort(stored, 1), np.sort(unnormalised, 1))
