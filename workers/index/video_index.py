"""The index stage: encode stored frame features of some videos once with a checkpoint and build their
`video_index` rows (the packed encodings for the exact re-rank, the unprojected segment vectors, and the
metadata and caption text users filter and search on); then write them projected onto the index's basis and
bring the table's indexes up to date. Ray schedules `index_rows` (workers/ray_jobs.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from lancedb.table import Table

from glscl.checkpoint import load_checkpoint, recorded_extras
from glscl.model import VideoEncoding
from glscl.search_vectors import fill_absent_segments
from schemas.catalog import Catalog, sql_in, sql_string
from schemas.gallery_shards import gallery_shard, shard_table_name
from schemas.rows import dense, multivector_array, now_utc, vector_array
from schemas.store import StoreConfig
from schemas.tables import (
    CAPTION_PARAGRAPH,
    CAPTIONS,
    FRAMES,
    INDEX_FILTER_COLUMNS,
    VIDEO_OK,
    VIDEOS,
    TableSpec,
    encodings_form,
    segment_vector_width,
    stored_segment_columns,
    video_index_spec,
)
from workers.features import FeatureQuery, read_videos
from workers.glscl_encode import encode_videos
from workers.index.ann_vectors import segment_vectors
from workers.index.config import AnnConfig
from workers.index.indexes import IndexUpdate, ensure_id_lookup, ensure_indexes
from workers.index.packed_encodings import pack_encodings
from workers.index.projection import Projection, save_projection
from workers.index.segment_rows import ensure_segment_rows

SEARCH_VECTOR = "search_vector"


@dataclass(frozen=True)
class CheckpointIndex:
    """The index table of a checkpoint and what its rows are built from."""

    spec: TableSpec
    sha256: str
    model_id: str
    sampling_hash: str
    embed_dim: int
    shard: int = 0
    shards: int = 1

    def gallery(self, shards: int) -> list[CheckpointIndex]:
        """The index split into `shards` gallery shards (schemas/gallery_shards.py), one table each; [self] for 1."""
        return [
            replace(
                self, spec=replace(self.spec, name=shard_table_name(self.spec.name, i, shards)), shard=i, shards=shards
            )
            for i in range(shards)
        ]

    def holds(self, video_ids: list[str]) -> np.ndarray:
        """Which of `video_ids` belong in this shard's table."""
        return np.array([gallery_shard(vid, self.shards) == self.shard for vid in video_ids], dtype=bool)


def checkpoint_index(
    checkpoint: str, vector_dim: int, segments: int, catalog: Catalog, encodings: str = "float16"
) -> CheckpointIndex:
    """Name and schema of a checkpoint's video index, from the checkpoint's config, its recorded features and
    their frame slots in `catalog`; the ANN vectors are `vector_dim` wide at most ((1 + K) * D when smaller), the
    encodings packed in the form `encodings`."""
    _, config, meta = load_checkpoint(checkpoint)  # verifies the weights against the recorded sha256
    extra = recorded_extras(checkpoint, meta, ("backbone_model_id", "sampling_hash"))
    sha = meta["sha256"]
    width = min(vector_dim, (1 + config.num_queries) * config.embed_dim)
    model_id, sampling_hash = extra["backbone_model_id"], extra["sampling_hash"]
    where = f"model_id = {sql_string(model_id)} AND sampling_hash = {sql_string(sampling_hash)}"
    sample = catalog.scan(FRAMES, ["frame_mask"], where, limit=1)
    if sample.num_rows == 0:
        raise ValueError(
            f"no frame features of backbone {model_id!r} with sampling {sampling_hash} "
            f"in {catalog.store.uri}: ingest videos with the checkpoint's backbone and sampling first"
        )
    slots = len(sample["frame_mask"][0])
    spec = video_index_spec(sha, model_id, config.num_queries, width, segments, slots, encodings)
    return CheckpointIndex(spec, sha, model_id, sampling_hash, config.embed_dim)


def pending_videos(catalog: Catalog, indexes: list[CheckpointIndex], splits: tuple[str, ...]) -> list[str]:
    """Ok videos with features for the checkpoint's backbone and sampling that their gallery shard's table (of
    `indexes`, all shards of one index; one for an unsharded index) does not hold yet."""
    index = indexes[0]
    where = f"status = {sql_string(VIDEO_OK)}"
    if splits:
        where += " AND " + sql_in("split", list(splits))
    videos = set(catalog.scan(VIDEOS, ["video_id"], where)["video_id"].to_pylist())
    encoded = catalog.scan(
        FRAMES,
        ["video_id"],
        f"model_id = {sql_string(index.model_id)} AND sampling_hash = {sql_string(index.sampling_hash)}",
    )
    candidates = sorted(videos & set(encoded["video_id"].to_pylist()))
    pending = []
    for shard in indexes:
        indexed = set(catalog.scan(shard.spec, ["video_id"])["video_id"].to_pylist())
        pending += [
            vid for vid, held in zip(candidates, shard.holds(candidates), strict=True) if held and vid not in indexed
        ]
    return sorted(pending)


