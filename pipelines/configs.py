"""The typed config of every flow, in one module that imports no Prefect, Ray, torch or LanceDB: the command line
builds its options and their defaults from these dataclasses (a default lives here only), and Python callers
build the same objects to call a flow."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from glscl.backbone_config import BackboneConfig
from glscl.config import DEFAULT_BLOCK, GLSCLConfig, TrainConfig
from glscl.recipes import recipe_head, recipe_train
from schemas.store import StoreConfig
from workers.index.config import AnnConfig
from workers.ingest.sampling import SamplingConfig
from workers.ingest.sources import SourceOptions
from workers.ray_config import RayConfig, StreamConfig
from workers.synthetic.videos import SyntheticConfig

DEFAULT_RETENTION = timedelta(days=7)
DEMO_FRAMES = 8
DEMO_MAX_WORDS = 32
STAGES = ("ingest", "timing", "train", "evaluate", "bench")
MODES = ("head", "full")


@dataclass(frozen=True)
class IngestConfig:
    """Everything an ingest run needs, in one place: sources, store, backbone, sampling, Ray and batching."""

    sources: tuple[str, ...]
    store: StoreConfig = field(default_factory=StoreConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    source_options: SourceOptions = field(default_factory=SourceOptions)
    ray: RayConfig = field(default_factory=RayConfig)
    max_words: int = 32
    shard_size: int = 256
    retry_failed: bool = False
    hash_threads: int = 4
    keep_frames: bool = False  # also store the sampled frames (JPEG) in `frame_images`, for full fine-tuning
    frame_quality: int = 90  # their JPEG quality

    def __post_init__(self) -> None:
        if not 1 <= self.frame_quality <= 100:
            raise ValueError(f"frame quality must be a JPEG quality from 1 to 100, got {self.frame_quality}")

    @property
    def jpeg_quality(self) -> int | None:
        """The JPEG quality the decode stage keeps frames at, or None when it keeps none."""
        return self.frame_quality if self.keep_frames else None


@dataclass(frozen=True)
class TrainFlowConfig:
    """Everything a training run needs: data (store, backbone, splits, text kind), head, optimiser, workers."""

    store: StoreConfig = field(default_factory=StoreConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    split: str = "train"
    val_split: str | None = "val_1"
    kind: str = "paragraph"
    max_words: int = 32
    head_preset: str = "paper"
    head_overrides: dict = field(default_factory=dict)
    recipe: str = "project"
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "./data/runs/train"
    workers: int = 1
    ray: RayConfig = field(default_factory=RayConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    max_steps: int | None = None

    def head(self, embed_dim: int, frames: int) -> GLSCLConfig:
        """The run's GLSCL config sized to the stored features (`glscl.recipes.recipe_head`)."""
        return recipe_head(
            self.head_preset,
            self.recipe,
            self.head_overrides,
            embed_dim,
            frames,
            self.max_words,
            self.backbone.quick_gelu,
        )

    def train_settings(self) -> TrainConfig:
        """The run's training config with its recipe's settings in place (`glscl.recipes.recipe_train`)."""
        return recipe_train(self.train, self.recipe)


@dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate (checkpoint, split, text kind) and how to shard it."""

    checkpoint: str
    store: StoreConfig = field(default_factory=StoreConfig)
    split: str = "val_1"
    kind: str = "paragraph"
    shard_videos: int = 2048
    block_size: tuple[int, int] = DEFAULT_BLOCK
    output_dir: str = "./data/runs/evaluate"
    dual_softmax: float | None = None
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass(frozen=True)
class IndexConfig:
    """Which checkpoint to index, which videos (splits; empty = all), videos per Ray task, the ANN settings, and
    how many gallery shards (tables, each searched by its own worker; schemas/gallery_shards.py) the index is
    split into. Each shard count is a set of tables of its own: indexing with another count builds another copy."""

    checkpoint: str
    store: StoreConfig = field(default_factory=StoreConfig)
    splits: tuple[str, ...] = ()
    shard_videos: int = 512
    ann: AnnConfig = field(default_factory=AnnConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    gallery_shards: int = 1

    def __post_init__(self) -> None:
        if self.gallery_shards < 1:
            raise ValueError(f"gallery_shards must be >= 1, got {self.gallery_shards}")


@dataclass(frozen=True)
class MaintainConfig:
    """Which database and tables to keep up (no names: every table in it), and how long old versions stay.

    Versions younger than `retain_versions_older_than` stay readable (time travel, readers still on them). A
    zero window removes all but the newest, which breaks any other process writing the table at that moment.
    """

    store: StoreConfig = field(default_factory=StoreConfig)
    retain_versions_older_than: timedelta = DEFAULT_RETENTION
    tables: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse a negative retention window (a typo, not a policy)."""
        if self.retain_versions_older_than < timedelta(0):
            raise ValueError(f"the retention window must be 0 or more, got {self.retain_versions_older_than}")


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo writes, how much data it makes, and where Ray runs."""

    out_dir: str = "./data/demo"
    store: StoreConfig = field(default_factory=lambda: StoreConfig("./data/demo/lancedb"))
    train_videos: int = 300
    val_videos: int = 100
    seed: int = 0
    train_epochs: int = 80
    batch_size: int = 32
    order_negatives: bool = False
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"--batch-size must be at least 2 (contrastive batches), got {self.batch_size}")
        if self.train_videos < self.batch_size:
            raise ValueError(
                f"--train-videos {self.train_videos} is fewer than one batch (--batch-size {self.batch_size}): give "
                f"at least {self.batch_size} training videos, or a smaller --batch-size"
            )
        if self.val_videos < 1 or self.train_epochs < 1:
            raise ValueError("--val-videos and --epochs must be at least 1")

    def synthetic(self) -> SyntheticConfig:
        """The generator settings for this demo."""
        return SyntheticConfig(
            out_dir=Path(self.out_dir), n_train=self.train_videos, n_val=self.val_videos, seed=self.seed
        )


AUTHORS_QUERY_COUNTS = (8, 12)  # K in their ActivityNet test script and in their training script


@dataclass(frozen=True)
class ReproduceConfig:
    """What to read, which weights, how to train, and where the run lives.

    `weights` is an open_clip tag or a local file (None: random weights, for dry runs only). `timing` lists
    (mode, batch size) pairs whose training steps are timed (seconds and peak memory per step) before training.
    `redo` names stages to run again even though they finished. `epochs` and `eval_every` follow the authors'
    ActivityNet training (10 epochs, val_1 every 30 steps and at each epoch end); `queries` is K: 8 matches the
    checkpoint their test script evaluates (the paper's number), 12 their training script.
    """

    annotations: tuple[str, ...] = ()
    video_root: str = ""
    out_dir: str = "./data/reproduce/activitynet"
    model: str = "ViT-B-32-quickgelu"
    weights: str | None = "openai"
    mode: str = "head"
    epochs: int = 10
    batch_size: int = 64
    max_steps: int | None = None
    workers: int = 1
    eval_every: int = 30
    queries: int = 8
    frames: int = 64
    fps: float = 1.0
    max_words: int = 64
    timing: tuple[tuple[str, int], ...] = ()
    timing_steps: int = 2
    bench_seconds: float = 10.0
    redo: tuple[str, ...] = ()
    dry_run: bool = False
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES or any(mode not in MODES for mode, _ in self.timing):
            raise ValueError(f"training modes must be one of {MODES}")
        if self.queries not in AUTHORS_QUERY_COUNTS:
            raise ValueError(f"queries must be one of the authors' K {AUTHORS_QUERY_COUNTS}, got {self.queries}")
        unknown = sorted(set(self.redo) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown} in redo: stages are {', '.join(STAGES)}")
        if not self.dry_run and (not self.annotations or not self.video_root):
            raise ValueError("give the annotation files (train.json val_1.json) and --video-root, or --dry-run")

    @property
    def store(self) -> StoreConfig:
        """The run's own database."""
        return StoreConfig(str(Path(self.out_dir) / "lancedb"))

    @property
    def backbone(self) -> BackboneConfig:
        """The paper's backbone: ViT-B/32 with QuickGELU and the OpenAI weights (a tag or a local copy)."""
        return BackboneConfig(model_name=self.model, pretrained=self.weights)


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost): other machines cannot connect."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """How `glscl serve` listens, who may ask, and how much work it takes on at once.

    A `token` is required as `Authorization: Bearer` on every route but /health; a host other machines can reach
    needs one unless `insecure`. CORS is off unless `cors_origins` lists the origins allowed. Queries run on
    `workers` threads (None: one per core) with at most `queue` more waiting; beyond that a request gets 503 with
    Retry-After. At most `thumbnail_processes` ffmpeg processes cut thumbnails at once, each killed after
    `thumbnail_timeout_s`; a thumbnail request waits `busy_wait_s` for a slot before its 503. `processes` > 1 runs
    that many server processes on one port, each with its own searcher (model, tables, index cache: memory times
    `processes`) and its own pool, queue and thumbnail slots: Python runs one thread's code at a time per process,
    so queries whose work is mostly Python (a small gallery, a small text tower) only scale across processes;
    `workers` then defaults to the cores shared among them. Exact mode is refused
    on galleries of more than `exact_max_videos` videos (None: never), where one query would hold a worker for
    seconds; the offline `glscl query --exact` is the way there. `gallery_shards` > 1 serves an index built in that
    many gallery shards, one Ray actor each on `ray` (workers.search.sharded), from one server process.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    workers: int | None = None
    queue: int = 32
    thumbnail_processes: int = 2
    thumbnail_timeout_s: float = 10.0
    busy_wait_s: float = 1.0
    retry_after_s: int = 1
    exact_max_videos: int | None = 10_000
    processes: int = 1
    gallery_shards: int = 1
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        """Refuse an open host without a token, and sizes that cannot serve anything."""
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ValueError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it could query the index "
                "and read every indexed video; set GLSCL_SERVE_TOKEN (or --token), or pass --insecure"
            )
        if (
            (self.workers is not None and self.workers < 1)
            or self.queue < 0
            or min(self.thumbnail_processes, self.processes, self.gallery_shards) < 1
        ):
            raise ValueError(
                "--workers, --processes, --thumbnail-processes and --gallery-shards must be at least 1, --queue at "
                "least 0"
            )
        if self.gallery_shards > 1 and self.processes > 1:
            raise ValueError("--gallery-shards serves from one process (the shards' actors do the work): --processes 1")
        if self.thumbnail_timeout_s <= 0 or self.busy_wait_s < 0 or self.retry_after_s < 0:
            raise ValueError("--thumbnail-timeout must be positive, the waits 0 or more")

    @property
    def worker_count(self) -> int:
        """Query threads per process: `workers`, or the cores shared among the processes."""
        return self.workers or max(1, (os.cpu_count() or 1) // self.processes)
