"""The span benchmark's hard-gallery mode on a tiny generated gallery: each query's target span comes from the
product's span functions over that target's raw frames (now) and over the head's encoded frames (before), the
described event is the one its sentence is about, and chance is the mean over every placement of the span."""

from typing import NamedTuple

import numpy as np
import pytest
import torch

from benchmarks.hard_gallery import (
    GALLERY_SPLIT,
    HardConfig,
    HardSource,
    Layout,
    Texts,
    encode_videos,
    head_config,
)
from benchmarks.search_bench import SearchBenchConfig
from benchmarks.span_overlap import (
    HardSpans,
    SpanCheck,
    chance,
    hard_queries,
    hard_rows,
    hard_spans,
    main,
    scores,
    summary,
)
from glscl.model import GLSCL, VideoEncoding
from glscl.similarity import pooling_weights
from workers.search.spans import frame_match_weights, span

BENCH = SearchBenchConfig(root="", dim=32, frames=64, topics=16, chunk=30)
HARD = HardConfig(words=8, encode_batch=16)
SIZE, QUERIES, K = 50, 10, 5


class Gallery(NamedTuple):
    """A tiny hard gallery measured by `hard_spans`, with what the tests recompute: raw frames, masks, layouts and
    head encodings of every video, and the queries' targets and raw texts."""

    model: GLSCL
    checks: list[HardSpans]
    frames: np.ndarray
    mask: np.ndarray
    layouts: list[Layout]
    encoded: VideoEncoding
    targets: np.ndarray
    texts: Texts


@pytest.fixture(scope="module")
@torch.inference_mode()
def gallery() -> Gallery:
    torch.manual_seed(0)
    model = GLSCL(head_config(BENCH, HARD)).eval()
    # Untrained, with frame positions as strong as the frames' content: its encoded frames, so its pooling's spans,
    # differ from the raw frames' (as the trained demo head's favoured the last frames whatever the text).
    torch.nn.init.normal_(model.temporal.frame_position, std=2.0)
    source = HardSource(BENCH, HARD, model)
    checks = hard_spans(source, SIZE, QUERIES, K)
    chunks = [(chunk, low, min(low + BENCH.chunk, SIZE)) for chunk, low in enumerate(range(0, SIZE, BENCH.chunk))]
    parts = [part for chunk in chunks for part in source._raw_frames(*chunk)]
    frames, mask = (np.concatenate(field) for field in zip(*parts, strict=True))
    layouts = [source.generator.layout(GALLERY_SPLIT, chunk, high - low) for chunk, low, high in chunks]
    encoded = encode_videos(model, frames, mask, HARD.encode_batch)
    targets, _, texts, _ = hard_queries(source, SIZE, QUERIES)
    return Gallery(model, checks, frames, mask, layouts, encoded, targets, texts)


@torch.inference_mode()
def test_hard_spans_come_from_the_product_span_functions(gallery):
    checks, frames, mask, encoded = gallery.checks, gallery.frames, gallery.mask, gallery.encoded
    assert [c.video for c in checks] == gallery.targets.tolist() and len(set(gallery.targets.tolist())) == QUERIES
    assert {c.video // BENCH.chunk for c in checks} == {0, 1}  # targets in both chunks
    for check, sentence in zip(checks, gallery.texts.sentence, strict=True):
        layout, row, video = gallery.layouts[check.video // BENCH.chunk], check.video % BENCH.chunk, check.video
        duration, valid = layout.duration[row], int(mask[video].sum())
        # The described event is the target's event its sentence is closest to, shorter than the video, and both
        # checks score against it.
        present = np.flatnonzero(layout.present[row])
        closest = present[np.argmax(layout.events[row, present] @ sentence)]
        assert check.frames.event == check.pooling.event == (layout.start[row, closest], layout.end[row, closest])
        assert check.frames.event[1] - check.frames.event[0] < duration
        assert check.frames.duration == check.pooling.duration == duration
        times = (np.arange(HARD.frames) + 0.5) * duration / valid
        one = slice(video, video + 1)
        # Pooling (before): the head's weights over its encoded frames; frames (now): the sentence vs the raw ones.
        temperature = gallery.model.config.global_temperature
        before = pooling_weights(torch.from_numpy(sentence[None]), encoded.frames[one], encoded.mask[one], temperature)
        assert check.pooling.span == pytest.approx(span(before[0].numpy(), times, mask[video], duration))
        now = frame_match_weights(sentence, frames[one], mask[one])[0]
        assert check.frames.span == pytest.approx(span(now, times, mask[video], duration))
    # The two paths differ somewhere, and the raw frames localise the event far above chance.
    assert any(c.frames.span != c.pooling.span for c in checks)
    measured = summary([c.frames for c in checks])
    assert measured["span"]["iou"] > 2 * measured["chance"]["iou"]
    assert measured["span"]["middle_inside"] > measured["chance"]["middle_inside"] + 0.3


@torch.inference_mode()
def test_top_k_rows_keep_the_targets_among_the_exact_top_k(gallery):
    model, checks = gallery.model, gallery.checks
    text = model.encode_text(*(torch.from_numpy(t) for t in gallery.texts))
    ranked = np.argsort(-model.score(text, gallery.encoded).numpy(), axis=1, kind="stable")
    expected = [t in ranked[q, :K].tolist() for q, t in enumerate(gallery.targets.tolist())]
    assert [c.in_top_k for c in checks] == expected and 0 < sum(expected) < QUERIES
    rows = hard_rows(checks, K)
    assert [(r["span_from"], r["scored"]) for r in rows] == [
        (label, scored)
        for label in ("pooling weights (before)", "raw CLIP frames (now)")
        for scored in ("every target", f"targets in the exact top-{K}")
    ]
    assert [r["spans"] for r in rows] == [QUERIES, sum(expected)] * 2
    found = [c.frames for c in checks if c.in_top_k]
    assert rows[3]["chance"] == pytest.approx(
        {n: np.mean([chance(c)[n] for c in found]) for n in ("overlaps", "middle_inside", "iou")}
    )


def test_chance_is_the_mean_over_every_placement_of_the_span():
    # A span of the whole video overlaps any event wherever it is put; its IoU is the event's share of the video.
    whole = SpanCheck((0.0, 10.0), (4.0, 6.0), 10.0)
    assert chance(whole) == pytest.approx({"overlaps": 1.0, "middle_inside": 1.0, "iou": 0.2})
    assert scores(whole) == chance(whole)
    # A 2 s span in a 10 s video, event (4, 6): the start is uniform on [0, 8]; it overlaps for starts in (2, 6),
    # its middle is in the event for starts in [3, 5], and the IoU integrates to (4 ln 2 - 2) / 4.
    part = chance(SpanCheck((0.0, 2.0), (4.0, 6.0), 10.0), steps=2001)
    assert part == pytest.approx({"overlaps": 0.5, "middle_inside": 0.25, "iou": (4 * np.log(2) - 2) / 4}, abs=2e-3)


def test_the_demo_mode_still_needs_its_database():
    with pytest.raises(SystemExit):
        main(["--k", "5"])
