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
from workers.features import FeatureQuery, read_split
from workers.train.worker import TrainJob, build_head, split_pairs


def linear_baseline(catalog: Catalog, query: FeatureQuery, train: TrainConfig) -> LinearMeanPooling:
    """Mean pooling + a linear map per side, fitted on the split's training pairs with the run's batch and seed."""
    pairs = read_split(catalog, query)
    return fit_linear_mean_pooling(
        torch.from_numpy(pairs.sentence),
        torch.from_numpy(pairs.video_feats),
        torch.from_numpy(pairs.video_mask),
        torch.from_numpy(pairs.text_to_video),
        batch=train.batch_size,
        seed=train.seed,
    )


def baseline_metrics(job: TrainJob) -> dict[str, dict]:
    """Held-out metrics of the baselines on the same features: mean pooling as is (CLIP4Clip meanP), mean pooling
    with a linear map per side trained on the same training pairs (order-blind), and the untrained head."""
    catalog = Catalog(job.store)
    features = read_split(catalog, job.val_query)
    sentence, frames = torch.from_numpy(features.sentence), torch.from_numpy(features.video_feats)
    mask = torch.from_numpy(features.video_mask)
    linear = linear_baseline(catalog, job.train_query, job.train)
    torch.manual_seed(job.train.seed)
    untrained = Trainer(TrainModule(build_head(job.model, job.backbone)), job.model, replace(job.train, mode="head"))
    with torch.no_grad():
        return {
            "mean pooling (no training)": both_directions(MeanPooling().score(sentence, frames, mask)),
            "mean pooling + linear (trained)": both_directions(linear.score(sentence, frames, mask)),
            "GLSCL untrained head": untrained.evaluate(split_pairs(job, job.val_query, None)),
        }
