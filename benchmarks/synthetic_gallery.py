"""Build a synthetic feature gallery in LanceDB (no video decoding): N videos with F frame features of width D,
one paragraph text per video with L token features, plus a randomly initialised GLSCL checkpoint that
records those features. Used to time `glscl evaluate` (and search) at ActivityNet size and beyond.

Usage: python -m benchmarks.synthetic_gallery --db DIR --videos 4917 [--frames 64 --dim 512 --words 64]
then:  glscl evaluate --checkpoint DIR/checkpoint --db DIR --split val_1

Features are random Gaussian vectors with a shared per-video component between a video and its text, so
retrieval is neither trivial nor hopeless; the numbers measure time, not quality.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glscl.checkpoint import save_checkpoint
from glscl.config import GLSCLConfig
from glscl.model import GLSCL
from schemas.catalog import Catalog
from schemas.rows import captions_table, frames_table, texts_table, videos_table
from schemas.store import StoreConfig
from schemas.tables import CAPTION_PARAGRAPH, CAPTIONS, FRAMES, TEXTS, VIDEO_OK, VIDEOS
from workers.ingest.encode import mean_vector
from workers.ingest.hashing import text_id

MODEL_ID = "synthetic-features"
SAMPLING_HASH = "synthetic"


@dataclass(frozen=True)
class GalleryConfig:
    """Size and shape of the synthetic gallery."""

    db: str
    videos: int = 4917
    frames: int = 64
    dim: int = 512
    words: int = 64
    split: str = "val_1"
    seed: int = 0
    batch: int = 1024
    model_id: str = MODEL_ID


def _batch(config: GalleryConfig, rng: np.random.Generator, start: int, stop: int) -> tuple[dict, dict, list, list]:
    n = stop - start
    shared = rng.standard_normal((n, 1, config.dim), dtype=np.float32)
    frames = shared + rng.standard_normal((n, config.frames, config.dim), dtype=np.float32)
    mask = np.ones((n, config.frames), dtype=bool)
    tokens = shared + rng.standard_normal((n, config.words, config.dim), dtype=np.float32)
    ids = [f"syn{i:09d}" for i in range(start, stop)]
    captions = [
        {
            "caption_id": text_id(vid, CAPTION_PARAGRAPH),
            "video_id": vid,
            "source_id": vid,
            "dataset": "synthetic-features",
            "split": config.split,
            "kind": CAPTION_PARAGRAPH,
            "order": -1,
            "text": f"synthetic paragraph {vid}",
            "start_s": None,
            "end_s": None,
        }
        for vid in ids
    ]
    videos = [
        {
            "video_id": vid,
            "source_id": vid,
            "source_path": "",
            "dataset": "synthetic-features",
            "split": config.split,
            "status": VIDEO_OK,
            "error": "",
            "duration_s": float(config.frames),
            "fps": 1.0,
            "size_bytes": 0,
        }
        for vid in ids
    ]
    frame_batch = {
        "video_id": np.array(ids, dtype=object),
        "status": np.array([VIDEO_OK] * n, dtype=object),
        "features": frames,
        "frame_mask": mask,
        "timestamps": np.tile(np.arange(config.frames, dtype=np.float32), (n, 1)),
        "vector": mean_vector(frames, mask),
    }
    text_batch = {
        "caption_id": np.array([c["caption_id"] for c in captions], dtype=object),
        "vector": tokens[:, -1],
        "tokens": tokens,
        "token_mask": np.ones((n, config.words), dtype=bool),
    }
    return frame_batch, text_batch, videos, captions


def build_gallery(config: GalleryConfig) -> Path:
    """Write the tables and a random checkpoint; returns the checkpoint folder."""
    catalog = Catalog(StoreConfig(config.db))
    rng = np.random.default_rng(config.seed)
    recipe = f'{{"policy": "synthetic", "num_frames": {config.frames}}}'
    start = time.perf_counter()
    for low in range(0, config.videos, config.batch):
        high = min(low + config.batch, config.videos)
        frame_batch, text_batch, videos, captions = _batch(config, rng, low, high)
        catalog.merge(VIDEOS, videos_table(videos, "synthetic-gallery"))
        catalog.merge(CAPTIONS, captions_table(captions, "synthetic-gallery"))
        catalog.merge(
            FRAMES, frames_table(frame_batch, config.model_id, recipe, SAMPLING_HASH, "synthetic-gallery"), config.dim
        )
        catalog.merge(TEXTS, texts_table(text_batch, config.model_id, config.words, "synthetic-gallery"), config.dim)
        print(f"{high}/{config.videos} videos written ({time.perf_counter() - start:.1f} s)", flush=True)
    torch.manual_seed(config.seed)
    model_config = GLSCLConfig(embed_dim=config.dim, max_frames=config.frames, max_words=config.words)
    extra = {
        "backbone_model_id": config.model_id,
        "sampling_hash": SAMPLING_HASH,
        "max_words": config.words,
        "kind": CAPTION_PARAGRAPH,
    }
    return save_checkpoint(Path(config.db) / "checkpoint", GLSCL(model_config), model_config, extra)


def build_parser() -> argparse.ArgumentParser:
    """The generator's options; defaults come from `GalleryConfig`."""
    defaults = GalleryConfig(db="")
    parser = argparse.ArgumentParser(prog="glscl bench gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="LanceDB folder to create the gallery in")
    described = {
        "videos": "videos in the gallery",
        "frames": "frames per video",
        "dim": "embedding width",
        "words": "token positions per text",
        "seed": "seed of the random features",
    }
    for name, what in described.items():
        value = getattr(defaults, name)
        parser.add_argument(f"--{name}", type=int, default=value, help=f"{what} (default {value})")
    parser.add_argument("--split", default=defaults.split, help=f"split name of the rows (default {defaults.split})")
    parser.add_argument(
        "--model-id",
        default=defaults.model_id,
        help=f"backbone model id the rows are stored under (default {defaults.model_id}); a backbone's id, e.g. "
        "glscl-tiny@random-seed0, lets `glscl train --model glscl-tiny` train on the gallery",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    args = build_parser().parse_args(argv)
    checkpoint = build_gallery(
        GalleryConfig(
            args.db, args.videos, args.frames, args.dim, args.words, args.split, args.seed, model_id=args.model_id
        )
    )
    print(f"checkpoint: {checkpoint}")


if __name__ == "__main__":
    main()
