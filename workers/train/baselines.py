"""The baselines a train run reports beside GLSCL, scored on the same stored features and held-out split: mean
pooling as is, mean pooling with a linear map per side trained on the run's training pairs, and the untrained head."""

from __future__ import annotations

from dataclasses import replace

import torch

from glscl.baselines import LinearMeanPooling, MeanPooling, fit_linear_mean_pooling
from glscl.config import TrainConfig
from glscl.metrics import both_directions
from glscl.training import Trainer, TrainModule
from schemas.catalog import Catalog
from workers.features import FeatureQuery
from workers.split_rows import locate_split, read_vectors
from workers.table_pairs import TablePairs
from workers.train.worker import TrainJob, build_head


def linear_baseline(catalog: Catalog, query: FeatureQuery, train: TrainConfig) -> LinearMeanPooling:
    """Mean pooling + a linear map per side, fitted on the split's training pairs with the run's batch and seed,
    from the stored sentence and mean-pooled video vectors (never the frames)."""
    rows = locate_split(catalog, query)
    sentence, pooled = read_vectors(rows)
    return fit_linear_mean_pooling(
        torch.from_numpy(sentence),
        torch.from_numpy(pooled),
        torch.from_numpy(rows.text_to_video),
        batch=train.batch_size,
        seed=train.seed,
    )


def baseline_metrics(job: TrainJob) -> dict[str, dict]:
    """Held-out metrics of the baselines on the same features: mean pooling as is (CLIP4Clip meanP), mean pooling
    with a linear map per side trained on the same training pairs (order-blind), and the untrained head. The
    pooling baselines read stored vectors and the head reads batch by batch, so no split is held whole."""
    catalog = Catalog(job.store)
    rows = locate_split(catalog, job.val_query)
    sentence, pooled = (torch.from_numpy(a) for a in read_vectors(rows))
    text_to_video = torch.from_numpy(rows.text_to_video)
    linear = linear_baseline(catalog, job.train_query, job.train)
    torch.manual_seed(job.train.seed)
    untrained = Trainer(TrainModule(build_head(job.model, job.backbone)), job.model, replace(job.train, mode="head"))
    with torch.no_grad():
        return {
            "mean pooling (no training)": both_directions(MeanPooling().score_pooled(sentence, pooled), text_to_video),
            "mean pooling + linear (trained)": both_directions(linear.score_pooled(sentence, pooled), text_to_video),
            "GLSCL untrained head": untrained.evaluate(TablePairs(rows)),
        }
