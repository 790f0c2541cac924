"""Golden tests for glscl.metrics: hand-computed ranks with ties, multi-caption galleries, block accumulation."""

import itertools
import random

import numpy as np
import pytest
import torch

from glscl.metrics import (
    RankAccumulator,
    both_directions,
    dual_softmax,
    metrics_from_ranks,
    retrieval_metrics,
    t2v_ranks,
    v2t_ranks,
)


def sort_and_where_ranks(sim: np.ndarray) -> np.ndarray:
    """The field's common recipe: sort each row descending, find the diagonal score with np.where."""
    sorted_desc = np.sort(-sim, axis=1)
    diagonal = -np.diag(sim)[:, None]
    return np.where(sorted_desc - diagonal == 0)[1] + 1


def test_square_ranks_by_hand():
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # true best: rank 1
            [0.5, 0.4, 0.4],  # 0.5 beats it, 0.4 ties it: rank 3
            [0.8, 0.9, 0.7],  # two above: rank 3
        ]
    )
    assert t2v_ranks(sim).tolist() == [1, 3, 3]
    # Columns: video 0: 0.9 is best -> 1; video 1: 0.4 with 0.9 above (0.1 below) -> 2;
    # video 2: 0.7 vs 0.2, 0.4 -> 1.
    assert v2t_ranks(sim).tolist() == [1, 2, 1]
    assert retrieval_metrics(sim.T) == metrics_from_ranks(v2t_ranks(sim))


def test_all_equal_row_ranks_last():
    sim = np.full((4, 4), 0.5)
    assert t2v_ranks(sim).tolist() == [4, 4, 4, 4]
    assert v2t_ranks(sim).tolist() == [4, 4, 4, 4]
    metrics = retrieval_metrics(sim)
    assert metrics["R@1"] == 0.0
    assert metrics["MdR"] == 4.0
    assert metrics["MnR"] == 4.0


def test_common_sort_recipe_is_optimistic_on_ties_and_ours_is_not():
    sim = np.array(
        [
            [0.2, 0.2, 0.2],  # all tied
            [0.1, 0.6, 0.3],
            [0.4, 0.5, 0.9],
        ]
    )
    naive = sort_and_where_ranks(sim)
    # The tied row yields three hits, one per tied entry: rank 1 for row 0 and misaligned rows after it.
    assert naive.shape[0] == 5
    assert naive[0] == 1
    assert t2v_ranks(sim).tolist() == [3, 1, 1]


