"""Recognise a collection (a folder of videos, a CSV/Parquet manifest, or an ActivityNet Captions annotation file
with a video root) and list its videos with their captions. Malformed input fails fast, naming file and entry."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from schemas.tables import CAPTION_PARAGRAPH, CAPTION_SENTENCE

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
MANIFEST_EXTENSIONS = (".csv", ".parquet")


class SourceError(ValueError):
    """A collection that cannot be read: the message names the file and the bad entry."""


@dataclass(frozen=True)
class CaptionItem:
    """One text describing a video: a sentence (with its time span when known) or a whole paragraph."""

    text: str
    order: int
    kind: str = CAPTION_SENTENCE
    start: float | None = None
    end: float | None = None


@dataclass
class VideoItem:
    """A video file to ingest, where it came from and the captions that describe it."""

    path: str
    source_id: str
    dataset: str
    split: str
    captions: list[CaptionItem] = field(default_factory=list)


@dataclass
class Collection:
    """What a source holds: the videos found and the annotated ids whose video file is missing."""

    videos: list[VideoItem]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source: the video root of an annotation file, and split or dataset names to force."""

    video_root: str | None = None
    split: str | None = None
    dataset: str | None = None


def read_source(source: str | Path, options: SourceOptions) -> Collection:
    """Read a folder, a manifest or an ActivityNet annotation file into a Collection."""
    path = Path(source)
    collection = _read_any(path, options)
    if options.dataset:
        for video in collection.videos:
            video.dataset = options.dataset
    return collection


def check_source(source: str | Path, options: SourceOptions) -> None:
    """What can be checked of a source at once, before any flow starts (seconds before the first row): it exists, it
    is of a known kind, a folder holds at least one video, an annotation file has its video root. Reading it whole
    (`read_source`) checks the rest."""
    path = Path(source)
    kind = _kind(path, options)
    if kind == "folder" and next(_video_paths(path), None) is None:
        raise _no_videos(path)
    if kind == "annotations":
        _check_video_root(Path(options.video_root))


def _read_any(path: Path, options: SourceOptions) -> Collection:
    split = options.split
    kind = _kind(path, options)
    if kind == "folder":
        return read_folder(path, split or "all")
    if kind == "manifest":
        return read_manifest(path, split)
    return read_activitynet(path, Path(options.video_root), split)


