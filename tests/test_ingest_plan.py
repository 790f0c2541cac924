"""What an ingest run decides to do, from the listed videos and the keys already stored: the rules behind resuming,
deduplication by content and retrying failures (workers/ingest/plan.py), without Ray or Prefect."""

from __future__ import annotations

from collections import Counter

from workers.ingest.plan import StoredKeys, caption_rows, plan_ingest
from workers.ingest.sources import CaptionItem, VideoItem


def item(name: str, *sentences: str) -> VideoItem:
    captions = [CaptionItem(text, order) for order, text in enumerate(sentences)]
    return VideoItem(path=f"/videos/{name}.mp4", source_id=name, dataset="d", split="train", captions=captions)


def test_each_video_is_decoded_once_unless_stored_or_known_to_fail() -> None:
    items = [item("a", "a dog runs"), item("b", "a cat sits"), item("copy-of-a", "a dog runs"), item("c"), item("d")]
    ids = ["id-a", "id-b", "id-a", "id-c", None]
    stored = StoredKeys(encoded_videos={"id-b"}, failed_videos={"id-c"}, captions=set(), encoded_texts=set())
    plan = plan_ingest(items, ids, stored, retry_failed=False, counts=Counter(missing=2))
    assert [video["source_id"] for video in plan.pending] == ["a", "d"]
    assert plan.pending[1]["video_id"].startswith("unreadable-")  # hashed from its path, decoded to record why
    assert plan.counts == Counter(
        missing=2, discovered=5, duplicate_content=1, already_ingested=1, known_failed=1, pending=2
    )
    retried = plan_ingest(items, ids, stored, retry_failed=True, counts=Counter())
    assert [(v["source_id"], v["retry"]) for v in retried.pending] == [("a", False), ("c", True), ("d", False)]


def test_only_new_captions_are_stored_and_only_unencoded_texts_encoded() -> None:
    items = [item("a", "a dog runs", "it jumps"), item("b", "a cat sits")]
    first = {row["caption_id"] for row in caption_rows(items[0], "id-a")}
    stored = StoredKeys(set(), set(), captions=first, encoded_texts=set())
    plan = plan_ingest(items, ["id-a", "id-b"], stored, retry_failed=False, counts=Counter())
    assert [c["text"] for c in plan.captions] == ["a cat sits"]
    assert sorted(t["text"] for t in plan.texts) == ["a cat sits", "a dog runs", "it jumps"]
