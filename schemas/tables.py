"""Arrow schemas of every glscl table: the one place where a column name or type is written down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION_KEY = b"glscl.schema_version"
TABLE_NAME_KEY = b"glscl.table"
EMBED_DIM_KEY = b"glscl.embed_dim"
PRIMARY_KEY = b"lance-schema:unenforced-primary-key"
PRIMARY_KEY_POSITION = b"lance-schema:unenforced-primary-key:position"

VIDEO_OK = "ok"
VIDEO_FAILED = "failed"
CAPTION_SENTENCE = "sentence"
CAPTION_PARAGRAPH = "paragraph"

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _vector(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def _multivector(dim: int) -> pa.DataType:
    return pa.list_(pa.list_(pa.float32(), dim))


def _videos(_: int | None) -> list[pa.Field]:
    return [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("video_codec", pa.string()),
        pa.field("has_audio", pa.bool_()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("ingested_at", _TIMESTAMP, nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]


def _frames(dim: int | None) -> list[pa.Field]:
    assert dim is not None
    return [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("sampling_hash", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("features", _multivector(dim), nullable=False),
        pa.field("frame_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("timestamps", pa.list_(pa.float32()), nullable=False),
        pa.field("vector", _vector(dim), nullable=False),
        pa.field("created_at", _TIMESTAMP, nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]


def _frame_images(_: int | None) -> list[pa.Field]:
    return [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("sampling_hash", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),
        pa.field("image_size", pa.int32(), nullable=False),
        pa.field("quality", pa.int32(), nullable=False),
        pa.field("jpeg", pa.list_(pa.binary()), nullable=False),
        pa.field("frame_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("created_at", _TIMESTAMP, nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]


def _captions(_: int | None) -> list[pa.Field]:
    return [
        pa.field("caption_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("order", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("run_id", pa.string(), nullable=False),
    ]


def _texts(dim: int | None) -> list[pa.Field]:
    assert dim is not None
    return [
        pa.field("caption_id", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("max_words", pa.int32(), nullable=False),
        pa.field("vector", _vector(dim), nullable=False),
        pa.field("tokens", _multivector(dim), nullable=False),
        pa.field("token_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("created_at", _TIMESTAMP, nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]


def _video_index(
    num_queries: int, vector_dim: int, segments: int, slots: int, encodings: str
) -> Callable[[int | None], list[pa.Field]]:
    def fields(dim: int | None) -> list[pa.Field]:
        assert dim is not None
        packed = encodings_type(slots, num_queries, dim, encodings)
        layout = _ENCODINGS_LAYOUTS[encodings].format(slots=slots, concepts=num_queries, dim=dim)
        return [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("source_path", pa.string(), nullable=False),
            pa.field("duration_s", pa.float64()),
            pa.field("ingested_at", _TIMESTAMP, nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("encodings", packed, nullable=False, metadata={LAYOUT_KEY: layout}),
            pa.field("timestamps", pa.list_(pa.float32(), slots), nullable=False),
            *(pa.field(name, _vector(vector_dim), nullable=False) for name in segment_columns(segments)),
            pa.field("indexed_at", _TIMESTAMP, nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
        ]

    return fields


def _projection(_: int | None) -> list[pa.Field]:
    return [
        pa.field("name", pa.string(), nullable=False),
        pa.field("rows", pa.int32(), nullable=False),
        pa.field("cols", pa.int32(), nullable=False),
        pa.field("values", pa.list_(pa.float32()), nullable=False),
        pa.field("fitted_on", pa.int64(), nullable=False),
        pa.field("captured_energy", pa.float64(), nullable=False),
        pa.field("ann", pa.string(), nullable=False),
    ]


def _runs(_: int | None) -> list[pa.Field]:
    return [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("flow", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("started_at", _TIMESTAMP, nullable=False),
        pa.field("finished_at", _TIMESTAMP),
        pa.field("params", pa.string(), nullable=False),
        pa.field("counts", pa.string(), nullable=False),
        pa.field("failures", pa.string(), nullable=False),
        pa.field("timings", pa.string(), nullable=False),
        pa.field("table_versions", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]


def _run_heartbeats(_: int | None) -> list[pa.Field]:
    return [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("pid_namespace", pa.string(), nullable=False),
        pa.field("pid", pa.int64(), nullable=False),
        pa.field("interval_s", pa.float64(), nullable=False),
        pa.field("heartbeat_at", _TIMESTAMP, nullable=False),
    ]


@dataclass(frozen=True)
class TableSpec:
    """A table's name, key columns, schema version and schema builder (some schemas depend on the embed dim)."""

    name: str
    key: tuple[str, ...]
    version: int
    fields: Callable[[int | None], list[pa.Field]]
    needs_dim: bool = False
    metadata: tuple[tuple[str, str], ...] = ()

    def schema(self, dim: int | None = None) -> pa.Schema:
        """The Arrow schema, with the table name, schema version and embed dim recorded in its metadata."""
        if self.needs_dim and not dim:
            raise ValueError(f"table {self.name!r} needs the embedding dimension to build its schema")
        metadata = {TABLE_NAME_KEY: self.name.encode(), SCHEMA_VERSION_KEY: str(self.version).encode()}
        if self.needs_dim:
            metadata[EMBED_DIM_KEY] = str(dim).encode()
        metadata.update({key.encode(): value.encode() for key, value in self.metadata})
        # Key columns are Lance unenforced primary keys: then two writers committing the same new key conflict,
        # and merge_insert retries against the latest version instead of storing the row twice.
        fields = [
            f.with_metadata({PRIMARY_KEY: b"true", PRIMARY_KEY_POSITION: str(self.key.index(f.name) + 1).encode()})
            if f.name in self.key
            else f
            for f in self.fields(dim)
        ]
        return pa.schema(fields, metadata=metadata)


