"""The training worker: locate a split's rows in LanceDB, build the GLSCL trainer, resume from the run's own
state if there is one, train on batches streamed from the tables, and write checkpoints and history. A
plain function, run in-process for one worker or by Ray Train (TorchTrainer, DDP over gloo/NCCL) for several."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device, prepare_model

from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig
from glscl.checkpoint import STATE_JSON, save_backbone_weights, save_checkpoint
from glscl.config import GLSCLConfig, TrainConfig
from glscl.data import PairSampler
from glscl.distributed import all_gather_with_grad
from glscl.model import GLSCL, init_temporal_from_clip
from glscl.training import Trainer, TrainModule
from schemas.catalog import Catalog, sql_in
from schemas.store import StoreConfig
from workers.features import FeatureQuery, video_sentences
from workers.ray_config import StreamConfig
from workers.split_rows import SplitRows, locate_split
from workers.table_pairs import FramePairs, OrderNegatives, TablePairs
from workers.terminal import progress
from workers.train.stream import batch_stream

STATE_DIR = "state"
LATEST_DIR = "checkpoint"
BEST_DIR = "best"
HISTORY_FILE = "history.jsonl"


@dataclass(frozen=True)
class TrainJob:
    """What one training run reads, trains and writes."""

    store: StoreConfig
    backbone: BackboneConfig
    train_query: FeatureQuery
    val_query: FeatureQuery | None
    model: GLSCLConfig
    train: TrainConfig
    output_dir: str
    max_steps: int | None = None
    extra: dict = field(default_factory=dict)
    stream: StreamConfig = field(default_factory=StreamConfig)


def build_head(config: GLSCLConfig, backbone_config: BackboneConfig, backbone: Backbone | None = None) -> GLSCL:
    """A new GLSCL head; with `temporal_init="clip"` its temporal transformer starts from the text tower of the
    backbone the features were made with (`backbone` when already loaded, else loaded from `backbone_config`), and
    with encoded padding it keeps that backbone's blank-frame feature for padded frame slots."""
    head = GLSCL(config)
    if config.temporal_init == "clip" or head.encodes_padding:
        backbone = backbone or Backbone(backbone_config)
    if config.temporal_init == "clip":
        init_temporal_from_clip(head.temporal, backbone.model, config)
    if head.encodes_padding:
        head.set_blank_frame(backbone.blank_frame())
    return head


def check_padding_encoded(data: TablePairs, database: str, sample: int = 256) -> None:
    """Refuse stored texts whose padded positions hold zeros (encoded before ingest kept the text tower's outputs
    there) for a head that reads encoded padding: it would silently train on zeros instead. A database ingested
    before that holds zeros in every text, so the first `sample` texts tell."""
    texts = data.text_input(slice(0, sample))
    padded = ~texts.mask
    if padded.any() and not texts.tokens[padded].abs().any():
        raise ValueError(
            f"the texts in {database} hold zeros at padded positions (ingested by an older glscl), but "
            "padding_memory='encoded' reads the text tower's outputs there: ingest into a new --db, or train with "
            "--set padding_memory=zeros"
        )


def order_negative_texts(catalog: Catalog, video_ids: list[str]) -> dict[str, str]:
    """Each video's sentences in reverse order as one paragraph: the same events told in the wrong order, which
    only a model that reads order can reject (videos with fewer than two distinct sentences get none)."""
    negatives = {}
    for video_id, told in video_sentences(catalog, sql_in("video_id", video_ids)).items():
        if told != told[::-1]:
            negatives[video_id] = " ".join(reversed(told))
    return negatives


def order_negatives(catalog: Catalog, rows: SplitRows, job: TrainJob) -> OrderNegatives | None:
    """The split's order negatives, encoded batch by batch as the run reads them (None: no video has one). Head
    mode encodes them with the job's backbone, which must be the one the stored features were made with."""
    texts = order_negative_texts(catalog, rows.video_ids)
    if not texts:
        return None
    if job.train.mode == "head" and job.backbone.model_id != job.train_query.model_id:
        raise ValueError(
            f"order negatives need the backbone the features were made with ({job.train_query.model_id}), "
            f"got {job.backbone.model_id}"
        )
    paragraphs = {i: texts[video_id] for i, video_id in enumerate(rows.video_ids) if video_id in texts}
    keep_padding = job.model.padding_memory == "encoded"
    return OrderNegatives(paragraphs, job.backbone, rows.query.max_words, job.train.mode, keep_padding)


