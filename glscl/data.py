"""Paired training data in plain PyTorch: the batch containers, in-memory (video, text) pairs, and the sampler
that fixes every global batch by (seed, epoch, step), plus the independent random streams derived from the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from glscl.config import BATCH_UNITS, Mode

# Independent random streams derived from the seed: epoch order, text choice, dropout.
_ORDER_STREAM, _TEXT_STREAM, _DROPOUT_STREAM = 0, 1, 2


class VideoInput(NamedTuple):
    """Videos of a batch: CLIP frame features [B, F, D] (head) or uint8 frames [B, F, S, S, 3] (full), mask [B, F]."""

    data: Tensor
    mask: Tensor

    def to(self, device: torch.device) -> VideoInput:
        """The same videos on `device`."""
        return VideoInput(self.data.to(device, non_blocking=True), self.mask.to(device, non_blocking=True))


class TextInput(NamedTuple):
    """Texts of a batch: token features [B, L, D] with sentence [B, D] and mask [B, L] (head), or token ids [B, L]."""

    tokens: Tensor
    sentence: Tensor | None
    mask: Tensor | None

    def to(self, device: torch.device) -> TextInput:
        """The same texts on `device`."""
        return TextInput(*(None if t is None else t.to(device, non_blocking=True) for t in self))


class Batch(NamedTuple):
    """Aligned pairs: text i describes video i; optionally one hard negative text per video (`negatives` row i
    is a text video i must not match, real where `negative_valid` [B] is true)."""

    videos: VideoInput
    texts: TextInput
    negatives: TextInput | None = None
    negative_valid: Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """The same pairs on `device`."""
        if self.negatives is None:
            return Batch(self.videos.to(device), self.texts.to(device))
        valid = self.negative_valid.to(device, non_blocking=True)
        return Batch(self.videos.to(device), self.texts.to(device), self.negatives.to(device), valid)


class Pairs(Protocol):
    """What a trainer draws batches from and evaluates on: `PairData` in memory, or a reader that takes each
    batch's rows from storage (`workers.table_pairs`). Text i describes video `text_to_video[i]`."""

    text_to_video: Tensor

    @property
    def mode(self) -> Mode:
        """'head' (CLIP features) or 'full' (frames and token ids)."""

    @property
    def num_videos(self) -> int:
        """Nv."""

    @property
    def num_texts(self) -> int:
        """Nt."""

    def video_input(self, index: Tensor | np.ndarray | slice) -> VideoInput:
        """The videos at `index`."""

    def text_input(self, index: Tensor | np.ndarray | slice) -> TextInput:
        """The texts at `index`."""

    def pairs(self, video_index: Tensor | np.ndarray, text_index: Tensor | np.ndarray) -> Batch:
        """A batch whose text i is `text_index[i]` and video i is `video_index[i]`."""