def key_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The table's key columns, as its schema marks them (Lance primary-key field metadata, in key order)."""
    marked = [f for f in schema if (f.metadata or {}).get(PRIMARY_KEY) == b"true"]
    return tuple(f.name for f in sorted(marked, key=lambda f: int(f.metadata[PRIMARY_KEY_POSITION])))


VIDEOS = TableSpec("videos", ("video_id",), 1, _videos)
FRAMES = TableSpec("frames", ("video_id", "model_id", "sampling_hash"), 1, _frames, needs_dim=True)
CAPTIONS = TableSpec("captions", ("caption_id",), 1, _captions)
TEXTS = TableSpec("texts", ("caption_id", "model_id", "max_words"), 1, _texts, needs_dim=True)
# The sampled frames themselves (JPEG, the valid ones in order), kept when ingest is asked to (`--keep-frames`), so
# that full fine-tuning reads them instead of decoding every source video in every epoch. Keyed by the sampling
# (which includes the image size), not the model: any backbone with that input size reads them.
FRAME_IMAGES = TableSpec("frame_images", ("video_id", "sampling_hash"), 1, _frame_images)
RUNS = TableSpec("runs", ("run_id",), 1, _runs)
# Where each run's process runs and when it last showed it was alive: a table of its own, so that a heartbeat never
# rewrites (or races with) the run's `runs` row, and `runs` keeps its version 1 schema.
RUN_HEARTBEATS = TableSpec("run_heartbeats", ("run_id",), 1, _run_heartbeats)

VIDEO_INDEX_PREFIX = "video_index_"
CHECKPOINT_KEY = "glscl.checkpoint_sha256"
MODEL_ID_KEY = "glscl.backbone_model_id"
VIDEO_INDEX_VERSION = 3
SEGMENT_VECTOR_PREFIX = "vector_"
LAYOUT_KEY = b"glscl.layout"
# How the packed `encodings` column stores a video's encodings (workers/index/packed_encodings.py); a table's form is
# the value type of its column, so every reader reads either.
ENCODINGS_FORMS = ("float16", "int8")
SCALE_BYTES = 4
_ENCODINGS_VALUES = {"float16": pa.float16(), "int8": pa.int8()}
_ENCODINGS_LAYOUTS = {
    "float16": "float16 [frames {slots}x{dim} | concepts {concepts}x{dim} | frame mask {slots}]",
    "int8": "int8 [frame codes {slots}x{dim} | concept codes {concepts}x{dim} | float32 little-endian scales of "
    "{slots} frames then {concepts} concepts | frame mask {slots}]",
}
# The `videos` columns a video index copies for each video; searches filter on them.
INDEX_FILTER_COLUMNS = ("video_id", "dataset", "split", "source_path", "duration_s", "ingested_at")
# The `video_index` columns a search reads for the hits it returns (the top k only).
INDEX_HIT_COLUMNS = ("video_id", "source_path", "dataset", "split", "duration_s", "text", "timestamps")


def video_index_name(checkpoint_sha: str) -> str:
    """The name of a checkpoint's video index table."""
    return VIDEO_INDEX_PREFIX + checkpoint_sha[:16]