def check_layout(schema: pa.Schema, index: CheckpointIndex, ann: AnnConfig) -> None:
    """Refuse a vector width, segment count or encodings form other than the existing index's: its projection,
    vector columns, indexes and packed encodings are fixed when it is first built."""
    wanted = index.spec.schema(index.embed_dim)
    stored = (segment_vector_width(schema), len(stored_segment_columns(schema)))
    asked = (segment_vector_width(wanted), len(stored_segment_columns(wanted)))
    if stored != asked:
        raise ValueError(
            f"video index {index.spec.name} holds {stored[1]} segment vectors of {stored[0]} dims per video but "
            f"--vector-dim {ann.vector_dim} --segments {ann.segments} asks for {asked[1]} of {asked[0]}: re-run "
            f"with --vector-dim {stored[0]} --segments {stored[1]}, or drop the table to rebuild it"
        )
    form = encodings_form(schema.field("encodings").type)
    if form != ann.encodings:
        raise ValueError(
            f"video index {index.spec.name} stores its encodings as {form} but --encodings {ann.encodings} asks "
            f"for {ann.encodings}: re-run with --encodings {form}, or drop the table to rebuild it"
        )


@dataclass(frozen=True)
class IndexShard:
    """One unit of index work: these videos' features (backbone, sampling), this checkpoint, this run."""

    store: StoreConfig
    checkpoint: str
    model_id: str
    sampling_hash: str
    video_ids: tuple[str, ...]
    run_id: str
    ann: AnnConfig


def index_shards(
    store: StoreConfig,
    checkpoint: str,
    index: CheckpointIndex,
    ids: list[str],
    run_id: str,
    shard_videos: int,
    ann: AnnConfig,
) -> list[IndexShard]:
    """The videos `ids` in shards of at most `shard_videos`, each one unit of index work."""
    return [
        IndexShard(
            store,
            checkpoint,
            index.model_id,
            index.sampling_hash,
            tuple(ids[i : i + shard_videos]),
            run_id,
            ann,
        )
        for i in range(0, len(ids), shard_videos)
    ]


def caption_texts(catalog: Catalog, video_ids: list[str]) -> dict[str, str]:
    """Searchable text per video: its paragraph caption, else its sentences in order (empty when none)."""
    captions = catalog.scan(CAPTIONS, ["video_id", "kind", "order", "text"], sql_in("video_id", video_ids))
    paragraphs: dict[str, str] = {}
    sentences: dict[str, list[tuple[int, str]]] = {}
    for vid, kind, order, text in zip(*(captions[c].to_pylist() for c in captions.column_names), strict=True):
        if kind == CAPTION_PARAGRAPH:
            paragraphs[vid] = text
        else:
            sentences.setdefault(vid, []).append((order, text))
    return {vid: paragraphs.get(vid) or " ".join(t for _, t in sorted(sentences.get(vid, []))) for vid in video_ids}


@torch.inference_mode()
def index_rows(shard: IndexShard) -> pa.Table:
    """Encode the shard's videos with the checkpoint; rows carry the unprojected `search_vector` column, which
    the index flow replaces by the projected `vector` once the projection basis is known."""
    model, config, _ = load_checkpoint(shard.checkpoint)
    catalog = Catalog(shard.store)
    ids = list(shard.video_ids)
    query = FeatureQuery(split="", model_id=shard.model_id, max_words=0, sampling_hash=shard.sampling_hash)
    videos = read_videos(catalog, query, shard.sampling_hash, ids)
    encoded = encode_videos(model, videos.feats, videos.mask, torch.device("cpu"))
    vectors, present = segment_vectors(encoded, config.local_weight, shard.ann)
    meta = catalog.scan(VIDEOS, list(INDEX_FILTER_COLUMNS), sql_in("video_id", ids))
    order = {vid: i for i, vid in enumerate(meta["video_id"].to_pylist())}
    meta = meta.take(pa.array([order[vid] for vid in ids], pa.int64()))
    texts = caption_texts(catalog, ids)
    titles = [Path(path).stem if path else "" for path in meta["source_path"].to_pylist()]
    searchable = [f"{title}. {texts[vid]}".strip(". ") for title, vid in zip(titles, ids, strict=True)]
    segments = fill_absent_segments(vectors, present).numpy()
    return video_index_table(meta, searchable, encoded, videos.timestamps, segments, shard.run_id, shard.ann.encodings)