@dataclass
class PairData:
    """In-memory paired data; text i describes video `text_to_video[i]`. The dtype of `videos` picks the mode.

    Head mode: `videos` float CLIP frame features [Nv, F, D], `tokens` float token features [Nt, L, D], plus
    `sentence` [Nt, D] and `token_mask` [Nt, L]. Full mode: `videos` uint8 frames [Nv, F, S, S, 3] and `tokens`
    integer CLIP token ids [Nt, L] (no sentence/token_mask: the backbone derives them). Arrays become tensors.
    Optional hard negatives: `negatives` texts in the same form, and `video_negative` [Nv], the negative text of
    each video (-1: none), e.g. its own sentences in another order.
    """

    videos: Tensor
    video_mask: Tensor
    tokens: Tensor
    text_to_video: Tensor
    sentence: Tensor | None = None
    token_mask: Tensor | None = None
    negatives: TextInput | None = None
    video_negative: Tensor | None = None

    def __post_init__(self) -> None:
        self.videos = torch.as_tensor(self.videos)
        self.video_mask = torch.as_tensor(self.video_mask).bool()
        self.tokens = torch.as_tensor(self.tokens)
        self.text_to_video = torch.as_tensor(self.text_to_video).long()
        if self.sentence is not None:
            self.sentence = torch.as_tensor(self.sentence)
        if self.token_mask is not None:
            self.token_mask = torch.as_tensor(self.token_mask).bool()
        self._check_videos()
        self._check_texts()
        self._check_negatives()

    @property
    def mode(self) -> Mode:
        """'full' for raw uint8 frames and token ids, 'head' for cached features."""
        return "full" if self.videos.dtype == torch.uint8 else "head"

    @property
    def num_videos(self) -> int:
        """Nv."""
        return self.videos.shape[0]

    @property
    def num_texts(self) -> int:
        """Nt."""
        return self.tokens.shape[0]

    def _check_videos(self) -> None:
        """Videos are float features or uint8 frames, with a matching mask."""
        expected_ndim = 5 if self.mode == "full" else 3
        if self.videos.ndim != expected_ndim or (self.mode == "head" and not self.videos.is_floating_point()):
            raise ValueError(
                "videos must be float features [Nv, F, D] or uint8 frames [Nv, F, S, S, 3], got "
                f"{self.videos.dtype} {tuple(self.videos.shape)}"
            )
        if self.video_mask.shape != self.videos.shape[:2]:
            raise ValueError(f"video_mask {tuple(self.video_mask.shape)} != videos {tuple(self.videos.shape[:2])}")

    def _check_texts(self) -> None:
        """Texts map to existing videos and have the fields (and shapes) their mode needs."""
        num_texts = self.num_texts
        if self.text_to_video.shape != (num_texts,):
            raise ValueError(f"text_to_video must have shape ({num_texts},), got {tuple(self.text_to_video.shape)}")
        if num_texts and not 0 <= int(self.text_to_video.min()) <= int(self.text_to_video.max()) < self.num_videos:
            raise ValueError(f"text_to_video values must lie in [0, {self.num_videos})")
        if self.mode == "full":
            if self.tokens.ndim != 2 or self.tokens.is_floating_point():
                raise ValueError(f"full mode needs integer token ids [Nt, L], got {self.tokens.dtype}")
            if self.sentence is not None or self.token_mask is not None:
                raise ValueError("full mode takes token ids only: sentence and token_mask come from the backbone")
            return
        if self.sentence is None or self.token_mask is None:
            raise ValueError("head mode needs sentence [Nt, D] and token_mask [Nt, L]")
        dim = self.videos.shape[-1]
        if self.tokens.ndim != 3 or self.tokens.shape[-1] != dim or self.sentence.shape != (num_texts, dim):
            raise ValueError(
                f"texts must be tokens [Nt, L, {dim}] and sentence [Nt, {dim}], got "
                f"{tuple(self.tokens.shape)} and {tuple(self.sentence.shape)}"
            )
        if self.token_mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"token_mask {tuple(self.token_mask.shape)} != tokens {tuple(self.tokens.shape[:2])}")

    def _check_negatives(self) -> None:
        """Negative texts have the positives' form, and each video names one of them or none (-1)."""
        if (self.negatives is None) != (self.video_negative is None):
            raise ValueError("negatives and video_negative come together")
        if self.negatives is None:
            return
        self.negatives = TextInput(*(None if t is None else torch.as_tensor(t) for t in self.negatives))
        self.video_negative = torch.as_tensor(self.video_negative).long()
        form = [None if t is None else (t.dtype, t.shape[1:]) for t in self.text_input(slice(0, 0))]
        if [None if t is None else (t.dtype, t.shape[1:]) for t in self.negatives] != form:
            raise ValueError("negative texts must have the same fields, dtypes and shapes as the texts")
        count = self.negatives.tokens.shape[0]
        if self.video_negative.shape != (self.num_videos,):
            raise ValueError(f"video_negative must have shape ({self.num_videos},)")
        if self.num_videos and not -1 <= int(self.video_negative.min()) <= int(self.video_negative.max()) < count:
            raise ValueError(f"video_negative values must lie in [-1, {count})")

    def video_input(self, index: Tensor | np.ndarray | slice) -> VideoInput:
        """The videos at `index`."""
        index = _as_index(index)
        return VideoInput(self.videos[index], self.video_mask[index])

    def text_input(self, index: Tensor | np.ndarray | slice) -> TextInput:
        """The texts at `index`."""
        index = _as_index(index)
        return TextInput(
            self.tokens[index],
            None if self.sentence is None else self.sentence[index],
            None if self.token_mask is None else self.token_mask[index],
        )

    def pairs(self, video_index: Tensor | np.ndarray, text_index: Tensor | np.ndarray) -> Batch:
        """A batch whose text i is `text_index[i]` and video i is `video_index[i]` (with the videos' hard
        negatives when the data has them)."""
        batch = Batch(self.video_input(video_index), self.text_input(text_index))
        if self.negatives is None:
            return batch
        chosen = self.video_negative[_as_index(video_index)]
        picked = TextInput(*(None if t is None else t[chosen.clamp_min(0)] for t in self.negatives))
        return batch._replace(negatives=picked, negative_valid=chosen >= 0)