def video_index_spec(
    checkpoint_sha: str,
    model_id: str,
    num_queries: int,
    vector_dim: int,
    segments: int,
    slots: int,
    encodings: str = "float16",
) -> TableSpec:
    """The `video_index` table of one checkpoint: per-video GLSCL encodings packed in one column in the form
    `encodings` (see workers/index/packed_encodings.py), one projected ANN vector per time segment, filter metadata.

    One table per checkpoint (named by its hash), so a vector index never mixes two models' vectors. A video's
    encodings share one column because on a gallery larger than memory each column a query reads is another
    random read per candidate.
    """
    return TableSpec(
        video_index_name(checkpoint_sha),
        ("video_id",),
        VIDEO_INDEX_VERSION,
        _video_index(num_queries, vector_dim, segments, slots, encodings),
        needs_dim=True,
        metadata=((CHECKPOINT_KEY, checkpoint_sha), (MODEL_ID_KEY, model_id)),
    )


def encodings_width(slots: int, num_queries: int, dim: int, form: str = "float16") -> int:
    """Values per row of a video index's packed `encodings` column in `form`: `slots` frames and `num_queries`
    concepts of `dim` dims, the int8 form's float32 scale (4 bytes) per frame and concept, then the frame mask
    (layout in workers/index/packed_encodings.py)."""
    values = slots * dim + num_queries * dim + slots
    if form == "int8":
        return values + SCALE_BYTES * (slots + num_queries)
    if form != "float16":
        raise ValueError(f"encodings must be one of {ENCODINGS_FORMS}, got {form!r}")
    return values


def encodings_type(slots: int, num_queries: int, dim: int, form: str = "float16") -> pa.DataType:
    """The Arrow type of a packed `encodings` column in `form`: a fixed-size list of float16 or int8 values."""
    return pa.list_(_ENCODINGS_VALUES[form], encodings_width(slots, num_queries, dim, form))


def encodings_form(data_type: pa.DataType) -> str:
    """The form ("float16" or "int8") of a packed `encodings` column, from its value type."""
    value_type = data_type.value_type if pa.types.is_fixed_size_list(data_type) else None
    form = next((form for form, values in _ENCODINGS_VALUES.items() if values == value_type), None)
    if form is None:
        raise ValueError(f"an encodings column of type {data_type} is not a packing this glscl reads")
    return form


def segment_columns(segments: int) -> list[str]:
    """The ANN vector column of each time segment, in segment order."""
    return [f"{SEGMENT_VECTOR_PREFIX}{index}" for index in range(segments)]


def stored_segment_columns(schema: pa.Schema) -> list[str]:
    """The segment vector columns of a `video_index` schema."""
    return [name for name in schema.names if name.startswith(SEGMENT_VECTOR_PREFIX)]


def segment_vector_width(schema: pa.Schema) -> int:
    """Width of the projected segment vectors of a `video_index` schema."""
    return schema.field(stored_segment_columns(schema)[0]).type.list_size


SEGMENT_ROW_VECTOR = "segment_vector"
_SEGMENT_ROWS_INFIX = "_segments_g"


def _segment_rows(width: int) -> Callable[[int | None], list[pa.Field]]:
    def fields(_: int | None) -> list[pa.Field]:
        return [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("segment", pa.int16(), nullable=False),
            pa.field(SEGMENT_ROW_VECTOR, pa.list_(pa.float32(), width), nullable=False),
        ]

    return fields


def segment_rows_spec(index_name: str, generation: int, width: int) -> TableSpec:
    """One generation of the companion of a video index that holds each (video, segment) vector as a row, so that
    one vector index covers them all and a query runs one ANN search instead of one per segment column (workers/
    search/segment_rows.py). Derived from the video index and rebuilt whole, as the next generation, when its
    videos change."""
    return TableSpec(segment_rows_name(index_name, generation), ("video_id", "segment"), 1, _segment_rows(width))


def segment_rows_name(index_name: str, generation: int) -> str:
    """The table of one generation of a video index's segment rows."""
    return f"{index_name}{_SEGMENT_ROWS_INFIX}{generation}"


def segment_rows_generation(index_name: str, table_name: str) -> int | None:
    """The generation of the video index's segment rows that `table_name` holds, or None for another table."""
    prefix = f"{index_name}{_SEGMENT_ROWS_INFIX}"
    number = table_name.removeprefix(prefix)
    return int(number) if table_name.startswith(prefix) and number.isdigit() else None


def projection_spec(index_name: str) -> TableSpec:
    """The table holding the ANN projection basis of one video index and the settings of its vector index (a
    table, so object stores work too)."""
    return TableSpec(index_name + "_projection", ("name",), 2, _projection)


ALL_TABLES: tuple[TableSpec, ...] = (VIDEOS, FRAMES, CAPTIONS, TEXTS, RUNS, RUN_HEARTBEATS)
# Tables only some stores have (created by an option), reported beside the others when present.
OPTIONAL_TABLES: tuple[TableSpec, ...] = (FRAME_IMAGES,)
