"""The train flow on tables written by the ingest flow: head-only and full fine-tuning, resume equals an
unbroken run, 2-worker Ray Train (DDP over gloo), reports and refusals."""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import lancedb
import numpy as np
import pytest
import torch
from conftest import ingest_synthetic
from safetensors.torch import load_file
from tiny_glscl import tiny_config

from glscl.backbone import Backbone
from glscl.backbone_config import TINY_MODEL, BackboneConfig
from glscl.config import TrainConfig
from glscl.data import PairData, rank_batches
from glscl.model import GLSCL
from glscl.training import Trainer, TrainModule
from pipelines.cli import main
from pipelines.configs import DEMO_FRAMES, DEMO_MAX_WORDS, IngestConfig, TrainFlowConfig
from pipelines.ingest import ingest_flow
from pipelines.train import train_flow
from schemas.catalog import Catalog
from schemas.tables import CAPTIONS
from workers.features import FeatureQuery, read_split
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import SourceOptions
from workers.ray_config import StreamConfig
from workers.split_rows import NO_ROW, locate_split
from workers.table_pairs import FramePairs, TablePairs
from workers.train.stream import ray_batches
from workers.train.worker import BEST_DIR, HISTORY_FILE, LATEST_DIR, order_negative_texts

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return ingest_synthetic(root, n_train=16, n_val=8, seed=3)


def flow_config(store, output, **train) -> TrainFlowConfig:
    settings = {"epochs": 3, "batch_size": 8, "seed": 1, "log_every": 1, **train}
    return TrainFlowConfig(
        store=store,
        max_words=DEMO_MAX_WORDS,
        head_preset="tiny",
        train=TrainConfig(**settings),
        output_dir=str(output),
    )


def read_history(output) -> list[dict]:
    """The records rank 0 wrote to the run's history."""
    return [json.loads(line) for line in (output / HISTORY_FILE).read_text().splitlines()]


def test_head_only_training_reports_against_baselines(store, tmp_path):
    summary = train_flow(flow_config(store, tmp_path / "run"))
    assert set(summary.metrics) == {
        "mean pooling (no training)",
        "mean pooling + linear (trained)",
        "GLSCL untrained head",
        f"GLSCL trained (best, step {summary.metrics[next(k for k in summary.metrics if 'trained (' in k)]['step']})",
    }
    assert summary.steps == 6 and summary.throughput_pairs_per_s > 0
    assert summary.pairs_read == 6 * 8 and summary.peak_memory_mb > 100 and 0 < summary.split_feature_gb < 0.01
    history = [json.loads(line) for line in (tmp_path / "run" / HISTORY_FILE).read_text().splitlines()]
    losses = [r["total"] for r in history if r["event"] == "step"]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0]
    assert len([r for r in history if r["event"] == "eval"]) == 3
    for folder in (LATEST_DIR, BEST_DIR):
        meta = json.loads((tmp_path / "run" / folder / "config.json").read_text())
        assert meta["extra"]["backbone_model_id"] == "glscl-tiny@random-seed0"
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert "GLSCL trained" in (tmp_path / "run" / "summary.md").read_text()
    assert "48 pairs read from the tables batch by batch" in (tmp_path / "run" / "summary.md").read_text()
    runs = lancedb.connect(store.uri).open_table("runs").to_arrow().to_pylist()
    assert any(r["flow"] == "train" and r["status"] == "completed" for r in runs)


def test_stopped_run_resumes_to_the_unbroken_result(store, tmp_path):
    train_flow(flow_config(store, tmp_path / "unbroken", eval_every=2))
    stopped = flow_config(store, tmp_path / "resumed", eval_every=2)
    train_flow(TrainFlowConfig(**{**stopped.__dict__, "max_steps": 2}))
    train_flow(stopped)
    unbroken = load_file(str(tmp_path / "unbroken" / "state" / "training_state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state" / "training_state.safetensors"))
    assert unbroken.keys() == resumed.keys()
    assert all((unbroken[k] == resumed[k]).all() for k in unbroken)


