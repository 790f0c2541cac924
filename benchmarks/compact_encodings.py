"""How exactly a benchmark gallery's stored encodings rank: every query's exact GLSCL top-10 scored from the packed
encodings as the table stores them (read and unpacked as the searcher reads them, e.g. int8), against the exact
top-10 of the float encodings the gallery was built from (`search_bench.build`'s reference). The two-stage sweep
mixes this loss with the candidate stage's; here it stands alone."""

from __future__ import annotations

import numpy as np
import torch

from glscl.checkpoint import load_checkpoint
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from schemas.tables import encodings_form
from workers.index.packed_encodings import packed_slots, unpack_encodings


@torch.inference_mode()
def stored_exactness(built: dict, chunk: int) -> dict:
    """Top-10 overlap and top-1 agreement of the stored encodings' exact ranking with the reference one, over the
    gallery `built` (`search_bench.load_or_build`), read `chunk` rows at a time; with the stored bytes per video."""
    model, config, _ = load_checkpoint(built["checkpoint"])
    model.eval()
    table = Catalog(StoreConfig(built["store"])).open_table(built["table"])
    field = table.schema.field("encodings")
    slots = packed_slots(field, config.num_queries, config.embed_dim)
    text, reference = built["text"], built["exact_top10"]
    best_scores = torch.full((len(reference), 10), -torch.inf)
    best_ids = torch.zeros((len(reference), 10), dtype=torch.long)
    for low in range(0, table.count_rows(), chunk):
        rows = table.search().select(["video_id", "encodings"]).offset(low).limit(chunk).to_arrow()
        video = unpack_encodings(rows["encodings"], slots, config.num_queries, config.embed_dim)
        ids = torch.tensor([int(video_id[3:]) for video_id in rows["video_id"].to_pylist()])
        merged = torch.cat([best_scores, model.score(text, video)], 1)
        best_scores, order = merged.topk(10, dim=1)
        best_ids = torch.cat([best_ids, ids.expand(len(reference), -1)], 1).gather(1, order)
    stored = best_ids.numpy()
    pairs = zip(stored.tolist(), reference.tolist(), strict=True)
    overlap = [len(set(found) & set(exact)) / 10 for found, exact in pairs]
    return {
        "encodings": encodings_form(field.type),
        "bytes_per_video": field.type.list_size * field.type.value_type.bit_width // 8,
        "top10_overlap": float(np.mean(overlap)),
        "top10_overlap_min": float(np.min(overlap)),
        "top1_agreement": float(np.mean(stored[:, 0] == reference[:, 0])),
    }
