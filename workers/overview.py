"""What one database holds, for `glscl tables` and the demo's report: every table's rows and schema version, per
split the videos, frame rows, captions and text rows, the backbones whose features are stored, and each
checkpoint's video index with the state of its indexes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from schemas.catalog import Catalog, stored_version
from schemas.store import StoreConfig
from schemas.tables import (
    CAPTION_PARAGRAPH,
    CAPTION_SENTENCE,
    CAPTIONS,
    CHECKPOINT_KEY,
    FRAMES,
    MODEL_ID_KEY,
    TEXTS,
    VIDEO_FAILED,
    VIDEO_OK,
    VIDEOS,
)
from workers.index.indexes import indexed_columns, unindexed_rows


@dataclass
class TableCount:
    """One stored table: its rows, the glscl schema version it records ("none": not a glscl table) and its
    LanceDB version."""

    name: str
    rows: int
    schema_version: str
    version: int


@dataclass
class SplitCount:
    """What one split holds: videos by status, frame rows (every backbone), captions by kind, text rows."""

    split: str
    videos_ok: int
    videos_failed: int
    frames_rows: int
    sentences: int
    paragraphs: int
    texts_rows: int


@dataclass
class VideoIndexState:
    """One checkpoint's video index: rows, the checkpoint and backbone it was built with, its indexed columns by
    kind and the rows each index does not cover yet (folded in by `glscl index` or `glscl maintain`)."""

    name: str
    rows: int
    checkpoint_sha256: str
    model_id: str
    schema_version: str
    vector_indexes: list[str]
    fts_indexes: list[str]
    scalar_indexes: list[str]
    unindexed_rows: dict[str, int]


@dataclass
class DatabaseOverview:
    """Everything `glscl tables` reports about one database."""

    uri: str
    tables: list[TableCount]
    splits: list[SplitCount]
    frames_models: dict[str, int]
    texts_models: dict[str, int]
    video_indexes: list[VideoIndexState]

    def to_markdown(self) -> str:
        """The overview as Markdown tables."""
        if not self.tables:
            return f"No tables in {self.uri}."
        lines = [f"Tables in {self.uri}:", "", "| table | rows | schema version |", "|---|---|---|"]
        lines += [f"| {t.name} | {t.rows} | {t.schema_version} |" for t in self.tables]
        lines += [
            "",
            "| split | videos ok | videos failed | frames rows | sentences | paragraphs | texts rows |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s.split} | {s.videos_ok} | {s.videos_failed} | {s.frames_rows} | {s.sentences} | {s.paragraphs} | "
            f"{s.texts_rows} |"
            for s in self.splits
        ]
        lines += ["", "| backbone | frames rows | texts rows |", "|---|---|---|"]
        lines += [
            f"| {model} | {self.frames_models.get(model, 0)} | {self.texts_models.get(model, 0)} |"
            for model in sorted(self.frames_models.keys() | self.texts_models.keys())
        ]
        if self.video_indexes:
            lines += [
                "",
                "| video index | checkpoint | backbone | rows | vector indexes | full-text | scalar | unindexed rows |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for v in self.video_indexes:
                unindexed = ", ".join(f"{name} {n}" for name, n in sorted(v.unindexed_rows.items()) if n) or "0"
                lines.append(
                    f"| {v.name} | {v.checkpoint_sha256[:16]} | {v.model_id} | {v.rows} | "
                    f"{', '.join(v.vector_indexes) or 'none'} | {', '.join(v.fts_indexes) or 'none'} | "
                    f"{', '.join(v.scalar_indexes) or 'none'} | {unindexed} |"
                )
        return "\n".join(lines)


def split_counts(catalog: Catalog) -> tuple[list[SplitCount], Counter, Counter]:
    """Per split counts, and the frame and text rows of each backbone model id."""
    videos = catalog.scan(VIDEOS, ["video_id", "split", "status"]).to_pylist()
    split_of = {v["video_id"]: v["split"] for v in videos}
    status = Counter((v["split"], v["status"]) for v in videos)
    frames = catalog.scan(FRAMES, ["video_id", "model_id"]).to_pylist()
    frames_rows = Counter(split_of.get(f["video_id"]) for f in frames)
    captions = catalog.scan(CAPTIONS, ["caption_id", "split", "kind"]).to_pylist()
    caption_split = {c["caption_id"]: c["split"] for c in captions}
    kinds = Counter((c["split"], c["kind"]) for c in captions)
    texts = catalog.scan(TEXTS, ["caption_id", "model_id"]).to_pylist()
    texts_rows = Counter(caption_split.get(t["caption_id"]) for t in texts)
    splits = [
        SplitCount(
            split=split,
            videos_ok=status[(split, VIDEO_OK)],
            videos_failed=status[(split, VIDEO_FAILED)],
            frames_rows=frames_rows[split],
            sentences=kinds[(split, CAPTION_SENTENCE)],
            paragraphs=kinds[(split, CAPTION_PARAGRAPH)],
            texts_rows=texts_rows[split],
        )
        for split in sorted(set(split_of.values()) | set(caption_split.values()))
    ]
    return splits, Counter(f["model_id"] for f in frames), Counter(t["model_id"] for t in texts)


def database_overview(store: StoreConfig) -> DatabaseOverview:
    """Read what the database at `store` holds (see DatabaseOverview); an empty database gives empty lists."""
    catalog = Catalog(store)
    tables, indexes = [], []
    for name in catalog.table_names():
        table = catalog.open_table(name)
        tables.append(TableCount(name, table.count_rows(), stored_version(table.schema), table.version))
        metadata = table.schema.metadata or {}
        if CHECKPOINT_KEY.encode() in metadata:
            kinds = indexed_columns(table)
            indexes.append(
                VideoIndexState(
                    name=name,
                    rows=tables[-1].rows,
                    checkpoint_sha256=metadata[CHECKPOINT_KEY.encode()].decode(),
                    model_id=metadata.get(MODEL_ID_KEY.encode(), b"").decode(),
                    schema_version=tables[-1].schema_version,
                    vector_indexes=kinds["vector"],
                    fts_indexes=kinds["fts"],
                    scalar_indexes=kinds["scalar"],
                    unindexed_rows=unindexed_rows(table),
                )
            )
    splits, frames_models, texts_models = split_counts(catalog)
    return DatabaseOverview(store.uri, tables, splits, dict(frames_models), dict(texts_models), indexes)