def test_streamed_batches_train_as_the_in_memory_pairs_do(store):
    # The stream reads each step's rows from the tables through Ray Data reader actors; the seeded sampler fixes
    # which pairs, so the losses follow training on the whole split held in memory. Sentences: several captions
    # per video, one drawn per video and step.
    query = FeatureQuery("train", BackboneConfig().model_id, DEMO_MAX_WORDS, "sentence")
    features = read_split(Catalog(store), query)
    in_memory = PairData(
        features.video_feats,
        features.video_mask,
        features.tokens,
        features.text_to_video,
        features.sentence,
        features.token_mask,
    )
    streamed = TablePairs(locate_split(Catalog(store), query))
    assert streamed.num_texts == in_memory.num_texts > streamed.num_videos == 16
    config, train = (
        tiny_config(embed_dim=features.video_feats.shape[2]),
        TrainConfig(epochs=2, batch_size=8, seed=4, log_every=1),
    )
    losses = {}
    for name, data, stream in (("memory", in_memory, rank_batches), ("stream", streamed, ray_batches(StreamConfig()))):
        torch.manual_seed(0)
        trainer = Trainer(TrainModule(GLSCL(config)), config, train)
        trainer.fit(data, on_log=lambda record, name=name: losses.setdefault(name, []).append(record), stream=stream)
    steps = {name: [r["total"] for r in records if r["event"] == "step"] for name, records in losses.items()}
    assert len(steps["stream"]) == 4
    np.testing.assert_allclose(steps["stream"], steps["memory"], rtol=1e-5)


@pytest.mark.slow(seconds=40)  # Ray Train starts two worker processes that each load the data and build the head
def test_two_ray_train_workers_follow_the_single_process_run(store, tmp_path):
    # Each rank encodes its half of every global batch; the halves are gathered before the loss and the gradients
    # averaged, so with dropout off the 2-worker run follows a 1-worker run on the same global batches. Ranks that
    # skipped the gather would score 4 pairs each instead of 8, and ranks out of sync would drift apart.
    config = flow_config(store, tmp_path / "one", epochs=2)
    # Ray Data readers inside Ray Train workers whatever the split's size: their read tasks once waited forever
    # for a CPU the train workers held.
    config = TrainFlowConfig(
        **{**config.__dict__, "head_overrides": {"dropout": 0.0}, "stream": StreamConfig(readers_from_mb=0)}
    )
    one = train_flow(config)
    two = train_flow(TrainFlowConfig(**{**config.__dict__, "workers": 2, "output_dir": str(tmp_path / "two")}))
    assert (one.world_size, two.world_size) == (1, 2) and one.steps == two.steps == 4
    losses = {run: [r["total"] for r in read_history(tmp_path / run) if r["event"] == "step"] for run in ("one", "two")}
    assert len(losses["two"]) == 4  # rank 0 alone writes the history
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-4)
    assert "on 2 worker(s)" in (tmp_path / "two" / "summary.md").read_text()


def synthetic_ingest(store, backbone: BackboneConfig, *splits: str, keep_frames: bool = False) -> IngestConfig:
    """The ingest of the module's synthetic splits, with another backbone or keeping the frames."""
    root = Path(store.uri).parent
    return IngestConfig(
        sources=tuple(str(root / f"{split}.json") for split in splits),
        store=store,
        backbone=backbone,
        sampling=SamplingConfig("uniform", DEMO_FRAMES),
        source_options=SourceOptions(video_root=str(root / "videos"), dataset="synthetic"),
        max_words=DEMO_MAX_WORDS,
        keep_frames=keep_frames,
    )