def split_pairs(job: TrainJob, query: FeatureQuery, backbone: Backbone | None, negatives: bool = False) -> TablePairs:
    """The split's pairs in the job's mode, read from the tables batch by batch, with order negatives when asked."""
    catalog = Catalog(job.store)
    rows = locate_split(catalog, query)
    order = order_negatives(catalog, rows, job) if negatives else None
    if backbone is not None:
        return FramePairs(rows, job.backbone, backbone.image_size, order)
    data = TablePairs(rows, order)
    if job.model.padding_memory == "encoded":
        check_padding_encoded(data, catalog.store.uri)
    return data


class History:
    """Training records (steps, epochs, evaluations) appended to a JSON-lines file, written by rank 0 only."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path, self.writer = path, writer

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (lost when a run stopped after its last checkpoint)."""
        if self.writer and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def append(self, record: dict) -> None:
        """Add one record."""
        if self.writer:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        """Every record so far."""
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []


def _best_r1(history: History) -> float:
    evals = [r["t2v"]["R@1"] for r in history.read() if r.get("event") == "eval"]
    return max(evals, default=-1.0)


def train_worker(job: TrainJob, rank: int = 0, world_size: int = 1, distributed: bool = False) -> list[dict]:
    """Train (resuming from `output_dir/state` when present); rank 0 writes checkpoints and history."""
    torch.manual_seed(job.train.seed)
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device() if distributed else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = Backbone(job.backbone, str(device)) if job.train.mode == "full" else None
    data = split_pairs(job, job.train_query, backbone, negatives=job.train.order_negatives)
    val = split_pairs(job, job.val_query, backbone) if job.val_query else None
    head = build_head(job.model, job.backbone, backbone).to(device)
    module = TrainModule(head, backbone)
    wrapped = prepare_model(module) if distributed else module.to(device)
    gather = all_gather_with_grad if distributed else None
    trainer = Trainer(wrapped, job.model, job.train, rank=rank, world_size=world_size, gather=gather)
    history = History(out / HISTORY_FILE, writer=rank == 0)
    if (out / STATE_DIR / STATE_JSON).exists():
        trainer.load_training_state(out / STATE_DIR)
        history.truncate_after(trainer.step)
    best = _best_r1(history)

    def on_log(record: dict) -> None:
        if record["event"] == "epoch":
            record = {**record, "peak_memory_mb": round(peak_resident_mb())}
        history.append(record)

    def on_eval(record: dict) -> None:
        history.append({"event": "eval", **record})

    def on_checkpoint(record: dict) -> None:
        nonlocal best
        if rank != 0:
            return
        extra = {**job.extra, "step": record["step"], "epoch": record["epoch"], "metrics": record["metrics"]}
        save_checkpoint(out / LATEST_DIR, head, job.model, extra)
        if backbone is not None:
            save_backbone_weights(backbone.model, out / LATEST_DIR / "backbone.safetensors")
        r1 = record["metrics"]["t2v"]["R@1"] if record["metrics"] else -1.0
        if r1 > best or not (out / BEST_DIR).exists():
            best = max(best, r1)
            save_checkpoint(out / BEST_DIR, head, job.model, extra)
        trainer.save_training_state(out / STATE_DIR)

    with progress("train", None, "steps", completed=trainer.step) as update:

        def on_step(record: dict) -> None:
            description = f"train epoch {record['epoch'] + 1}/{record['epochs']}"
            update(completed=record["step"], total=record["stop"], description=description)

        trainer.fit(
            data,
            val,
            on_log=on_log,
            on_eval=on_eval,
            on_checkpoint=on_checkpoint,
            on_step=on_step,
            max_steps=job.max_steps,
            stream=batch_stream(job.stream, data.data_bytes),
        )
    return history.read()


def _ray_loop(config: dict) -> None:
    context = ray.train.get_context()
    train_worker(config["job"], context.get_world_rank(), context.get_world_size(), distributed=True)


