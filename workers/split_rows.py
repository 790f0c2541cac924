"""Where a split's training pairs live in the tables, without reading them: the row address of each video's frame
features and source file and of each text's features and caption, which video each text describes, and the
shapes. Readers take the rows a batch needs from these addresses, so a trainer holds 8 bytes per row, not the
features (256 KB per video at F = 64, D = 512)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.catalog import ROW_ID, Catalog, scan_row_ids, sql_string, take_rows
from schemas.rows import dense
from schemas.store import StoreConfig
from schemas.tables import CAPTIONS, FRAME_IMAGES, FRAMES, TEXTS, VIDEO_OK, VIDEOS
from workers.features import (
    CAPTION_ORDER,
    FeatureQuery,
    caption_rows_where,
    frame_rows_where,
    gallery,
    pair_texts,
    text_rows_where,
)

NO_ROW = np.iinfo(np.uint64).max  # a row id that stands for "not stored"


@dataclass(frozen=True)
class SplitRows:
    """A split's pairs as row ids into table versions pinned when it was located (`versions`), in the order every
    reader agrees on: videos sorted by id, texts by video then sentence order. Text i describes video
    `text_to_video[i]`. `sampling` is the frames' decode recipe as stored (JSON)."""

    store: StoreConfig
    query: FeatureQuery
    sampling: str
    sampling_hash: str
    versions: dict[str, int]
    video_ids: list[str]
    frame_rows: np.ndarray
    video_rows: np.ndarray
    text_rows: np.ndarray
    caption_rows: np.ndarray
    text_to_video: np.ndarray
    num_frames: int
    dim: int
    image_rows: np.ndarray  # each video's kept frames in `frame_images` (`NO_ROW` where none are kept)

    @property
    def num_videos(self) -> int:
        """Videos of the split that have features."""
        return len(self.video_ids)

    @property
    def num_texts(self) -> int:
        """Texts whose video has features."""
        return len(self.text_rows)

    @property
    def kept_images(self) -> int:
        """Videos whose sampled frames are stored (`glscl ingest --keep-frames`)."""
        return int(np.count_nonzero(self.image_rows != NO_ROW))

    @property
    def feature_bytes(self) -> int:
        """What the split's features would take in memory as float32: what a streaming reader does not hold."""
        words = self.query.max_words
        return 4 * self.dim * (self.num_videos * self.num_frames + self.num_texts * (words + 1))


def read_vectors(rows: SplitRows, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The split's sentence vectors [Nt, D] and mean-pooled video vectors [Nv, D] (the `vector` columns ingest
    stores), read a chunk at a time: 2 KB per item at D = 512, where the frames are 128 KB per video."""
    catalog = Catalog(rows.store)
    parts = []
    for spec, row_ids in ((TEXTS, rows.text_rows), (FRAMES, rows.frame_rows)):
        table = catalog.snapshot(spec, rows.versions[spec.name])
        taken = [take_rows(table, row_ids[i : i + chunk], ["vector"]) for i in range(0, len(row_ids), chunk)]
        parts.append(np.concatenate([dense(t["vector"], t.num_rows, rows.dim) for t in taken]))
    return parts[0], parts[1]


def _rows_of(table: pa.Table, key: str, ids: list[str], missing: int | None = None) -> np.ndarray:
    """The row id of each of `ids` (in that order) in a scan of `key` and row ids; `missing` stands for an id the
    scan lacks (None: every id must be there)."""
    position = dict(zip(table[key].to_pylist(), table[ROW_ID].to_numpy(), strict=True))
    if missing is not None:
        return np.array([position.get(i, missing) for i in ids], dtype=np.uint64)
    return np.array([position[i] for i in ids], dtype=np.uint64)


def locate_split(catalog: Catalog, query: FeatureQuery) -> SplitRows:
    """Find the rows of `query`'s split (the videos and texts `read_split` would read) in table versions pinned
    now, reading ids and row addresses only."""
    sampling_hash, video_ids = gallery(catalog, query)
    specs = (FRAMES, VIDEOS, CAPTIONS, TEXTS, *([FRAME_IMAGES] if catalog.exists(FRAME_IMAGES) else []))
    tables = {spec.name: catalog.snapshot(spec) for spec in specs}
    frames = scan_row_ids(tables[FRAMES.name], ["video_id"], frame_rows_where(query, sampling_hash))
    videos = scan_row_ids(
        tables[VIDEOS.name], ["video_id"], f"split = {sql_string(query.split)} AND status = {sql_string(VIDEO_OK)}"
    )
    captions = scan_row_ids(tables[CAPTIONS.name], CAPTION_ORDER, caption_rows_where(query))
    texts = scan_row_ids(tables[TEXTS.name], ["caption_id"], text_rows_where(query))
    captions, texts, text_to_video = pair_texts(captions, texts, video_ids, query, catalog.store.uri)
    frame_rows = _rows_of(frames, "video_id", video_ids)
    images = pa.table({"video_id": pa.array([], pa.string()), ROW_ID: pa.array([], pa.uint64())})
    if FRAME_IMAGES.name in tables:
        images = scan_row_ids(tables[FRAME_IMAGES.name], ["video_id"], f"sampling_hash = {sql_string(sampling_hash)}")
    first = take_rows(tables[FRAMES.name], frame_rows[:1], ["features", "frame_mask", "sampling"])
    return SplitRows(
        store=catalog.store,
        query=query,
        sampling=first["sampling"][0].as_py(),
        sampling_hash=sampling_hash,
        versions={name: table.version for name, table in tables.items()},
        video_ids=video_ids,
        frame_rows=frame_rows,
        video_rows=_rows_of(videos, "video_id", video_ids),
        text_rows=texts[ROW_ID].to_numpy().astype(np.uint64),
        caption_rows=captions[ROW_ID].to_numpy().astype(np.uint64),
        text_to_video=text_to_video,
        num_frames=len(first["frame_mask"][0]),
        dim=len(first["features"][0][0]),
        image_rows=_rows_of(images, "video_id", video_ids, missing=NO_ROW),
    )
