"""Retrieval metrics with tie-safe ranks, dense or accumulated block by block.

Rank convention, everywhere in this module: the rank of a true item is 1 + the number of OTHER items whose
score is >= the true score. Ties therefore count against the model (pessimistic): a row whose scores are all
equal ranks its true item last. The widely copied ``compute_metrics`` (sort, then ``np.where`` on the
diagonal) gives rank 1 on such a row and misaligns rows that hold ties; these functions never do.

Texts are rows and videos are columns of every similarity matrix. ``text_to_video[i]`` is the column of the
video that text ``i`` describes; several texts may map to one video (multi-caption galleries). Without it
the matrix must be square and text ``i`` belongs to video ``i``.

Video-to-text in multi-caption galleries follows the GLSCL authors and the CLIP4Clip line
(``tensor_video_to_text_sim``): a query video scores each candidate video by that video's best caption and
ranks videos, not individual captions, so MSR-VTT/MSVD/DiDeMo numbers compare with the literature. With one
text per video (ActivityNet paragraphs) this is the plain rank of the diagonal of ``sim.T``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray
Selection = slice | Tensor | np.ndarray

RECALL_AT = (1, 5, 10, 50)


def _to_tensor(values: ArrayLike) -> Tensor:
    """Wrap an array or tensor without copying; read-only arrays are fine, nothing here writes to them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(values)


def _as_scores(sim: ArrayLike, name: str = "similarity matrix") -> Tensor:
    """Return ``sim`` as a 2-D float tensor (no copy when already float), rejecting NaN scores."""
    scores = _to_tensor(sim)
    if not scores.is_floating_point():
        scores = scores.double()
    if scores.ndim != 2:
        raise ValueError(f"{name} must be 2-D [texts, videos], got shape {tuple(scores.shape)}")
    _reject_nan(scores, name)
    return scores


def _reject_nan(scores: Tensor, name: str) -> None:
    """Raise ValueError naming the first NaN of ``scores``; a NaN has no defined rank."""
    nan = torch.isnan(scores)
    if bool(nan.any()):
        first = tuple(int(i) for i in nan.nonzero()[0])
        raise ValueError(f"{name} contains {int(nan.sum())} NaN score(s), the first at index {first}")


def _text_to_video(text_to_video: ArrayLike | None, num_texts: int, num_videos: int) -> Tensor:
    """Validate the text -> video column mapping; ``None`` means the square identity mapping."""
    if text_to_video is None:
        if num_texts != num_videos:
            raise ValueError(
                f"a {num_texts} x {num_videos} matrix is not square: pass text_to_video to say which "
                "video each text belongs to"
            )
        return torch.arange(num_texts)
    mapping = _to_tensor(text_to_video).long().cpu().clone()
    if mapping.shape != (num_texts,):
        raise ValueError(f"text_to_video must have shape ({num_texts},), got {tuple(mapping.shape)}")
    if num_texts and (int(mapping.min()) < 0 or int(mapping.max()) >= num_videos):
        raise ValueError(f"text_to_video values must lie in [0, {num_videos})")
    return mapping


def _require_texts_per_video(text_to_video: Tensor, num_videos: int) -> None:
    """Raise when some video has no text: its video-to-text rank is undefined."""
    counts = torch.bincount(text_to_video, minlength=num_videos)
    missing = (counts == 0).nonzero().flatten()
    if missing.numel():
        raise ValueError(
            f"{missing.numel()} video(s) have no text (first: column {int(missing[0])}); "
            "video-to-text ranks are undefined for them"
        )


def t2v_ranks(sim: ArrayLike, text_to_video: ArrayLike | None = None) -> Tensor:
    """Rank of each text's true video among all videos: ``[Nt]`` int64, 1 = best.

    rank_i = 1 + #{videos j != g(i) : sim[i, j] >= sim[i, g(i)]}, with g = ``text_to_video``.
    """
    scores = _as_scores(sim)
    mapping = _text_to_video(text_to_video, *scores.shape).to(scores.device)
    rows = torch.arange(scores.shape[0], device=scores.device)
    true = scores[rows, mapping]
    # The count includes the true video itself (its score is >= itself), hence it is already 1 + others.
    return (scores >= true[:, None]).sum(dim=1).cpu()


