"""Read the stored CLIP features of one split into dense arrays: per-video frame features with masks, and
per-caption sentence/token features with masks, joined through `captions.video_id`. Training, evaluation and
indexing all start here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glscl.checkpoint import load_checkpoint, recorded_extras
from schemas.catalog import Catalog, check_splits, sql_in, sql_string
from schemas.rows import dense
from schemas.tables import CAPTION_PARAGRAPH, CAPTION_SENTENCE, CAPTIONS, FRAMES, TEXTS, VIDEO_OK, VIDEOS


class FeaturesError(ValueError):
    """The tables do not hold what was asked for (no such split, model, sampling recipe or text length)."""


@dataclass(frozen=True)
class FeatureQuery:
    """Which stored features to read: split, backbone, sampling recipe (None: the only one stored), text kind."""

    split: str
    model_id: str
    max_words: int
    kind: str = CAPTION_PARAGRAPH
    sampling_hash: str | None = None
    limit_videos: int | None = None


@dataclass
class SplitFeatures:
    """Dense features of a split: videos [Nv, F, D] + mask, texts [Nt, D], tokens [Nt, L, D] + mask, and the
    index of each text's video; ids keep the link back to the tables."""

    video_ids: list[str]
    video_feats: np.ndarray
    video_mask: np.ndarray
    caption_ids: list[str]
    sentence: np.ndarray
    tokens: np.ndarray
    token_mask: np.ndarray
    text_to_video: np.ndarray
    sampling_hash: str

    @property
    def num_videos(self) -> int:
        """Videos in the split that have features."""
        return len(self.video_ids)

    @property
    def num_texts(self) -> int:
        """Texts whose video has features."""
        return len(self.caption_ids)


def checkpoint_query(checkpoint: str, split: str, kind: str) -> FeatureQuery:
    """The stored features of `split` that a checkpoint was trained on: backbone, text length and sampling from its
    metadata."""
    _, _, meta = load_checkpoint(checkpoint)
    extra = recorded_extras(checkpoint, meta, ("backbone_model_id", "max_words", "sampling_hash"))
    return FeatureQuery(split, extra["backbone_model_id"], int(extra["max_words"]), kind, extra["sampling_hash"])


def video_sentences(catalog: Catalog, where: str) -> dict[str, list[str]]:
    """Each matching video's sentence captions, in their order (`where` filters the captions table)."""
    rows = catalog.scan(CAPTIONS, ["video_id", "order", "text"], f"kind = {sql_string(CAPTION_SENTENCE)} AND {where}")
    told: dict[str, list[tuple[int, str]]] = {}
    for video_id, order, text in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True):
        told.setdefault(video_id, []).append((order, text))
    return {video_id: [text for _, text in sorted(items)] for video_id, items in told.items()}


def _sampling_hash(catalog: Catalog, query: FeatureQuery) -> str:
    if query.sampling_hash:
        return query.sampling_hash
    stored = catalog.scan(FRAMES, ["sampling_hash", "sampling"], f"model_id = {sql_string(query.model_id)}")
    recipes = dict(zip(stored["sampling_hash"].to_pylist(), stored["sampling"].to_pylist(), strict=True))
    if not recipes:
        raise FeaturesError(f"no frame features for model {query.model_id!r} in {catalog.store.uri}")
    if len(recipes) > 1:
        listed = "; ".join(f"{h}: {r}" for h, r in recipes.items())
        raise FeaturesError(f"several sampling recipes stored for {query.model_id!r}, choose one: {listed}")
    return next(iter(recipes))


@dataclass
class VideoFeatures:
    """Frame features of some gallery videos, in gallery order, with each frame's time in seconds."""

    video_ids: list[str]
    feats: np.ndarray
    mask: np.ndarray
    timestamps: np.ndarray


@dataclass
class TextFeatures:
    """Sentence and token features of a split's texts, with the gallery index of each text's video."""

    caption_ids: list[str]
    sentence: np.ndarray
    tokens: np.ndarray
    token_mask: np.ndarray
    text_to_video: np.ndarray


def frame_rows_where(query: FeatureQuery, sampling_hash: str) -> str:
    """The filter of the `frames` rows a query reads: its backbone and sampling recipe."""
    return f"model_id = {sql_string(query.model_id)} AND sampling_hash = {sql_string(sampling_hash)}"


def gallery(catalog: Catalog, query: FeatureQuery) -> tuple[str, list[str]]:
    """The sampling hash and the sorted ids of the split's ok videos that have features: the gallery order
    every reader (and every evaluation shard) agrees on."""
    sampling_hash = _sampling_hash(catalog, query)
    videos = catalog.scan(
        VIDEOS, ["video_id"], f"split = {sql_string(query.split)} AND status = {sql_string(VIDEO_OK)}"
    )
    if videos.num_rows == 0:
        check_splits(catalog.store, query.split)
    encoded = catalog.scan(FRAMES, ["video_id"], frame_rows_where(query, sampling_hash))
    ids = sorted(set(videos["video_id"].to_pylist()) & set(encoded["video_id"].to_pylist()))
    return sampling_hash, ids[: query.limit_videos] if query.limit_videos is not None else ids