def _as_index(index: Tensor | np.ndarray | slice) -> Tensor | slice:
    """Slices stay slices; arrays become int64 index tensors."""
    return index if isinstance(index, slice) else torch.as_tensor(index, dtype=torch.long)


def _seed_words(seed: int, *words: int) -> np.random.SeedSequence:
    """A SeedSequence keyed by (seed, stream, ...), so each (epoch, step, rank) has its own independent stream."""
    return np.random.SeedSequence([seed, *words])


class PairSampler:
    """Global batches of (video, text) pairs, fixed by (seed, epoch, step).

    `unit="videos"`: each epoch is a permutation of the videos that have a text, each paired with one random text
    of its own, so no video appears twice in a batch and the diagonal of a batch's score matrix holds the only true
    pairs. `unit="captions"` (the authors' loaders): each epoch is a permutation of all texts, each with its video.
    Orders derive from (seed, epoch) alone, so any epoch's batches are known without replaying earlier ones; the
    incomplete last batch is dropped.
    """

    def __init__(
        self, text_to_video: Tensor | np.ndarray, num_videos: int, batch_size: int, seed: int, unit: str = "videos"
    ) -> None:
        if unit not in BATCH_UNITS:
            raise ValueError(f"unit must be one of {BATCH_UNITS}, got {unit!r}")
        self.mapping = np.asarray(text_to_video, dtype=np.int64)
        self.counts = np.bincount(self.mapping, minlength=num_videos)
        self.videos = np.flatnonzero(self.counts)
        self.texts_by_video = np.argsort(self.mapping, kind="stable")
        self.offsets = np.cumsum(self.counts) - self.counts
        self.unit = unit
        self.items = self.videos if unit == "videos" else np.arange(len(self.mapping))
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(self.items) // batch_size
        self._order: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The visiting order of `epoch` (videos or texts, by unit)."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(_seed_words(self.seed, _ORDER_STREAM, epoch))
            self._order = (epoch, self.items[rng.permutation(len(self.items))])
        return self._order[1]

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(video indices [B], text indices [B]) of step `step` (0-based, within the epoch) of `epoch`."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch})")
        chosen = self.epoch_order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        if self.unit == "captions":
            return self.mapping[chosen], chosen
        videos = chosen
        rng = np.random.default_rng(_seed_words(self.seed, _TEXT_STREAM, epoch, step))
        choice = rng.integers(0, self.counts[videos])
        return videos, self.texts_by_video[self.offsets[videos] + choice]


def rank_batches(data: Pairs, sampler: PairSampler, local: slice, start: int, stop: int) -> Iterator[Batch]:
    """This rank's slice (`local`) of the global batches of steps [start, stop), read from `data` in step order:
    the trainer's default stream; `workers.train.stream` yields the same batches read ahead by Ray Data."""
    for step in range(start, stop):
        videos, texts = sampler.batch(*divmod(step, sampler.steps_per_epoch))
        yield data.pairs(videos[local], texts[local])


def dropout_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the dropout masks of one step on one rank: a pure function of the step, so resumes replay them."""
    return int(_seed_words(seed, _DROPOUT_STREAM, rank, step).generate_state(1, np.uint64)[0] >> 1)
