"""Segment vectors for the approximate search stage: frame grouping, the score algebra, Arrow layout."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from glscl.search_vectors import (
    fill_absent_segments,
    peak_frame_weights,
    segment_weights,
    text_search_vectors,
    video_segment_vectors,
)
from glscl.similarity import local_scores
from schemas.rows import dense, multivector_array
from schemas.tables import encodings_width, segment_vector_width, stored_segment_columns, video_index_spec
from workers.index.video_index import SEARCH_VECTOR, project_rows, segment_matrix


def _groups(mask: list[bool], segments: int) -> list[int]:
    """Segment of each frame (-1 for padded frames)."""
    weights = segment_weights(torch.tensor([mask]), segments)[0]
    return [int(row.argmax()) if row.sum() else -1 for row in weights]


def test_valid_frames_split_into_contiguous_nearly_equal_segments():
    assert _groups([True] * 8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert _groups([True] * 6 + [False] * 2, 4) == [0, 0, 1, 2, 2, 3, -1, -1]
    assert _groups([True] * 3 + [False] * 5, 4) == [0, 1, 2, -1, -1, -1, -1, -1]
    assert _groups([False, True, False, True, True, False, True, False], 2) == [-1, 0, -1, 0, 1, -1, 1, -1]
    with pytest.raises(ValueError, match="segments"):
        segment_weights(torch.ones(1, 4, dtype=torch.bool), 0)


def test_peak_frames_pick_one_frame_of_each_distinct_event_unaveraged():
    torch.manual_seed(2)
    background, short, long = F.normalize(torch.randn(3, 32), dim=-1)
    # 16 frames: a long event over frames 0-11, background over 12-14, a one-frame event at frame 15 (padded after)
    frames = torch.cat([long.expand(12, -1), background.expand(3, -1), short.expand(1, -1), torch.zeros(4, 32)])
    frames = (frames + 0.01 * torch.randn(20, 32)).unsqueeze(0) * 10
    mask = torch.tensor([[True] * 16 + [False] * 4])
    weights = peak_frame_weights(frames, mask, 3)[0]
    picked = weights.argmax(0).tolist()
    assert weights.sum(0).tolist() == [1.0, 1.0, 1.0] and len(set(picked)) == 3
    assert 15 in picked and any(f < 12 for f in picked) and all(mask[0, f] for f in picked)
    local = F.normalize(torch.randn(1, 2, 32), dim=-1)
    text = text_search_vectors(short.unsqueeze(0) * 8, local, 0.5)
    peaks, _ = video_segment_vectors(frames, mask, local, 3, 0.5, kind="peaks")
    means, _ = video_segment_vectors(frames, mask, local, 3, 0.5)
    # the one-frame event scores near a full cosine through its own frame, diluted in its time segment's mean
    assert float((peaks[0] @ text[0]).max()) > 1.49 > float((means[0] @ text[0]).max()) + 0.3
    few = peak_frame_weights(frames[:, :20], torch.tensor([[True] * 2 + [False] * 18]), 3)[0]
    assert few.sum(0).tolist() == [1.0, 1.0, 0.0] and few[2:].sum() == 0
    with pytest.raises(ValueError, match="segment kind"):
        video_segment_vectors(frames, mask, local, 3, 0.5, kind="clusters")


def test_segment_inner_product_is_sentence_cosine_plus_weighted_local_score():
    torch.manual_seed(0)
    frames, local = torch.randn(3, 8, 16) * 10, F.normalize(torch.randn(3, 4, 16), dim=-1)
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3, [True] * 2 + [False] * 6])
    sentence, text_local = torch.randn(2, 16) * 8, F.normalize(torch.randn(2, 4, 16), dim=-1)
    vectors, present = video_segment_vectors(frames, mask, local, segments=4, local_weight=0.5)
    assert vectors.shape == (3, 4, 5 * 16)
    assert present.tolist() == [[True] * 4, [True] * 4, [True, True, False, False]]
    norms = vectors.norm(dim=-1)[present]
    assert torch.allclose(norms, torch.full_like(norms, 1.5**0.5), atol=1e-5)
    text = text_search_vectors(sentence, text_local, local_weight=0.5)
    products = torch.einsum("td,vsd->tvs", text, vectors)
    # first segment: frames 0-1 of 8 and of 5 valid frames; frame 0 alone when only 2 frames are valid
    first_segment = F.normalize(torch.stack([frames[0, :2].sum(0), frames[1, :2].sum(0), frames[2, 0]]), dim=-1)
    cosine = F.normalize(sentence, dim=-1) @ first_segment.T
    expected = cosine + 0.5 * local_scores(text_local, local)
    assert torch.allclose(products[:, :, 0], expected, atol=1e-5)


def test_a_text_about_one_event_matches_its_segment_best():
    torch.manual_seed(1)
    first, second = F.normalize(torch.randn(2, 32), dim=-1)
    frames = torch.cat([first.expand(4, -1), second.expand(4, -1)]).unsqueeze(0) * 10
    local = F.normalize(torch.randn(1, 2, 32), dim=-1)
    vectors, _ = video_segment_vectors(frames, torch.ones(1, 8, dtype=torch.bool), local, 2, 0.5)
    text = text_search_vectors(second.unsqueeze(0) * 8, local, 0.5)
    products = (vectors[0] @ text[0]).tolist()
    assert products[1] > products[0]
    assert products[1] == pytest.approx(1.0 + 0.5, abs=1e-5)


def test_absent_segments_repeat_the_last_present_one_and_projection_fills_one_column_per_segment():
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    present = torch.tensor([[True, False, False], [True, True, True]])
    filled = fill_absent_segments(torch.from_numpy(values), present).numpy()
    assert np.array_equal(filled[0], values[0, [0, 0, 0]]) and np.array_equal(filled[1], values[1])
    column = multivector_array(filled)
    assert np.array_equal(segment_matrix(column), filled.reshape(-1, 4))

    spec = video_index_spec("ab" * 32, "model", num_queries=1, vector_dim=2, segments=3, slots=1)
    schema = spec.schema(4)
    now = datetime.now(UTC)
    row = {
        "video_id": "v",
        "dataset": "d",
        "split": "val",
        "source_path": "",
        "duration_s": 1.0,
        "ingested_at": now,
        "text": "",
        "encodings": [0.0] * encodings_width(1, 1, 4),
        "timestamps": [0.0],
        "indexed_at": now,
        "run_id": "r",
    }
    rows = pa.table({name: pa.array([row[name]] * 2, schema.field(name).type) for name in row})
    basis = np.eye(4, 2, dtype=np.float32)
    projected = project_rows(rows.append_column(SEARCH_VECTOR, column), basis, spec, 4)
    assert projected.schema == schema and segment_vector_width(projected.schema) == 2
    assert stored_segment_columns(schema) == ["vector_0", "vector_1", "vector_2"]
    for index, name in enumerate(stored_segment_columns(schema)):
        assert np.array_equal(dense(projected[name], 2, 2), filled[:, index, :2])