def v2t_ranks(sim: ArrayLike, text_to_video: ArrayLike | None = None) -> Tensor:
    """Video-to-text rank of each video among all videos, each scored by its best caption: ``[Nv]``, 1 = best.

    The video-level convention of the GLSCL authors and CLIP4Clip: candidate video j' scores
    b[j', j] = max_{i : g(i) = j'} sim[i, j] for query video j, and
    rank_j = 1 + #{videos j' != j : b[j', j] >= b[j, j]}. A video's own other captions never compete with
    it, and a distractor video counts once however many of its captions outscore the true ones. With one
    text per video this is the plain rank of the diagonal of ``sim.T``. Every video must have at least one
    text.
    """
    scores = _as_scores(sim)
    num_texts, num_videos = scores.shape
    mapping = _text_to_video(text_to_video, num_texts, num_videos)
    _require_texts_per_video(mapping, num_videos)
    rows = mapping.to(scores.device)[:, None].expand(num_texts, num_videos)
    best = torch.full((num_videos, num_videos), -torch.inf, dtype=scores.dtype, device=scores.device)
    best = best.scatter_reduce_(0, rows, scores, reduce="amax")  # [candidate videos, query videos]
    # The count includes the query video itself (its score is >= itself), hence it is already 1 + others.
    return (best >= best.diagonal()[None, :]).sum(dim=0).cpu()


def metrics_from_ranks(ranks: ArrayLike) -> dict[str, float]:
    """Recall at 1/5/10/50 (percent), median rank (MdR) and mean rank (MnR) of 1-based ranks."""
    values = _to_tensor(ranks).detach().cpu().double().flatten().numpy()
    if values.size == 0:
        raise ValueError("no ranks to summarise")
    if values.min() < 1:
        raise ValueError("ranks are 1-based: found a rank below 1")
    metrics = {f"R@{k}": float(100.0 * np.mean(values <= k)) for k in RECALL_AT}
    metrics["MdR"] = float(np.median(values))
    metrics["MnR"] = float(np.mean(values))
    return metrics


def retrieval_metrics(sim: ArrayLike) -> dict[str, float]:
    """Metrics of a square texts x videos matrix whose true pairs lie on the diagonal (rows are queries).

    For video-to-text pass ``sim.T``, or use :func:`both_directions`.
    """
    scores = _as_scores(sim)
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"retrieval_metrics needs a square matrix, got {tuple(scores.shape)}")
    return metrics_from_ranks(t2v_ranks(scores))


def both_directions(sim: ArrayLike, text_to_video: ArrayLike | None = None) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text metrics of one matrix: ``{"t2v": {...}, "v2t": {...}}``."""
    return {
        "t2v": metrics_from_ranks(t2v_ranks(sim, text_to_video)),
        "v2t": metrics_from_ranks(v2t_ranks(sim, text_to_video)),
    }


def dual_softmax(sim: ArrayLike, temperature: float = 0.01, direction: Literal["t2v", "v2t"] = "t2v") -> Tensor:
    """Dual-softmax re-weighting of a similarity matrix (an inference-time extra, as in CAMoE's DSL).

    For ``"t2v"`` each score is multiplied by a softmax over texts (each column), a prior that demotes
    videos that match every query; for ``"v2t"`` the softmax runs over videos (each row). The result keeps
    the [texts, videos] layout. It needs every query of the gallery at once (transductive), so it cannot be
    computed block by block: report it only as a separate, labelled number, never mixed into main results.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scores = _as_scores(sim)
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    dim = 0 if direction == "t2v" else 1
    return scores * torch.softmax(scores / temperature, dim=dim)


def _resolve(selection: Selection, size: int, what: str) -> Tensor:
    """Turn a slice or an index array into a validated, duplicate-free int64 index tensor on the CPU."""
    if isinstance(selection, slice):
        return torch.arange(size)[selection]
    index = _to_tensor(selection).long().cpu().flatten()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"{what} indices must lie in [0, {size})")
    if torch.unique(index).numel() != index.numel():
        raise ValueError(f"{what} indices of a block must not repeat")
    return index