VIDEO_COLUMNS = ["video_id", "features", "frame_mask", "timestamps"]  # the `frames` columns `read_videos` reads


def videos_where(query: FeatureQuery, sampling_hash: str, video_ids: list[str]) -> str:
    """The filter of the `frames` rows of the given videos for a query's backbone and sampling."""
    return f"{frame_rows_where(query, sampling_hash)} AND {sql_in('video_id', video_ids)}"


def videos_in_order(frames: pa.Table, video_ids: list[str]) -> VideoFeatures:
    """`frames` rows (`VIDEO_COLUMNS`, any order) as dense frame features, masks and times in the order of
    `video_ids`, every one of which must be among them."""
    position = {vid: i for i, vid in enumerate(frames["video_id"].to_pylist())}
    frames = frames.take(pa.array([position[vid] for vid in video_ids], pa.int64()))
    slots = len(frames["frame_mask"][0]) if frames.num_rows else 0
    return VideoFeatures(
        video_ids=list(video_ids),
        feats=dense(frames["features"], frames.num_rows, slots, -1),
        mask=dense(frames["frame_mask"], frames.num_rows, slots, dtype=bool),
        timestamps=dense(frames["timestamps"], frames.num_rows, slots),
    )


def read_videos(catalog: Catalog, query: FeatureQuery, sampling_hash: str, video_ids: list[str]) -> VideoFeatures:
    """Frame features and masks of the given videos, in the given order."""
    frames = catalog.scan(FRAMES, VIDEO_COLUMNS, videos_where(query, sampling_hash, video_ids))
    return videos_in_order(frames, video_ids)


CAPTION_ORDER = ["caption_id", "video_id", "order"]  # the captions columns that fix the text order


def caption_rows_where(query: FeatureQuery) -> str:
    """The filter of the `captions` rows a query reads: its split and text kind."""
    return f"split = {sql_string(query.split)} AND kind = {sql_string(query.kind)}"


def text_rows_where(query: FeatureQuery) -> str:
    """The filter of the `texts` rows a query reads: its backbone and text length."""
    return f"model_id = {sql_string(query.model_id)} AND max_words = {int(query.max_words)}"


def pair_texts(
    captions: pa.Table, texts: pa.Table, video_ids: list[str], query: FeatureQuery, uri: str
) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """The captions of `video_ids` that have a stored text, ordered by video then sentence order, with their
    `texts` rows in the same order and each one's index in `video_ids`: the text order every reader agrees on."""
    captions = captions.filter(pc.is_in(captions["video_id"], pa.array(video_ids))).sort_by(
        [("video_id", "ascending"), ("order", "ascending")]
    )
    texts = texts.filter(pc.is_in(texts["caption_id"], captions["caption_id"]))
    position = {cid: i for i, cid in enumerate(texts["caption_id"].to_pylist())}
    kept = [i for i, cid in enumerate(captions["caption_id"].to_pylist()) if cid in position]
    if not kept:
        raise FeaturesError(
            f"split {query.split!r} has no {query.kind} texts encoded by {query.model_id!r} with max_words "
            f"{query.max_words} in {uri}"
        )
    captions = captions.take(pa.array(kept, pa.int64()))
    texts = texts.take(pa.array([position[cid] for cid in captions["caption_id"].to_pylist()], pa.int64()))
    video_index = {vid: i for i, vid in enumerate(video_ids)}
    text_to_video = np.array([video_index[vid] for vid in captions["video_id"].to_pylist()], dtype=np.int64)
    return captions, texts, text_to_video


def read_texts(catalog: Catalog, query: FeatureQuery, video_ids: list[str]) -> TextFeatures:
    """The split's texts of `query.kind` whose video is in `video_ids`, ordered by video then sentence order."""
    texts = catalog.scan(TEXTS, ["caption_id", "vector", "tokens", "token_mask"], text_rows_where(query))
    captions = catalog.scan(CAPTIONS, CAPTION_ORDER, caption_rows_where(query))
    _, texts, text_to_video = pair_texts(captions, texts, video_ids, query, catalog.store.uri)
    n = texts.num_rows
    return TextFeatures(
        caption_ids=texts["caption_id"].to_pylist(),
        sentence=dense(texts["vector"], n, -1),
        tokens=dense(texts["tokens"], n, query.max_words, -1),
        token_mask=dense(texts["token_mask"], n, query.max_words, dtype=bool),
        text_to_video=text_to_video,
    )


def read_split(catalog: Catalog, query: FeatureQuery) -> SplitFeatures:
    """Load the features of `query.split` (videos with status ok and features, and their captions' texts)."""
    sampling_hash, video_ids = gallery(catalog, query)
    videos = read_videos(catalog, query, sampling_hash, video_ids)
    texts = read_texts(catalog, query, video_ids)
    return SplitFeatures(
        video_ids=video_ids,
        video_feats=videos.feats,
        video_mask=videos.mask,
        caption_ids=texts.caption_ids,
        sentence=texts.sentence,
        tokens=texts.tokens,
        token_mask=texts.token_mask,
        text_to_video=texts.text_to_video,
        sampling_hash=sampling_hash,
    )
