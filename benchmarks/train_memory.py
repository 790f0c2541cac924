"""Training memory and throughput against the split's size: peak resident memory of each training worker (and of
the stream's reader actors) and pairs/s, on synthetic feature galleries of growing size.

Usage: python -m benchmarks.train_memory --root /tmp/trainmem --videos 2000 8000 32000 --workers 1 2
       [--code /path/to/other/checkout --label before]   # the same run on another version of the code

Each gallery (`benchmarks.synthetic_gallery`, train split, stored under the tiny backbone's model id) is written
once under ROOT. Each run trains a head preset sized to D = 512 (temporal_init=random, so the width need not
match the backbone) in a fresh process whose imports come from `--code`: `--max-steps` steps, or one whole epoch with
`--epoch` (that run's pairs/s is the epoch's, reading included). A sampler in the run's process reads the
high-water mark (VmHWM) of the trainer processes (the run's own with one worker; Ray Train's workers with
several) and of the reader actors every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ray
import torch

from benchmarks.synthetic_gallery import GalleryConfig, build_gallery
from glscl.backbone_config import BackboneConfig
from glscl.config import TrainConfig
from glscl.data import PairData, rank_batches
from glscl.model import GLSCL
from glscl.recipes import recipe_head
from glscl.training import Trainer, TrainModule
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.features import FeatureQuery, read_split
from workers.ray_config import StreamConfig
from workers.split_rows import locate_split
from workers.synthetic.videos import SyntheticConfig, generate_synthetic_dataset
from workers.table_pairs import TablePairs
from workers.train.stream import ray_batches

FRAMES, DIM, WORDS = 64, 512, 32

# Runs in a fresh interpreter with `--code` first on the path; uses only APIs both trainers share.
_RUN = r"""
import json, sys, threading, time
from pathlib import Path
import ray
from glscl.backbone_config import BackboneConfig
from glscl.config import TrainConfig
from glscl.recipes import recipe_head
from schemas.store import StoreConfig
from workers.features import FeatureQuery
from workers.train.worker import TrainJob, ray_train, train_worker

db, out, max_steps = sys.argv[1], sys.argv[2], sys.argv[4]
workers, batch, words, head = int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
mode, dim = sys.argv[8], int(sys.argv[9])
peaks = {"trainer": 0.0, "readers": 0.0}

