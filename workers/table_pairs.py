"""Training pairs read from the tables a batch at a time (the `glscl.data.Pairs` contract): the rows a batch
names are taken by row id from pinned table versions, so memory holds one batch, never the split. Head mode
takes stored CLIP features; full mode reads the batch's kept frames (or decodes its videos with the ingest decode
stage) and tokenizes its captions. Plain classes (no Ray): the training stream runs them in Ray Data actors,
evaluation in-process."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import Tensor

from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig, clip_tokenizer
from glscl.config import Mode
from glscl.data import Batch, TextInput, VideoInput
from schemas.catalog import Catalog, take_rows
from schemas.rows import dense
from schemas.tables import CAPTIONS, FRAME_IMAGES, FRAMES, TEXTS, VIDEOS, TableSpec
from workers.ingest.decode import decode_frames
from workers.ingest.frame_images import decode_jpegs
from workers.ingest.sampling import SamplingConfig
from workers.split_rows import NO_ROW, SplitRows


def _positions(index: Tensor | np.ndarray | slice, size: int) -> np.ndarray:
    """Integer positions of `index` into a sequence of `size` items."""
    if isinstance(index, slice):
        return np.arange(size)[index]
    return np.asarray(index, dtype=np.int64)


class OrderNegatives:
    """Each video's order negative (its sentences told in reverse, `workers.train.worker.order_negative_texts`)
    encoded when a batch needs it: token features from the backbone the stored features were made with (head
    mode) or token ids (full mode). Holds the paragraphs, not their encodings."""

    def __init__(
        self, paragraphs: dict[int, str], backbone: BackboneConfig, max_words: int, mode: Mode, keep_padding: bool
    ) -> None:
        self.paragraphs, self.backbone_config, self.max_words = paragraphs, backbone, max_words
        self.mode, self.keep_padding = mode, keep_padding
        self._backbone: Backbone | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_backbone": None}

    def texts(self, videos: np.ndarray) -> tuple[TextInput, Tensor]:
        """The negatives of `videos` (positions in the split) and which of them are real (a video without two
        distinct sentences has none: its row repeats a placeholder and is marked invalid)."""
        valid = np.array([int(v) in self.paragraphs for v in videos], dtype=bool)
        fallback = next(iter(self.paragraphs.values()))
        told = [self.paragraphs.get(int(v), fallback) for v in videos]
        if self.mode == "full":
            tokens = clip_tokenizer(self.backbone_config.model_name)(told, context_length=self.max_words)
            return TextInput(tokens, None, None), torch.from_numpy(valid)
        if self._backbone is None:
            self._backbone = Backbone(self.backbone_config)
        sentence, tokens, mask = self._backbone.encode_texts(told, self.max_words, self.keep_padding)
        return TextInput(*(torch.from_numpy(a) for a in (tokens, sentence, mask))), torch.from_numpy(valid)


class TablePairs:
    """A split's pairs as `SplitRows`, read on demand. Picklable (open tables are not carried), so a copy can be
    sent to Ray actors; each copy opens the pinned versions itself."""

    def __init__(self, rows: SplitRows, negatives: OrderNegatives | None = None) -> None:
        self.rows = rows
        self.negatives = negatives
        self.text_to_video = torch.from_numpy(rows.text_to_video)
        self._tables: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tables": {}}

    @property
    def mode(self) -> Mode:
        """'head' for stored features; `FramePairs` overrides it."""
        return "head"

    @property
    def data_bytes(self) -> int:
        """What the split's training data would take in memory (here its features as float32)."""
        return self.rows.feature_bytes

    @property
    def num_videos(self) -> int:
        """Nv."""
        return self.rows.num_videos

    @property
    def num_texts(self) -> int:
        """Nt."""
        return self.rows.num_texts

    def _take(self, spec: TableSpec, row_ids: np.ndarray, columns: list[str]):
        """Rows of one pinned table, in the order asked."""
        if spec.name not in self._tables:
            self._tables[spec.name] = Catalog(self.rows.store).snapshot(spec, self.rows.versions[spec.name])
        return take_rows(self._tables[spec.name], row_ids, columns)

    def video_input(self, index: Tensor | np.ndarray | slice) -> VideoInput:
        """Frame features [B, F, D] and masks of the videos at `index`."""
        rows = self.rows.frame_rows[_positions(index, self.num_videos)]
        taken = self._take(FRAMES, rows, ["features", "frame_mask"])
        frames = self.rows.num_frames
        return VideoInput(
            torch.from_numpy(dense(taken["features"], len(rows), frames, self.rows.dim)),
            torch.from_numpy(dense(taken["frame_mask"], len(rows), frames, dtype=bool)),
        )

    def text_input(self, index: Tensor | np.ndarray | slice) -> TextInput:
        """Token features [B, L, D], sentence features and masks of the texts at `index`."""
        rows = self.rows.text_rows[_positions(index, self.num_texts)]
        taken = self._take(TEXTS, rows, ["vector", "tokens", "token_mask"])
        words = self.rows.query.max_words
        return TextInput(
            torch.from_numpy(dense(taken["tokens"], len(rows), words, self.rows.dim)),
            torch.from_numpy(dense(taken["vector"], len(rows), self.rows.dim)),
            torch.from_numpy(dense(taken["token_mask"], len(rows), words, dtype=bool)),
        )

    def pairs(self, video_index: Tensor | np.ndarray, text_index: Tensor | np.ndarray) -> Batch:
        """A batch whose text i is `text_index[i]` and video i is `video_index[i]`, with the videos' order
        negatives when the run trains with them."""
        batch = Batch(self.video_input(video_index), self.text_input(text_index))
        if self.negatives is None:
            return batch
        negatives, valid = self.negatives.texts(_positions(video_index, self.num_videos))
        return batch._replace(negatives=negatives, negative_valid=valid)