def test_full_fine_tuning_reads_kept_frames_changes_the_backbone_and_its_weights_ingest_again(store, tmp_path):
    # Ingest again keeping the frames: the features are already stored, so only `frame_images` gains rows.
    kept = ingest_flow(synthetic_ingest(store, BackboneConfig(), "train", "val_1", keep_frames=True))
    assert kept.counts["frame_images_written"] == 24 and kept.counts["frames_rows_written"] == 0
    query = FeatureQuery("train", BackboneConfig().model_id, DEMO_MAX_WORDS)
    rows = locate_split(Catalog(store), query)
    assert rows.kept_images == rows.num_videos == 16
    image_size = BackboneConfig().image_size
    stored = FramePairs(rows, BackboneConfig(), image_size).video_input(np.arange(16))
    decoded = FramePairs(replace(rows, image_rows=np.full(16, NO_ROW)), BackboneConfig(), image_size)
    decoded = decoded.video_input(np.arange(16))
    assert torch.equal(stored.mask, decoded.mask) and stored.mask.any()
    difference = (stored.data.float() - decoded.data.float()).abs()[stored.mask]
    assert difference.mean() < 2.0 and difference.max() > 0  # JPEG at quality 90: close, not equal
    # Training reads the kept frames: with the source files moved away, full fine-tuning still runs.
    videos = Path(store.uri).parent / "videos"
    videos.rename(videos.with_name("videos-away"))
    try:
        config = flow_config(store, tmp_path / "full", epochs=1, mode="full")
        summary = train_flow(TrainFlowConfig(**{**config.__dict__, "head_overrides": {"clip_lr": 1e-3}}))
    finally:
        videos.with_name("videos-away").rename(videos)
    assert summary.steps == 2
    weights = tmp_path / "full" / LATEST_DIR / "backbone.safetensors"
    random = BackboneConfig()
    tuned = BackboneConfig(TINY_MODEL, pretrained=str(weights))
    before, after = Backbone(random).model.state_dict(), Backbone(tuned).model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in changed and "token_embedding.weight" in changed
    assert "visual.conv1.weight" not in changed  # frozen, as in the paper
    # The saved weights are a backbone the pipeline takes as --pretrained: ingesting val again with them stores
    # features under their own model id, and those differ from the random backbone's for the same frames.
    assert ingest_flow(synthetic_ingest(store, tuned, "val_1")).exit_code == 0
    catalog = Catalog(store)
    old = read_split(catalog, FeatureQuery("val_1", random.model_id, DEMO_MAX_WORDS))
    new = read_split(catalog, FeatureQuery("val_1", tuned.model_id, DEMO_MAX_WORDS))
    assert tuned.model_id != random.model_id and new.video_ids == old.video_ids and len(new.video_ids) == 8
    assert (new.video_mask == old.video_mask).all()
    shift = np.abs(new.video_feats[new.video_mask] - old.video_feats[old.video_mask]).max()
    assert shift > 0.05 * np.abs(old.video_feats[old.video_mask]).max(), shift


def test_unknown_split_is_a_clear_error(store, tmp_path, capsys):
    code = main(["train", "--db", store.uri, "--split", "nope", "--output", str(tmp_path / "x")])
    assert code == 2
    assert "split 'nope' has no ingested videos" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    output = tmp_path_factory.mktemp("trained")
    train_flow(flow_config(store, output, epochs=2))
    return output / BEST_DIR