class RankAccumulator:
    """Exact tie-safe ranks in both directions from blocks of scores, never holding the full matrix.

    Build it with the score of every text against its own video (``true_scores[Nt]``) and the mapping
    ``text_to_video``, then :meth:`add` blocks ``sim[texts, videos]`` in any order. Each block adds, per
    text, the number of other videos scoring >= that text's true score, and per video (column) the number of
    other candidate videos with some text scoring >= the video's best true score: a candidate's best caption
    reaches the threshold iff one of its captions does, so this is the :func:`v2t_ranks` convention. That
    count adds up over blocks only if each candidate video is counted in one block per column, so a block's
    texts must be all the texts of the videos they belong to (with any columns; with one text per video any
    tiling works): :meth:`add` refuses a block that splits a video's texts rather than keep per-video maxima
    between blocks, and memory stays bounded by the block. The true pair is recognised by index, not value.
    Counts are sums, so accumulators filled on different workers over disjoint blocks combine exactly with
    :meth:`merge`; once every (text, video) pair has been added once, the ranks equal :func:`t2v_ranks` /
    :func:`v2t_ranks` of the dense matrix. Coverage is checked through per-text and per-video pair counts:
    the ranks are refused while some row or column has been counted too few or too many times.

    ``true_scores`` must be computed exactly as the blocks are (same head, dtype and device). Whenever a
    block holds a true pair, the absolute difference from ``true_scores`` is recorded in
    ``max_true_mismatch``; a non-zero value means the ranks may differ from a dense evaluation.
    """

    def __init__(
        self, true_scores: ArrayLike, text_to_video: ArrayLike | None = None, num_videos: int | None = None
    ) -> None:
        true = _to_tensor(true_scores).detach().cpu().flatten().clone()
        if not true.is_floating_point():
            true = true.double()
        _reject_nan(true, "true_scores")
        num_texts = true.numel()
        if num_texts == 0:
            raise ValueError("true_scores is empty")
        if num_videos is None:
            num_videos = num_texts if text_to_video is None else int(_to_tensor(text_to_video).max()) + 1
        self.num_texts = num_texts
        self.num_videos = num_videos
        self.true_scores = true
        self.text_to_video = _text_to_video(text_to_video, num_texts, num_videos)
        self.texts_per_video = torch.bincount(self.text_to_video, minlength=num_videos)
        self.video_true_scores = torch.full((num_videos,), -torch.inf, dtype=true.dtype).scatter_reduce(
            0, self.text_to_video, true, reduce="amax"
        )
        self.t2v_counts = torch.zeros(num_texts, dtype=torch.long)
        self.v2t_counts = torch.zeros(num_videos, dtype=torch.long)
        self.videos_seen = torch.zeros(num_texts, dtype=torch.long)
        self.texts_seen = torch.zeros(num_videos, dtype=torch.long)
        self.max_true_mismatch = 0.0

    def add(self, block: ArrayLike, texts: Selection, videos: Selection) -> None:
        """Count one block ``sim[texts, videos]``; ``texts``/``videos`` are slices or global index arrays.

        ``texts`` must hold every text of each video it touches (see the class). The counting runs on the
        block's device; only per-row and per-column counts come back.
        """
        scores = _as_scores(block, "score block")
        rows = _resolve(texts, self.num_texts, "text")
        cols = _resolve(videos, self.num_videos, "video")
        if scores.shape != (rows.numel(), cols.numel()):
            raise ValueError(
                f"block shape {tuple(scores.shape)} does not match {rows.numel()} texts x {cols.numel()} videos"
            )
        candidates, candidate_of_row = self._whole_videos(rows)
        device = scores.device
        own = self.text_to_video[rows].to(device)[:, None] == cols.to(device)[None, :]
        text_hits = (scores >= self.true_scores[rows].to(device)[:, None]) & ~own
        caption_hits = (scores >= self.video_true_scores[cols].to(device)[None, :]) & ~own
        # One hit per candidate video and column, [candidates, columns]: the any() of its captions' hits, taken
        # as an amax over bytes (a zero-copy view of the booleans) with an expanded, unallocated index.
        video_hits = torch.zeros((candidates, cols.numel()), dtype=torch.uint8, device=device).scatter_reduce_(
            0,
            candidate_of_row.to(device)[:, None].expand_as(caption_hits),
            caption_hits.view(torch.uint8),
            reduce="amax",
        )
        self.t2v_counts.index_add_(0, rows, text_hits.sum(dim=1).cpu())
        self.v2t_counts.index_add_(0, cols, video_hits.sum(dim=0).cpu())
        self.videos_seen.index_add_(0, rows, torch.full((rows.numel(),), cols.numel(), dtype=torch.long))
        self.texts_seen.index_add_(0, cols, torch.full((cols.numel(),), rows.numel(), dtype=torch.long))
        if bool(own.any()):
            r, c = own.nonzero(as_tuple=True)
            gap = (scores[r, c].double().cpu() - self.true_scores[rows[r.cpu()]].double()).abs().max()
            self.max_true_mismatch = max(self.max_true_mismatch, float(gap))

    def _whole_videos(self, rows: Tensor) -> tuple[int, Tensor]:
        """The number of videos the texts ``rows`` belong to and each row's position among them; raises when
        ``rows`` hold only some of a video's texts (that video's best caption would be split over blocks)."""
        videos, position = torch.unique(self.text_to_video[rows], return_inverse=True)
        held = torch.bincount(position, minlength=videos.numel())
        split = (held != self.texts_per_video[videos]).nonzero().flatten()
        if split.numel():
            video = int(videos[split[0]])
            raise ValueError(
                f"the block holds {int(held[split[0]])} of the {int(self.texts_per_video[video])} texts of video "
                f"{video} ({split.numel()} video(s) split): video-to-text scores a video by its best text, so a "
                "block's texts must be all the texts of their videos"
            )
        return videos.numel(), position

    def merge(self, other: RankAccumulator) -> RankAccumulator:
        """Add the counts of ``other`` (built from the same true scores, disjoint blocks) into this one."""
        same = (
            self.num_videos == other.num_videos
            and torch.equal(self.true_scores, other.true_scores)
            and torch.equal(self.text_to_video, other.text_to_video)
        )
        if not same:
            raise ValueError("cannot merge accumulators built from different true scores or mappings")
        self.t2v_counts += other.t2v_counts
        self.v2t_counts += other.v2t_counts
        self.videos_seen += other.videos_seen
        self.texts_seen += other.texts_seen
        self.max_true_mismatch = max(self.max_true_mismatch, other.max_true_mismatch)
        return self

    @property
    def complete(self) -> bool:
        """True when every (text, video) pair has been counted exactly as often as a full pass would."""
        return bool((self.videos_seen == self.num_videos).all() and (self.texts_seen == self.num_texts).all())

    def _check_complete(self) -> None:
        """Raise unless the blocks added so far tile the whole matrix once."""
        if not self.complete:
            short = int((self.videos_seen != self.num_videos).sum())
            raise ValueError(
                f"blocks do not cover the {self.num_texts} x {self.num_videos} matrix exactly once "
                f"({short} text row(s) missing or over-counted)"
            )

    def t2v_ranks(self) -> Tensor:
        """Final text-to-video ranks ``[Nt]``, equal to :func:`t2v_ranks` of the dense matrix."""
        self._check_complete()
        return self.t2v_counts + 1

    def v2t_ranks(self) -> Tensor:
        """Final video-to-text ranks ``[Nv]``, equal to :func:`v2t_ranks` of the dense matrix."""
        self._check_complete()
        _require_texts_per_video(self.text_to_video, self.num_videos)
        return self.v2t_counts + 1

    def metrics(self) -> dict[str, dict[str, float]]:
        """Both directions' metrics, as :func:`both_directions` would give for the dense matrix."""
        return {
            "t2v": metrics_from_ranks(self.t2v_ranks()),
            "v2t": metrics_from_ranks(self.v2t_ranks()),
        }
