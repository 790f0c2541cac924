"""Gallery shards: a checkpoint's video index split by video id into N tables, each searched by its own worker
(a Ray actor, possibly on another node) and indexed on its own, so no table, index or searcher has to hold the
whole gallery. A video's shard is a stable hash of its id: every process, run and machine puts it in the same one.
The shards share one projection basis, so their candidates' proxy scores compare and merge."""

from __future__ import annotations

import hashlib


def gallery_shard(video_id: str, shards: int) -> int:
    """The shard (0 .. shards - 1) that holds `video_id`: a stable hash of the id, the same in every process."""
    if shards < 1:
        raise ValueError(f"a gallery has at least 1 shard, got {shards}")
    digest = hashlib.blake2b(video_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_table_name(index_name: str, shard: int, shards: int) -> str:
    """The table of one gallery shard of the video index `index_name` (the index itself when unsharded)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be within [0, {shards}), got {shard}")
    return index_name if shards == 1 else f"{index_name}_shard{shard}of{shards}"


def shard_table_names(index_name: str, shards: int) -> list[str]:
    """Every shard table of the video index `index_name`, in shard order."""
    return [shard_table_name(index_name, shard, shards) for shard in range(shards)]