class FramePairs(TablePairs):
    """Full fine-tuning pairs: each batch's videos as uint8 frames [B, F, S, S, 3] with the sampling recipe the
    features were made with, read from `frame_images` where ingest kept them and decoded from their source files
    where it did not; its captions tokenized to CLIP token ids."""

    def __init__(
        self, rows: SplitRows, backbone: BackboneConfig, image_size: int, negatives: OrderNegatives | None = None
    ) -> None:
        super().__init__(rows, negatives)
        recipe = json.loads(rows.sampling)
        self.sampling = SamplingConfig(recipe["policy"], recipe["num_frames"], recipe.get("fps", 1.0))
        self.backbone, self.image_size = backbone, image_size

    @property
    def mode(self) -> Mode:
        """'full'."""
        return "full"

    @property
    def data_bytes(self) -> int:
        """What the split's decoded frames (uint8) and token ids would take in memory."""
        frames = self.sampling.num_frames * self.image_size**2 * 3
        return self.num_videos * frames + self.num_texts * self.rows.query.max_words * 8

    def video_input(self, index: Tensor | np.ndarray | slice) -> VideoInput:
        """Frames and masks of the videos at `index`: kept images where stored, else decoded from the source."""
        positions = _positions(index, self.num_videos)
        slots, size = self.sampling.num_frames, self.image_size
        frames = np.zeros((len(positions), slots, size, size, 3), dtype=np.uint8)
        masks = np.zeros((len(positions), slots), dtype=bool)
        image_rows = self.rows.image_rows[positions]
        kept = np.flatnonzero(image_rows != NO_ROW)
        if len(kept):
            taken = self._take(FRAME_IMAGES, image_rows[kept], ["jpeg", "frame_mask"])
            for slot, jpegs, mask in zip(kept, taken["jpeg"].to_pylist(), taken["frame_mask"].to_pylist(), strict=True):
                frames[slot], masks[slot] = decode_jpegs(jpegs, np.array(mask), size), mask
        missing = np.flatnonzero(image_rows == NO_ROW)
        if len(missing):
            paths = self._take(VIDEOS, self.rows.video_rows[positions[missing]], ["source_path"])["source_path"]
            for slot, path in zip(missing, paths.to_pylist(), strict=True):
                decoded = decode_frames(path, self.sampling, size)
                frames[slot], masks[slot] = decoded.frames, decoded.mask
        return VideoInput(torch.from_numpy(frames), torch.from_numpy(masks))

    def text_input(self, index: Tensor | np.ndarray | slice) -> TextInput:
        """CLIP token ids [B, L] of the captions at `index`."""
        rows = self.rows.caption_rows[_positions(index, self.num_texts)]
        texts = self._take(CAPTIONS, rows, ["text"])["text"].to_pylist()
        tokenizer = clip_tokenizer(self.backbone.model_name)
        return TextInput(tokenizer(texts, context_length=self.rows.query.max_words), None, None)