@pytest.mark.parametrize(("kind", "shard_videos"), [("paragraph", 8), ("paragraph", 3), ("sentence", 3)])
def test_sharded_evaluation_equals_the_dense_computation(store, trained, tmp_path, kind, shard_videos):
    from glscl.checkpoint import load_checkpoint
    from glscl.metrics import both_directions, dual_softmax
    from pipelines.configs import EvaluateConfig
    from pipelines.evaluate import evaluate_flow
    from schemas.catalog import Catalog
    from workers.features import FeatureQuery, read_split
    from workers.glscl_encode import encode_videos

    report = evaluate_flow(
        EvaluateConfig(
            checkpoint=str(trained),
            store=store,
            kind=kind,
            shard_videos=shard_videos,
            output_dir=str(tmp_path),
            dual_softmax=0.05,
        )
    )
    model, _, meta = load_checkpoint(trained)
    extra = meta["extra"]
    features = read_split(Catalog(store), FeatureQuery("val_1", extra["backbone_model_id"], extra["max_words"], kind))
    with torch.inference_mode():
        texts = model.encode_text(
            *(torch.from_numpy(a) for a in (features.sentence, features.tokens, features.token_mask))
        )
        videos = encode_videos(model, features.video_feats, features.video_mask, "cpu")
        matrix = model.score(texts, videos)
        dense = both_directions(matrix, features.text_to_video)
        dense_dsl = both_directions(dual_softmax(matrix, 0.05, "t2v"), features.text_to_video)["t2v"]
    assert report.metrics == dense
    assert report.extras == {"dual softmax T=0.05": {"t2v": dense_dsl}}
    assert report.shards == -(-8 // shard_videos) and report.videos == 8
    # Sentences: several texts per video, so shards that split the gallery must rank videos by their best caption.
    assert report.texts == len(features.text_to_video) and (report.texts > 8) == (kind == "sentence")
    assert json.loads((tmp_path / "report.json").read_text())["metrics"] == dense
    assert (tmp_path / "recall_at_k.png").stat().st_size > 1000


def test_tampered_checkpoint_is_refused_by_evaluate(store, trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    code = main(["evaluate", "--checkpoint", str(copy), "--db", store.uri, "--output", str(tmp_path / "r")])
    assert code == 2
    assert "sha256" in capsys.readouterr().err


def test_order_negatives_reverse_each_video_and_train(store, tmp_path):
    catalog = Catalog(store)
    captions = catalog.scan(CAPTIONS, ["video_id", "order", "text"], "kind = 'sentence' AND split = 'train'")
    told: dict[str, list[tuple[int, str]]] = {}
    for row in captions.to_pylist():
        told.setdefault(row["video_id"], []).append((row["order"], row["text"]))
    negatives = order_negative_texts(catalog, sorted(told))
    several = {vid for vid, items in told.items() if len({text for _, text in items}) > 1}
    assert several and set(negatives) == several
    for vid in several:
        assert negatives[vid] == " ".join(text for _, text in sorted(told[vid], reverse=True))
    summary = train_flow(flow_config(store, tmp_path / "negatives", order_negatives=True))
    steps = [r for r in read_history(tmp_path / "negatives") if r["event"] == "step"]
    assert summary.steps == 6 and len(steps) == 6 and all(math.isfinite(r["contrastive"]) for r in steps)
    # The same seed without negatives: the same first batch and the same initial head (the ICL and IDL terms, which
    # never see the negatives, agree), and the negatives can only add to the video-to-text softmax's denominators.
    plain_config = flow_config(store, tmp_path / "plain", eval_every=1)
    train_flow(TrainFlowConfig(**{**plain_config.__dict__, "max_steps": 1}))
    plain = next(r for r in read_history(tmp_path / "plain") if r["event"] == "step")
    assert (steps[0]["icl"], steps[0]["idl"]) == (plain["icl"], plain["idl"])
    assert steps[0]["contrastive"] > plain["contrastive"] + 1e-3, (steps[0], plain)


def test_authors_recipe_from_the_cli_starts_the_temporal_transformer_from_clip(store, tmp_path):
    from glscl.backbone import Backbone
    from glscl.backbone_config import BackboneConfig

    output = tmp_path / "authors"
    argv = ["train", "--db", store.uri, "--head", "tiny", "--recipe", "authors", "--max-words", str(DEMO_MAX_WORDS)]
    argv += ["--epochs", "1", "--batch-size", "8", "--output", str(output), "--json"]
    assert main(argv) == 0
    meta = json.loads((output / LATEST_DIR / "config.json").read_text())
    model = meta["config"]
    assert (model["temporal_init"], model["temporal_activation"], model["icl_form"]) == ("clip", "gelu", "authors")
    assert (model["local_padding_mask"], model["idl_both_modalities"]) == (False, False)
    assert meta["extra"]["recipe"] == "authors"
    state = json.loads((output / "state" / "training_state.json").read_text())
    assert state["train_config"]["optimizer"] == "bertadam" and state["train_config"]["batches"] == "captions"
    # One epoch of 2 steps whose first update has lr 0 (the authors' warm-up): the second update is small, so the
    # copied CLIP block is still close to the tower's and far from a random start.
    weights = load_file(str(output / LATEST_DIR / "model.safetensors"))
    tower = Backbone(BackboneConfig()).model.transformer.resblocks[0].mlp.c_fc.weight.detach()
    trained = weights["temporal.encoder.layers.0.linear1.weight"]
    assert (trained - tower).abs().max() < 0.05 * tower.abs().max()
