"""How the search benchmarks score a method's hits, one computation for every row (two-stage settings, the mean-pool
baseline, exact rankings): recall@1 and recall@10 of the exact GLSCL top-10, and how often the query's own target
video is the first hit or among the first ten (target@1, target@10), overall and by query kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_fields(found: Sequence[Sequence[int]], exact: np.ndarray, targets: np.ndarray, kinds: np.ndarray) -> dict:
    """Scores of the hits `found` per query (video numbers, best first) against the exact GLSCL top-10 `exact`
    [Q, 10] and the target video numbers `targets` [Q]; `kinds` [Q] labels each query (sentence, paragraph)."""
    per_query = {
        "recall@1": [float(exact[i, 0] in hits[:1]) for i, hits in enumerate(found)],
        "recall@10": [len(set(hits[:10]) & set(exact[i].tolist())) / 10 for i, hits in enumerate(found)],
        "target@1": [float(targets[i] in hits[:1]) for i, hits in enumerate(found)],
        "target@10": [float(targets[i] in hits[:10]) for i, hits in enumerate(found)],
    }
    scores = {name: np.asarray(values) for name, values in per_query.items()}
    fields: dict = {name: float(values.mean()) for name, values in scores.items()}
    fields["by_kind"] = {
        str(kind): {"queries": int((kinds == kind).sum())}
        | {name: float(values[kinds == kind].mean()) for name, values in scores.items()}
        for kind in np.unique(kinds)
    }
    return fields