def test_metrics_from_ranks_values():
    ranks = np.array([1, 2, 5, 6, 11, 60])
    metrics = metrics_from_ranks(ranks)
    assert metrics["R@1"] == pytest.approx(100 / 6)
    assert metrics["R@5"] == pytest.approx(300 / 6)
    assert metrics["R@10"] == pytest.approx(400 / 6)
    assert metrics["R@50"] == pytest.approx(500 / 6)
    assert metrics["MdR"] == 5.5  # mean of the two middle ranks, as np.median
    assert metrics["MnR"] == pytest.approx(85 / 6)
    assert set(metrics) == {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR"}


def test_metrics_from_ranks_rejects_bad_input():
    with pytest.raises(ValueError, match="no ranks"):
        metrics_from_ranks(np.array([], dtype=int))
    with pytest.raises(ValueError, match="1-based"):
        metrics_from_ranks(np.array([0, 1]))


def test_tensor_and_array_inputs_agree():
    sim = np.random.default_rng(0).normal(size=(7, 7))
    assert retrieval_metrics(sim) == retrieval_metrics(torch.from_numpy(sim))
    assert retrieval_metrics(sim) == retrieval_metrics(torch.from_numpy(sim).float())
    integers = np.array([[1, 1], [0, 2]])
    assert t2v_ranks(integers).tolist() == [2, 1]
    assert v2t_ranks(integers).tolist() == [1, 1]


def test_nan_raises():
    sim = np.eye(3)
    sim[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(1, 2\)"):
        retrieval_metrics(sim)
    with pytest.raises(ValueError, match="NaN"):
        v2t_ranks(sim)
    with pytest.raises(ValueError, match="NaN"):
        RankAccumulator(np.array([1.0, np.nan]))


def test_non_square_needs_mapping():
    with pytest.raises(ValueError, match="not square"):
        t2v_ranks(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((3, 2)))


def test_multi_caption_by_hand():
    # Five texts, three videos: texts 0,1 -> video 0; texts 2,3 -> video 1; text 4 -> video 2.
    text_to_video = np.array([0, 0, 1, 1, 2])
    sim = np.array(
        [
            [0.9, 0.3, 0.1],  # text 0: rank 1
            [0.2, 0.2, 0.6],  # text 1: 0.6 above, 0.2 tie -> rank 3
            [0.1, 0.5, 0.5],  # text 2: tie -> rank 2
            [0.8, 0.7, 0.0],  # text 3: rank 2
            [0.4, 0.4, 0.4],  # text 4: all tied -> rank 3
        ]
    )
    assert t2v_ranks(sim, text_to_video).tolist() == [1, 3, 2, 2, 3]
    # Each candidate video scores by its best caption: video 0 by max(texts 0, 1), video 1 by max(texts 2, 3).
    # Query video 0: own 0.9; video 1 scores 0.8, video 2 0.4 -> rank 1.
    # Query video 1: own 0.7; video 0 scores 0.3, video 2 0.4 -> rank 1.
    # Query video 2: own 0.4; video 0 scores 0.6, video 1 0.5 -> two above -> rank 3.
    assert v2t_ranks(sim, text_to_video).tolist() == [1, 1, 3]
    result = both_directions(sim, text_to_video)
    assert result["t2v"]["R@1"] == pytest.approx(20.0)
    assert result["v2t"]["R@1"] == pytest.approx(200 / 3)


def test_v2t_ranks_videos_by_their_best_caption_by_hand():
    # Three videos with three captions each: texts 0-2 -> video 0, 3-5 -> video 1, 6-8 -> video 2.
    text_to_video = np.repeat([0, 1, 2], 3)
    sim = np.array(
        [
            # query video:  0     1     2
            [0.5, 0.6, 0.3],
            [0.3, 0.2, 0.2],
            [0.2, 0.1, 0.1],
            [0.9, 0.6, 0.4],
            [0.8, 0.3, 0.85],
            [0.7, 0.1, 0.1],
            [0.6, 0.6, 0.9],
            [0.55, 0.6, 0.1],
            [0.1, 0.0, 0.0],
        ]
    )
    # Query video 0: own best 0.5; video 1's best caption 0.9 and video 2's 0.6 both beat it -> rank 3.
    #   (Ranked among captions, five captions of other videos beat it: rank 6.)
    # Query video 1: own best 0.6; video 0's best 0.6 and video 2's best 0.6 tie it; ties count against the
    #   model -> rank 3. (Among captions: three tying captions -> rank 4.)
    # Query video 2: own best 0.9; video 0's best 0.3, video 1's 0.85 -> rank 1 either way.
    assert v2t_ranks(sim, text_to_video).tolist() == [3, 3, 1]
    assert both_directions(sim, text_to_video)["v2t"] == {
        "R@1": pytest.approx(100 / 3),
        "R@5": 100.0,  # 200/3 when ranking captions
        "R@10": 100.0,
        "R@50": 100.0,
        "MdR": 3.0,  # 4 when ranking captions
        "MnR": pytest.approx(7 / 3),  # 11/3 when ranking captions
    }


def test_v2t_all_tied_multi_caption_ranks_every_video_last_among_videos():
    # Every score equal: each video ties with all other videos, so it ranks last among the 3 videos, not
    # among the 3-4 captions of the other videos.
    assert v2t_ranks(np.full((5, 3), 0.5), np.array([0, 0, 1, 1, 2])).tolist() == [3, 3, 3]


def test_v2t_ignores_texts_of_the_same_video():
    # Text 1 belongs to video 0 too; its higher score must not push text 0 down for video 0.
    sim = np.array([[0.5, 0.0], [0.9, 0.1], [0.7, 0.8]])
    assert v2t_ranks(sim, np.array([0, 0, 1])).tolist() == [1, 1]


def test_multi_caption_errors():
    with pytest.raises(ValueError, match="no text"):
        v2t_ranks(np.zeros((2, 3)), np.array([0, 1]))
    # A video without texts is a valid distractor for text-to-video.
    assert t2v_ranks(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.5]]), np.array([0, 1])).tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        t2v_ranks(np.zeros((2, 3)), np.array([0, 3]))


def test_square_both_directions_match_transpose():
    sim = np.random.default_rng(1).integers(0, 3, size=(9, 9)).astype(float)
    result = both_directions(sim)
    assert result["t2v"] == retrieval_metrics(sim)
    assert result["v2t"] == retrieval_metrics(sim.T)


