"""A training worker's memory is bounded by its stream's read-ahead, not by the split: training on a split whose
features outweigh that many times over must not grow the worker by the split's size. Nor may an evaluation
shard grow by the gallery's."""

from pathlib import Path

import pytest
import torch
from tiny_glscl import tiny_config

from benchmarks.synthetic_gallery import GalleryConfig, build_gallery
from glscl.backbone_config import BackboneConfig
from glscl.checkpoint import save_checkpoint
from glscl.config import TrainConfig
from glscl.model import GLSCL
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.evaluate.score import ShardScorer, ShardSpec
from workers.features import FeatureQuery
from workers.ray_config import StreamConfig
from workers.split_rows import locate_split
from workers.train.worker import PeakMemory, TrainJob, train_worker

pytestmark = pytest.mark.usefixtures("ray_local")

VIDEOS, FRAMES, DIM, WORDS = 12_000, 32, 64, 32


def resident_mb() -> float:
    """This process's resident set now, in MiB."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def large_split(tmp_path_factory) -> StoreConfig:
    db = tmp_path_factory.mktemp("stream") / "db"
    model_id = BackboneConfig().model_id
    build_gallery(GalleryConfig(str(db), VIDEOS, FRAMES, DIM, WORDS, "train", batch=4_000, model_id=model_id))
    return StoreConfig(str(db))


def test_a_training_worker_holds_batches_not_the_split(large_split, tmp_path):
    query = FeatureQuery("train", BackboneConfig().model_id, WORDS)
    split_mb = 4 * DIM * VIDEOS * (FRAMES + WORDS + 1) / 2**20  # frame, token and sentence features as float32
    job = TrainJob(
        store=large_split,
        backbone=BackboneConfig(),
        train_query=query,
        val_query=None,
        model=tiny_config(
            embed_dim=DIM, max_frames=FRAMES, frame_position_size=FRAMES, max_words=WORDS, temporal_init="random"
        ),
        train=TrainConfig(epochs=1, batch_size=16, log_every=1),
        output_dir=str(tmp_path),
        max_steps=6,
        stream=StreamConfig(readers_from_mb=0),
    )
    before = resident_mb()
    peak = PeakMemory(torch.device("cpu"))
    history = train_worker(job)
    growth = peak.megabytes() - before
    assert len([r for r in history if r["event"] == "step"]) == 6
    # Measured: 36 MiB streamed; 605 MiB when the worker read the split whole (Arrow columns, then dense arrays).
    assert split_mb > 190 and growth < split_mb / 3, f"the worker grew by {growth:.0f} MiB, split {split_mb:.0f}"


def test_an_evaluation_shard_holds_its_slice_not_the_gallery(large_split, tmp_path):
    # The sharded evaluator's actors each read their slice of the gallery's frames, and the shard that encodes the
    # texts reads them a chunk at a time: neither may grow by the gallery's size (its frames and token features).
    query = FeatureQuery("train", BackboneConfig().model_id, WORDS)
    config = tiny_config(
        embed_dim=DIM, max_frames=FRAMES, frame_position_size=FRAMES, max_words=WORDS, temporal_init="random"
    )
    checkpoint = str(save_checkpoint(tmp_path / "checkpoint", GLSCL(config), config, {"max_words": WORDS}))
    rows = locate_split(Catalog(large_split), query)
    gallery_mb = 4 * DIM * VIDEOS * (FRAMES + WORDS + 1) / 2**20

    def shard(stop: int) -> ShardScorer:
        scorer = ShardScorer(ShardSpec(large_split, query, rows.sampling_hash, rows.video_ids, 0, stop, checkpoint))
        scorer.prepare()
        return scorer

    shard(1).encode_texts()  # once first, so that what torch and LanceDB set up on first use is not counted
    before = resident_mb()
    peak = PeakMemory(torch.device("cpu"))
    scorer = shard(VIDEOS // 20)
    texts = scorer.encode_texts()
    growth = peak.megabytes() - before
    assert texts.encoding.sentence.shape[0] == VIDEOS and scorer.videos is not None
    # What it holds: its slice's frames (a 20th) and the text encodings (sentence and concepts, 15 MiB). Measured:
    # 27 MiB; 475 MiB with every shard reading the whole gallery, 1,070 MiB with the texts read in one piece.
    assert growth < gallery_mb / 3, f"the shard grew by {growth:.0f} MiB, gallery {gallery_mb:.0f}"
