"""The order test of the synthetic benchmark: for each held-out two-event video, pick the true paragraph among
four (true, events swapped, first direction flipped, second direction flipped; chance 25%). The synthetic
motion is timed so that mean pooling is blind to direction and order, so only a temporal model can pass it;
R@1 over random captions mostly measures which objects appear."""

from __future__ import annotations

import numpy as np
import torch

from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig
from glscl.baselines import LinearMeanPooling, MeanPooling
from glscl.model import GLSCL
from schemas.catalog import Catalog, sql_string
from workers.features import FeatureQuery, SplitFeatures, read_split, video_sentences
from workers.synthetic.videos import order_test_candidates

CANDIDATES = 4


def candidate_paragraphs(catalog: Catalog, features: SplitFeatures, split: str) -> tuple[list[int], list[str]]:
    """Videos (gallery indices) with exactly two events, and their 4 candidate paragraphs each, true first."""
    sentences = video_sentences(catalog, f"split = {sql_string(split)}")
    videos, paragraphs = [], []
    for index, video_id in enumerate(features.video_ids):
        events = sentences.get(video_id, [])
        if len(events) == 2:
            videos.append(index)
            paragraphs += [" ".join(candidate) for candidate in order_test_candidates(events)]
    return videos, paragraphs


# The wrong candidates, by column: what a scorer must notice to reject each.
WRONG = {"events swapped": 1, "first direction flipped": 2, "second direction flipped": 3}


def accuracy(scores: torch.Tensor, against: slice = slice(1, None)) -> float:
    """Percent of rows [N, 4] whose true candidate (column 0) scores strictly above the `against` columns (all
    three others by default)."""
    return 100.0 * float((scores[:, 0:1] > scores[:, against]).all(dim=1).float().mean())


@torch.no_grad()
def order_test(
    catalog: Catalog,
    query: FeatureQuery,
    backbone: BackboneConfig,
    model: GLSCL,
    linear: LinearMeanPooling,
) -> dict[str, float]:
    """Order-test accuracy (%) of the trained GLSCL head, the trained linear mean-pooling baseline and plain mean
    pooling, on the two-event videos of `query.split`: "<scorer>" over all four candidates (chance 25%), and
    "<scorer> vs <wrong>", the true paragraph against one wrong candidate alone (chance 50%), which shows whether
    a scorer misses event order or motion direction."""
    features = read_split(catalog, query)
    videos, paragraphs = candidate_paragraphs(catalog, features, query.split)
    if not videos:
        raise ValueError(f"split {query.split!r} has no two-event videos for the order test")
    sentence, tokens, mask = (torch.from_numpy(a) for a in Backbone(backbone).encode_texts(paragraphs, query.max_words))
    index = torch.from_numpy(np.repeat(videos, CANDIDATES))
    frames, frame_mask = torch.from_numpy(features.video_feats)[index], torch.from_numpy(features.video_mask)[index]
    text_enc = model.encode_text(sentence, tokens, mask)
    video_enc = model.encode_video(frames, frame_mask)
    shape = (len(videos), CANDIDATES)
    scores = {
        "GLSCL trained": model.pair_scores(text_enc, video_enc).reshape(shape),
        "mean pooling + linear (trained)": linear.pair_scores(sentence, frames, frame_mask).reshape(shape),
        "mean pooling (no training)": MeanPooling().pair_scores(sentence, frames, frame_mask).reshape(shape),
    }
    results = {"videos": float(len(videos))}
    for name, table in scores.items():
        results[name] = accuracy(table)
        for wrong, column in WRONG.items():
            results[f"{name} vs {wrong}"] = accuracy(table, slice(column, column + 1))
    return results
