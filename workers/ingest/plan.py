"""What an ingest run has to do: given the videos its sources list (with their content ids) and what the database
already holds, which videos to decode, which captions to store and which texts to encode, and what it skips and
why. Plain code over sets of keys, so the rules (duplicates by content, known failures, retries) are testable
without Ray or Prefect."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from glscl.backbone_config import BackboneConfig
from schemas.catalog import Catalog, sql_string
from schemas.tables import CAPTIONS, FRAME_IMAGES, FRAMES, TEXTS, VIDEO_FAILED, VIDEOS
from workers.ingest.hashing import text_id
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import VideoItem


@dataclass
class Discovery:
    """What a run has to do: videos to decode, captions to store and encode, and what it skips and why."""

    pending: list[dict]
    captions: list[dict]
    texts: list[dict]
    counts: Counter
    failures: Counter


@dataclass(frozen=True)
class StoredKeys:
    """Keys the database already holds for one backbone, sampling and text length."""

    encoded_videos: set[str]
    failed_videos: set[str]
    captions: set[str]
    encoded_texts: set[str]


def stored_keys(
    catalog: Catalog, backbone: BackboneConfig, sampling: SamplingConfig, max_words: int, keep_frames: bool = False
) -> StoredKeys:
    """Videos encoded with this backbone and sampling (and, for a run that keeps frames, whose frames are kept:
    the others are decoded again, their features merged as a no-op), videos stored as failed, stored captions,
    texts encoded with this backbone and length."""
    model = sql_string(backbone.model_id)
    sampling_hash = sql_string(sampling.hash(backbone.image_size))
    encoded = catalog.scan(FRAMES, ["video_id"], f"model_id = {model} AND sampling_hash = {sampling_hash}")
    done = set(encoded["video_id"].to_pylist())
    if keep_frames:
        kept = catalog.scan(FRAME_IMAGES, ["video_id"], f"sampling_hash = {sampling_hash}")
        done &= set(kept["video_id"].to_pylist())
    failed = catalog.scan(VIDEOS, ["video_id"], f"status = {sql_string(VIDEO_FAILED)}")
    captions = catalog.scan(CAPTIONS, ["caption_id"])
    texts = catalog.scan(TEXTS, ["caption_id"], f"model_id = {model} AND max_words = {int(max_words)}")
    return StoredKeys(
        done,
        set(failed["video_id"].to_pylist()),
        set(captions["caption_id"].to_pylist()),
        set(texts["caption_id"].to_pylist()),
    )


def caption_rows(item: VideoItem, video_id: str) -> list[dict]:
    """One `captions` row per caption of the item (sentences and the paragraph), keyed by their content."""
    return [
        {
            "caption_id": text_id(video_id, item.dataset, item.split, item.source_id, c.kind, c.order, c.text),
            "video_id": video_id,
            "source_id": item.source_id,
            "dataset": item.dataset,
            "split": item.split,
            "kind": c.kind,
            "order": c.order,
            "text": c.text,
            "start_s": c.start,
            "end_s": c.end,
        }
        for c in item.captions
    ]


def plan_ingest(
    items: list[VideoItem], ids: list[str | None], stored: StoredKeys, retry_failed: bool, counts: Counter
) -> Discovery:
    """Decide each listed video's fate (decode, already ingested, known failed, duplicate content) and which of
    their captions and texts are new; `counts` arrives with what reading the sources counted."""
    pending, captions, seen = [], [], set()
    for item, video_id in zip(items, ids, strict=True):
        counts["discovered"] += 1
        if video_id is None:
            video_id = "unreadable-" + text_id(item.path)
        captions.extend(caption_rows(item, video_id))
        if video_id in seen:
            counts["duplicate_content"] += 1
            continue
        seen.add(video_id)
        if video_id in stored.encoded_videos:
            counts["already_ingested"] += 1
        elif video_id in stored.failed_videos and not retry_failed:
            counts["known_failed"] += 1
        else:
            pending.append(
                {
                    "video_id": video_id,
                    "source_id": item.source_id,
                    "source_path": item.path,
                    "path": item.path,
                    "dataset": item.dataset,
                    "split": item.split,
                    "size_bytes": _size(item.path),
                    "retry": video_id in stored.failed_videos,
                }
            )
    unique_captions = list({c["caption_id"]: c for c in captions}.values())
    new_captions = [c for c in unique_captions if c["caption_id"] not in stored.captions]
    texts = [
        {"caption_id": c["caption_id"], "text": c["text"]}
        for c in unique_captions
        if c["caption_id"] not in stored.encoded_texts
    ]
    counts["pending"] = len(pending)
    return Discovery(pending, new_captions, texts, counts, Counter())


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