def hwm(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0

def sample():
    while True:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                command = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            role = "trainer" if "RayTrainWorker" in command else "readers" if "StepReader" in command else None
            if role:
                peaks[role] = max(peaks[role], hwm(proc.name))
        if workers == 1:
            peaks["trainer"] = max(peaks["trainer"], hwm("self"))
        time.sleep(0.2)

threading.Thread(target=sample, daemon=True).start()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
backbone = BackboneConfig()
model = recipe_head(head, "project", {"temporal_init": "random"}, dim, 64, words, False)
job = TrainJob(
    store=StoreConfig(db), backbone=backbone, train_query=FeatureQuery("train", backbone.model_id, words),
    val_query=None, model=model, train=TrainConfig(epochs=1, batch_size=batch, log_every=1, mode=mode),
    output_dir=out, max_steps=None if max_steps == "epoch" else int(max_steps),
)
start = time.perf_counter()
history = train_worker(job) if workers == 1 else ray_train(job, workers, use_gpu=False)
wall = time.perf_counter() - start
time.sleep(0.5)
epochs = [r for r in history if r.get("event") == "epoch"]
steps = [r for r in history if r.get("event") == "step"]
print("RESULT " + json.dumps({
    "peak_trainer_mb": round(peaks["trainer"]), "peak_readers_mb": round(peaks["readers"]),
    "pairs_per_s": round(epochs[-1]["pairs_per_s"], 1) if epochs else None,
    "steps": len(steps), "wall_s": round(wall, 1),
}))
"""


def gallery(root: Path, videos: int) -> str:
    """The synthetic train split of `videos` videos under ROOT (written on first use)."""
    db = root / f"gallery-{videos}"
    if not (db / "texts.lance").exists():
        model_id = BackboneConfig().model_id
        build_gallery(GalleryConfig(str(db), videos, FRAMES, DIM, WORDS, "train", batch=2_000, model_id=model_id))
    return str(db)


def video_split(root: Path, videos: int, keep_frames: bool) -> str:
    """A train split of `videos` generated clips (64 frames of 64 x 64 each, the tiny backbone's input size),
    ingested with 64 uniform frames through `glscl ingest`, keeping the frames as JPEG when asked (written on first
    use): full fine-tuning's data."""
    folder = root / f"videos-{videos}"
    db = folder / ("db-kept" if keep_frames else "db")
    if not (db / "frames.lance").exists():
        if not (folder / "train.json").exists():
            generate_synthetic_dataset(SyntheticConfig(out_dir=folder, n_train=videos, n_val=0, duration=6.4))
        command = [sys.executable, "-m", "pipelines.cli", "ingest", str(folder / "train.json"), "--db", str(db)]
        command += ["--video-root", str(folder / "videos"), "--frames", "64", "--max-words", str(WORDS)]
        command += ["--keep-frames"] if keep_frames else []
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home")}
        subprocess.run(command, env=env, check=True, capture_output=True)
    return str(db)


def run_once(code: Path, db: str, output: Path, workers: int, steps: str, batch: int, head: str, mode: str) -> dict:
    """One training run in a fresh interpreter importing from `code`; its measurements."""
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_DEDUP_LOGS": "0"}
    dim = DIM if mode == "head" else BackboneConfig().embed_dim
    argv = [sys.executable, "-c", _RUN, db, str(output), str(workers), steps, str(batch), str(WORDS), head]
    argv += [mode, str(dim)]
    done = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def throughput(db: str, head: str, batch: int, epochs: int = 2) -> list[dict]:
    """Pairs/s per epoch of `Trainer.fit` in this process on the split read whole and on the stream (this
    checkout's trainer only), with the seconds spent waiting for batches."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    catalog, query = Catalog(StoreConfig(db)), FeatureQuery("train", BackboneConfig().model_id, WORDS)
    config = recipe_head(head, "project", {"temporal_init": "random"}, DIM, FRAMES, WORDS, False)
    split = read_split(catalog, query)
    whole = PairData(
        split.video_feats, split.video_mask, split.tokens, split.text_to_video, split.sentence, split.token_mask
    )
    rows = []
    for name, data, stream in (
        ("read whole", whole, rank_batches),
        ("streamed", TablePairs(locate_split(catalog, query)), ray_batches(StreamConfig())),
    ):
        torch.manual_seed(0)
        trainer = Trainer(TrainModule(GLSCL(config)), config, TrainConfig(epochs=epochs, batch_size=batch, log_every=0))
        for stats in trainer.fit(data, stream=stream):
            rows.append({"source": name, **{k: round(v, 2) for k, v in stats.items()}})
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="glscl bench train-memory", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder for the galleries and run folders")
    parser.add_argument("--videos", type=int, nargs="+", default=[2000, 8000, 32000], help="training videos")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="training workers per run")
    parser.add_argument("--max-steps", default="20", help="steps per run, or 'epoch' for one whole epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per global batch (default 64)")
    parser.add_argument(
        "--head",
        choices=["tiny", "paper"],
        default="tiny",
        help="head preset at D=512 (default tiny: fast steps, so reading the data weighs most; paper: about 15 s "
        "a step at batch 64 on 2 cores)",
    )
    parser.add_argument("--code", default=".", help="checkout whose trainer runs (default: this one)")
    parser.add_argument("--label", default="current", help="name of this code version in the results")
    parser.add_argument("--out", default=None, help="JSON file the rows are appended to")
    parser.add_argument(
        "--mode",
        choices=["head", "full"],
        default="head",
        help="head: synthetic feature splits (default); full: fine-tune the tiny backbone on generated clips, "
        "64 frames each, decoded as the run reads them",
    )
    parser.add_argument(
        "--keep-frames",
        action="store_true",
        help="full mode: ingest keeping the sampled frames (JPEG), so that the run reads them instead of decoding",
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="instead: pairs/s per epoch in this process, split read whole vs streamed, on the first --videos size",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: one row per (videos, workers), printed as Markdown and appended to --out."""
    args = build_parser().parse_args(argv)
    root, code = Path(args.root), Path(args.code).resolve()
    if args.throughput:
        for row in throughput(gallery(root, args.videos[0]), args.head, args.batch_size):
            print(json.dumps(row), flush=True)
        return
    rows = []
    print("| code | videos | workers | steps | peak RSS per trainer MB | readers MB | pairs/s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for videos in args.videos:
        db = gallery(root, videos) if args.mode == "head" else video_split(root, videos, args.keep_frames)
        for workers in args.workers:
            output = root / f"run-{args.label}-{videos}-{workers}-{time.time_ns()}"
            row = {"code": args.label, "mode": args.mode, "videos": videos, "workers": workers}
            row |= {"frames": "kept" if args.keep_frames else "decoded"} if args.mode == "full" else {}
            row |= run_once(code, db, output, workers, args.max_steps, args.batch_size, args.head, args.mode)
            rows.append(row)
            cells = [row[k] for k in ("code", "videos", "workers", "steps", "peak_trainer_mb", "peak_readers_mb")]
            cells += [row["pairs_per_s"], row["wall_s"]]
            print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    if args.out:
        path = Path(args.out)
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