def _kind(path: Path, options: SourceOptions) -> str:
    """ "folder", "manifest" or "annotations" (an ActivityNet .json, which needs a video root); else a SourceError."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise SourceError(f"{path}: no such file or folder")
    if path.suffix.lower() in MANIFEST_EXTENSIONS:
        return "manifest"
    if path.suffix.lower() == ".json":
        if options.video_root is None:
            raise SourceError(f"{path}: an ActivityNet annotation file needs --video-root (the folder of its videos)")
        return "annotations"
    raise SourceError(f"{path}: not a folder, a manifest ({', '.join(MANIFEST_EXTENSIONS)}) or an annotation .json")


def _video_paths(root: Path) -> Iterator[Path]:
    """Video files under `root` (recursive, common containers), in the order the file system lists them."""
    return (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _video_files(root: Path) -> list[Path]:
    return sorted(_video_paths(root))


def _no_videos(root: Path) -> SourceError:
    return SourceError(f"no videos found in {root}; looked for {looked_for()} (recursively)")


def _check_video_root(root: Path) -> None:
    if not root.is_dir():
        raise SourceError(f"{root}: the video root is not a folder")


def absolute(path: Path) -> str:
    """The path as stored: absolute (symbolic links kept, `..` folded), so that the service and later runs find the
    file from any working folder."""
    return os.path.abspath(path)


def looked_for() -> str:
    """The file patterns a folder is searched for, for messages."""
    return ", ".join(f"*{extension}" for extension in VIDEO_EXTENSIONS)


def read_folder(root: Path, split: str) -> Collection:
    """Every video file under `root` (recursive, common containers); ids are paths relative to the root. A folder
    without any is an error: an ingest that finds nothing has most likely been pointed at the wrong folder."""
    files = _video_files(root)
    if not files:
        raise _no_videos(root)
    videos = [
        VideoItem(absolute(p), str(p.relative_to(root).with_suffix("")), root.resolve().name, split) for p in files
    ]
    return Collection(videos)


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path) if path.suffix.lower() == ".parquet" else pa_csv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise SourceError(f"{path}: cannot be read as a {path.suffix[1:]} manifest: {error}") from None


def read_manifest(path: Path, split: str | None) -> Collection:
    """A CSV/Parquet manifest with a `path` column and optional `id`, `split`, `caption` columns."""
    rows = _read_table(path).to_pylist()
    if not rows or "path" not in rows[0]:
        found = ", ".join(rows[0]) if rows else "no rows"
        raise SourceError(f"{path}: a manifest needs a 'path' column (found: {found})")
    by_path: dict[str, VideoItem] = {}
    for number, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 0):
        value = row.get("path")
        if not isinstance(value, str) or not value.strip():
            raise SourceError(f"{path}: row {number} has an empty 'path'")
        video_path = Path(value) if Path(value).is_absolute() else path.parent / value
        key = absolute(video_path)
        item = by_path.get(key)
        if item is None:
            item = VideoItem(
                key,
                str(row.get("id") or video_path.stem),
                path.stem,
                str(split or row.get("split") or "all"),
            )
            by_path[key] = item
        caption = row.get("caption")
        if isinstance(caption, str) and caption.strip():
            item.captions.append(CaptionItem(caption.strip(), len(item.captions)))
    return Collection(list(by_path.values()))


def _split_from_name(path: Path) -> str:
    stem = path.stem.lower()
    for name in ("train", "val_1", "val_2", "val", "test"):
        if stem == name or stem.startswith(name + "_") or stem.endswith("_" + name):
            return name
    return stem


def _check_entry(path: Path, video_id: str, entry: object) -> tuple[float, list[list[float]], list[str]]:
    where = f"{path}: entry {video_id!r}"
    if not isinstance(entry, dict):
        raise SourceError(f"{where} is not an object with duration, timestamps and sentences")
    missing = [k for k in ("duration", "timestamps", "sentences") if k not in entry]
    if missing:
        raise SourceError(f"{where} lacks {', '.join(missing)}")
    duration, stamps, sentences = entry["duration"], entry["timestamps"], entry["sentences"]
    if not isinstance(duration, int | float) or not math.isfinite(duration) or duration <= 0:
        raise SourceError(f"{where} has an invalid duration {duration!r}")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise SourceError(f"{where}: sentences must be a list of strings")
    if not isinstance(stamps, list) or len(stamps) != len(sentences):
        raise SourceError(f"{where}: {len(sentences)} sentences but timestamps is not a list of as many spans")
    for span in stamps:
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(t, int | float) for t in span)):
            raise SourceError(f"{where}: timestamp {span!r} is not a [start, end] pair of numbers")
    return float(duration), stamps, sentences


def _index_videos(root: Path) -> dict[str, Path]:
    _check_video_root(root)
    index: dict[str, Path] = {}
    for file in _video_files(root):
        index.setdefault(file.stem, file)
    return index


def read_activitynet(path: Path, video_root: Path, split: str | None) -> Collection:
    """ActivityNet Captions (`{id: {duration, timestamps, sentences}}`): a sentence row per event plus the
    paragraph (all sentences in order) that the paragraph-to-video protocol retrieves with."""
    try:
        annotations = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(annotations, dict):
        raise SourceError(f"{path}: expected an object mapping video ids to annotations")
    files = _index_videos(video_root)
    split_name = split or _split_from_name(path)
    collection = Collection([])
    for video_id, entry in annotations.items():
        duration, stamps, sentences = _check_entry(path, video_id, entry)
        file = files.get(video_id) or files.get(f"v_{video_id}")
        if file is None:
            collection.missing.append(video_id)
            continue
        texts = [s.strip() for s in sentences]
        captions = [
            CaptionItem(text, order, CAPTION_SENTENCE, float(span[0]), float(span[1]))
            for order, (text, span) in enumerate(zip(texts, stamps, strict=True))
        ]
        captions.append(CaptionItem(" ".join(texts), -1, CAPTION_PARAGRAPH, 0.0, float(math.ceil(duration))))
        collection.videos.append(VideoItem(absolute(file), video_id, "activitynet", split_name, captions))
    if annotations and not collection.videos:
        example = next(iter(annotations))
        raise SourceError(
            f"{path}: none of its {len(annotations)} videos is under --video-root {video_root} (looked for "
            f"{example}.mp4 or v_{example}.mp4 and the other containers: {looked_for()})"
        )
    return collection