def ray_train(job: TrainJob, num_workers: int, use_gpu: bool, max_failures: int = 0) -> list[dict]:
    """Run `train_worker` on `num_workers` Ray Train workers (DDP); a restarted attempt resumes from the state.
    Returns the history rank 0 wrote."""
    if job.train.batch_size % num_workers:
        raise ValueError(f"batch_size {job.train.batch_size} must be divisible by the {num_workers} workers")
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=f"glscl-train-{uuid.uuid4().hex[:8]}",
            storage_path=str((Path(job.output_dir) / "ray").resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return History(Path(job.output_dir) / HISTORY_FILE, writer=False).read()


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run's history and folder say: its best held-out evaluation (None without any), training
    throughput, last step, the checkpoint to use (the best one, else the latest), how many ranks trained, the
    peak resident memory of rank 0's process (0: no epoch ended) and the share of training time rank 0 waited for
    its batches (near 0: the stream keeps up; else more --readers)."""

    best_eval: dict | None
    pairs_per_s: float
    steps: int
    checkpoint: Path
    world_size: int
    peak_memory_mb: float
    data_wait_share: float


def run_outcome(output_dir: str, history: list[dict]) -> RunOutcome:
    """The outcome of the run in `output_dir` whose records are `history` (world size: the most ranks any of its
    epochs ran on, as the trainer recorded them)."""
    out = Path(output_dir)
    evals = [r for r in history if r.get("event") == "eval"]
    epochs = [r for r in history if r.get("event") == "epoch"]
    return RunOutcome(
        best_eval=max(evals, key=lambda r: r["t2v"]["R@1"], default=None),
        pairs_per_s=sum(r["pairs"] for r in epochs) / max(sum(r["seconds"] for r in epochs), 1e-9),
        steps=max((r["step"] for r in history), default=0),
        checkpoint=out / BEST_DIR if (out / BEST_DIR).exists() else out / LATEST_DIR,
        world_size=max((r["world_size"] for r in epochs), default=1),
        peak_memory_mb=max((r.get("peak_memory_mb", 0.0) for r in epochs), default=0.0),
        data_wait_share=sum(r.get("data_wait_s", 0.0) for r in epochs) / max(sum(r["seconds"] for r in epochs), 1e-9),
    )


@dataclass(frozen=True)
class StepTiming:
    """Measured cost of training steps: median seconds per optimiser step (the first, allocating step left out)
    and the peak memory of the process (CPU: resident set; GPU: allocated by torch) while they ran."""

    mode: str
    batch_size: int
    steps: int
    seconds_per_step: float
    peak_memory_mb: float
    device: str


class PeakMemory:
    """Peak memory from now on: torch's allocator peak on CUDA, the kernel's resident-set high-water mark on CPU
    (reset through /proc/self/clear_refs, Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")

    def megabytes(self) -> float:
        """The peak since construction, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return peak_resident_mb()


def peak_resident_mb() -> float:
    """This process's resident-set high-water mark (Linux VmHWM), in MiB: what a training worker's data and model
    cost the host, whatever the device."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def time_training_steps(job: TrainJob, steps: int) -> StepTiming:
    """Run `steps` + 1 optimiser steps of the job (its mode, batch size, recipe) on its training split and time
    them; the head starts as a training run's would. Used to size real runs (seconds and memory per step)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = Backbone(job.backbone, str(device)) if job.train.mode == "full" else None
    data = split_pairs(job, job.train_query, backbone)
    head = build_head(job.model, job.backbone, backbone).to(device)
    trainer = Trainer(TrainModule(head, backbone), job.model, job.train)
    cfg = job.train
    sampler = PairSampler(data.text_to_video, data.num_videos, cfg.batch_size, cfg.seed, cfg.batches)
    if sampler.steps_per_epoch == 0:
        raise ValueError(f"timing batch_size {cfg.batch_size} needs that many training {cfg.batches}")
    trainer.set_total_steps(max(cfg.epochs * sampler.steps_per_epoch, steps + 1))
    peak = PeakMemory(device)
    seconds = []
    for step in range(steps + 1):
        epoch, index = divmod(step, sampler.steps_per_epoch)
        batch = data.pairs(*sampler.batch(epoch, index))
        start = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return StepTiming(cfg.mode, cfg.batch_size, steps, statistics.median(seconds[1:]), peak.megabytes(), str(device))