def tied_gallery(seed: int, num_texts: int, num_videos: int) -> tuple[np.ndarray, np.ndarray]:
    """Random integer-valued scores (many ties) and a mapping where every video has at least one text."""
    rng = np.random.default_rng(seed)
    mapping = np.concatenate([np.arange(num_videos), rng.integers(0, num_videos, num_texts - num_videos)])
    rng.shuffle(mapping)
    return rng.integers(0, 4, size=(num_texts, num_videos)).astype(np.float32), mapping


def best_caption_v2t_ranks(sim: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Reference, the CLIP4Clip recipe with tie-safe ranks: reduce each candidate video to its best caption per
    query video, then rank the true video in each query video's row of the videos x videos matrix."""
    best = np.stack([sim[mapping == video].max(axis=0) for video in range(sim.shape[1])])  # [candidate, query]
    by_query = best.T
    return (by_query >= np.diag(by_query)[:, None]).sum(axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_v2t_equals_the_best_caption_reduction(seed):
    sim, mapping = tied_gallery(seed, num_texts=40, num_videos=9)
    assert v2t_ranks(sim, mapping).tolist() == best_caption_v2t_ranks(sim, mapping).tolist()


def tiles(num_texts: int, num_videos: int, text_block: int, video_block: int) -> list[tuple[slice, slice]]:
    return [
        (slice(r, r + text_block), slice(c, c + video_block))
        for r, c in itertools.product(range(0, num_texts, text_block), range(0, num_videos, video_block))
    ]


def whole_video_tiles(
    mapping: np.ndarray, videos_per_block: int, video_block: int, seed: int
) -> list[tuple[np.ndarray, slice]]:
    """Blocks whose rows are all the texts of a random group of videos (scattered rows), against column slices."""
    num_videos = int(mapping.max()) + 1
    order = np.random.default_rng(seed).permutation(num_videos)
    groups = [order[i : i + videos_per_block] for i in range(0, num_videos, videos_per_block)]
    return [
        (np.flatnonzero(np.isin(mapping, group)), slice(c, c + video_block))
        for group in groups
        for c in range(0, num_videos, video_block)
    ]


def accumulate(sim: np.ndarray, mapping: np.ndarray, blocks) -> RankAccumulator:
    true = sim[np.arange(sim.shape[0]), mapping]
    acc = RankAccumulator(true, mapping, num_videos=sim.shape[1])
    for rows, cols in blocks:
        acc.add(torch.from_numpy(sim[rows][:, cols]), rows, cols)
    return acc


@pytest.mark.parametrize(("text_block", "video_block"), [(1, 1), (3, 7), (5, 5), (17, 2), (40, 40), (13, 11)])
def test_accumulator_equals_dense_for_any_tiling_with_one_text_per_video(text_block, video_block):
    sim, mapping = tied_gallery(seed=text_block * 100 + video_block, num_texts=16, num_videos=16)
    blocks = tiles(*sim.shape, text_block, video_block)
    random.Random(0).shuffle(blocks)
    acc = accumulate(sim, mapping, blocks)
    assert acc.complete
    assert torch.equal(acc.t2v_ranks(), t2v_ranks(sim, mapping))
    assert torch.equal(acc.v2t_ranks(), v2t_ranks(sim, mapping))
    assert acc.metrics() == both_directions(sim, mapping)
    assert acc.max_true_mismatch == 0.0


@pytest.mark.parametrize(("videos_per_block", "video_block"), [(1, 1), (2, 7), (5, 5), (3, 2), (16, 16), (7, 11)])
def test_multi_caption_accumulator_equals_dense_for_whole_video_row_blocks(videos_per_block, video_block):
    sim, mapping = tied_gallery(seed=videos_per_block * 100 + video_block, num_texts=40, num_videos=16)
    blocks = whole_video_tiles(mapping, videos_per_block, video_block, seed=video_block)
    random.Random(0).shuffle(blocks)
    acc = accumulate(sim, mapping, blocks)
    assert acc.complete
    assert torch.equal(acc.t2v_ranks(), t2v_ranks(sim, mapping))
    assert torch.equal(acc.v2t_ranks(), v2t_ranks(sim, mapping))
    assert acc.v2t_ranks().tolist() == best_caption_v2t_ranks(sim, mapping).tolist()
    assert acc.metrics() == both_directions(sim, mapping)
    assert acc.max_true_mismatch == 0.0


def test_accumulator_refuses_a_block_that_splits_a_videos_texts():
    mapping = np.array([0, 1, 1])
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    acc = RankAccumulator(sim[np.arange(3), mapping], mapping)
    # Rows 0-1 hold text 1 but not text 2: were both captions of video 1 to beat a query video in two blocks,
    # video 1 would be counted twice.
    with pytest.raises(ValueError, match="holds 1 of the 2 texts of video 1"):
        acc.add(sim[:2], slice(0, 2), slice(None))
    acc.add(sim, slice(None), slice(None))  # the refused block counted nothing
    assert acc.complete
    assert torch.equal(acc.v2t_ranks(), v2t_ranks(sim, mapping))


def test_accumulator_with_scattered_index_blocks():
    sim, mapping = tied_gallery(seed=7, num_texts=20, num_videos=12)
    rng = np.random.default_rng(3)
    text_groups = [np.flatnonzero(np.isin(mapping, group)) for group in np.array_split(rng.permutation(12), 3)]
    video_groups = np.array_split(rng.permutation(12), 4)
    blocks = [(r, c) for r in text_groups for c in video_groups]
    acc = RankAccumulator(sim[np.arange(20), mapping], mapping, num_videos=12)
    for rows, cols in blocks:
        acc.add(sim[np.ix_(rows, cols)], rows, cols)
    assert torch.equal(acc.t2v_ranks(), t2v_ranks(sim, mapping))
    assert torch.equal(acc.v2t_ranks(), v2t_ranks(sim, mapping))


def test_accumulator_square_default_mapping():
    sim = np.full((6, 6), 1.0, dtype=np.float32)
    acc = RankAccumulator(np.diag(sim))
    for rows, cols in tiles(6, 6, 4, 4):
        acc.add(sim[rows, cols], rows, cols)
    assert acc.t2v_ranks().tolist() == [6] * 6
    assert acc.v2t_ranks().tolist() == [6] * 6


def test_merged_shards_equal_dense():
    sim, mapping = tied_gallery(seed=11, num_texts=30, num_videos=18)
    blocks = whole_video_tiles(mapping, 4, 5, seed=2)
    random.Random(1).shuffle(blocks)
    shards = [accumulate(sim, mapping, blocks[i::3]) for i in range(3)]
    assert not shards[0].complete
    with pytest.raises(ValueError, match="exactly once"):
        shards[0].t2v_ranks()
    merged = shards[0].merge(shards[1]).merge(shards[2])
    assert torch.equal(merged.t2v_ranks(), t2v_ranks(sim, mapping))
    assert torch.equal(merged.v2t_ranks(), v2t_ranks(sim, mapping))


def test_merge_rejects_different_truth():
    a = RankAccumulator(np.array([1.0, 2.0]))
    b = RankAccumulator(np.array([1.0, 3.0]))
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(b)


def test_accumulator_detects_double_counting_and_bad_blocks():
    sim = np.eye(4)
    acc = accumulate(sim, np.arange(4), [*tiles(4, 4, 2, 2), (slice(0, 2), slice(0, 2))])
    assert not acc.complete
    with pytest.raises(ValueError, match="exactly once"):
        acc.v2t_ranks()
    with pytest.raises(ValueError, match="does not match"):
        acc.add(np.zeros((2, 3)), slice(0, 2), slice(0, 2))
    with pytest.raises(ValueError, match="must not repeat"):
        acc.add(np.zeros((2, 2)), np.array([1, 1]), slice(0, 2))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.full((1, 1), np.nan), slice(0, 1), slice(0, 1))


def test_accumulator_records_true_score_mismatch():
    sim = np.eye(3)
    acc = RankAccumulator(np.array([1.0, 1.0, 0.75]))
    acc.add(sim, slice(None), slice(None))
    assert acc.max_true_mismatch == pytest.approx(0.25)
    # The true pair is excluded by index, never double counted: text 2 still sees only videos 0 and 1.
    assert acc.t2v_ranks().tolist() == [1, 1, 1]


def test_dual_softmax_is_column_prior():
    # Video 0 is a hub that every text likes; the prior over texts demotes it for text 1.
    sim = torch.tensor([[0.9, 0.5], [0.95, 0.9]], dtype=torch.float64)
    out = dual_softmax(sim, temperature=0.05)
    assert torch.allclose(out, sim * torch.softmax(sim / 0.05, dim=0))
    assert t2v_ranks(sim).tolist() == [1, 2]
    assert t2v_ranks(out).tolist() == [1, 1]
    v2t = dual_softmax(sim, temperature=0.05, direction="v2t")
    assert torch.allclose(v2t, sim * torch.softmax(sim / 0.05, dim=1))
    with pytest.raises(ValueError, match="temperature"):
        dual_softmax(sim, temperature=0.0)
    with pytest.raises(ValueError, match="direction"):
        dual_softmax(sim, direction="both")