def video_index_table(
    meta: pa.Table,
    texts: list[str],
    encoded: VideoEncoding,
    timestamps: np.ndarray,
    segments: np.ndarray,
    run_id: str,
    encodings: str = "float16",
) -> pa.Table:
    """Video index rows before projection, from their parts: the videos' metadata (`INDEX_FILTER_COLUMNS`, in
    row order), searchable text, GLSCL encodings (packed in the form `encodings`), frame times and unprojected
    segment vectors [N, S, W].
    The one builder of these rows, for the index flow and the benchmarks' synthetic galleries."""
    n = meta.num_rows
    return pa.table(
        {
            **{column: meta[column] for column in INDEX_FILTER_COLUMNS},
            "text": pa.array(texts, pa.string()),
            "encodings": pack_encodings(encoded, encodings),
            "timestamps": vector_array(timestamps, np.float32),
            SEARCH_VECTOR: multivector_array(segments),
            "indexed_at": pa.array([now_utc()] * n, pa.timestamp("us", tz="UTC")),
            "run_id": pa.array([run_id] * n, pa.string()),
        }
    )


def project_rows(rows: pa.Table, basis: np.ndarray, spec: TableSpec, dim: int) -> pa.Table:
    """Replace the unprojected segment vectors by their projections onto `basis` [in, out], one column per
    segment, in the table's schema."""
    schema = spec.schema(dim)
    columns = stored_segment_columns(schema)
    projected = segment_matrix(rows[SEARCH_VECTOR]).reshape(rows.num_rows, len(columns), -1) @ basis
    table = rows.drop_columns([SEARCH_VECTOR])
    for index, name in enumerate(columns):
        table = table.append_column(name, vector_array(projected[:, index]))
    return table.select(schema.names).cast(schema)


def segment_matrix(segments: pa.ChunkedArray | pa.ListArray) -> np.ndarray:
    """Every segment vector of a list-of-vectors column, one per row of a [segments, width] float32 array."""
    values = segments.combine_chunks() if isinstance(segments, pa.ChunkedArray) else segments
    flat = pc.list_flatten(values)
    return dense(flat, len(flat), -1)


def write_index(
    catalog: Catalog,
    indexes: list[CheckpointIndex],
    parts: Iterable[pa.Table],
    videos: int,
    projection: Projection | None,
    ann: AnnConfig,
    progress: Callable[[int, int], None],
) -> tuple[int, Projection]:
    """Write the index rows of `parts` (one per video, `videos` in all, as `index_rows` builds them) as they arrive,
    projected onto the index's basis, each into its gallery shard's table (`indexes`: every shard of the index, or
    the one table of an unsharded index). Without a stored projection (the first run) rows are held back until
    `ann.projection_sample` videos (or all) have arrived, the basis is fitted on their segment vectors and stored
    for every shard, so all shards share it. Calls `progress(written, videos)` after each write; returns the rows
    written and the projection."""
    index = indexes[0]
    width = segment_vector_width(index.spec.schema(index.embed_dim))
    buffered: list[pa.Table] = []
    written = 0
    for part in parts:
        buffered.append(part)
        if projection is None:
            if sum(rows.num_rows for rows in buffered) < min(videos, ann.projection_sample):
                continue
            vectors = np.concatenate([segment_matrix(rows[SEARCH_VECTOR]) for rows in buffered])
            projection = Projection.fit(torch.from_numpy(vectors), width, ann)
            for shard in indexes:
                save_projection(catalog, shard.spec.name, projection)
        for rows in buffered:
            projected = project_rows(rows, projection.basis, index.spec, index.embed_dim)
            ids = projected["video_id"].to_pylist()
            for shard in indexes:
                held = shard.holds(ids)
                if held.any():
                    catalog.merge(shard.spec, projected.filter(pa.array(held)), index.embed_dim)
            written += rows.num_rows
        buffered = []
        progress(written, videos)
    return written, projection


def update_indexes(catalog: Catalog, table: Table, ann: AnnConfig, progress: Callable[[str], None]) -> IndexUpdate:
    """Bring a video index table's own indexes and its segment rows up to date with its rows (`ensure_indexes`,
    `ensure_segment_rows`): what was done, and whether vector indexes were (re)built with `ann`'s settings."""
    columns = ensure_indexes(table, ann, segment_vector_width(table.schema))
    rows = ensure_segment_rows(catalog, table, ann, progress)
    return IndexUpdate(columns.actions + rows.actions, columns.vector_indexes_built or rows.vector_indexes_built)


def refresh_indexes(
    catalog: Catalog,
    table: Table,
    index: CheckpointIndex,
    ann: AnnConfig,
    projection: Projection,
    progress: Callable[[str], None],
) -> tuple[IndexUpdate, Projection]:
    """Build or bring up to date the table's indexes (and its segment rows, telling `progress` how a rebuild goes);
    when that (re)built the vector indexes with other settings than the projection records, store the new ones, so
    that upkeep rebuilds them the same way."""
    update = update_indexes(catalog, table, ann, progress)
    lookup = ensure_id_lookup(catalog.open_existing(FRAMES))
    update = IndexUpdate(update.actions + lookup, update.vector_indexes_built)
    if update.vector_indexes_built and projection.ann != asdict(ann):
        projection = replace(projection, ann=asdict(ann))
        save_projection(catalog, index.spec.name, projection)
    return update, projection
