"""Reusing a generated dataset: a folder remembers the settings that made it (generation is deterministic), so the
same settings reuse it and other settings are refused rather than mixed in (their videos would join the first
run's in the database under other splits)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from workers.synthetic.videos import SyntheticConfig, SyntheticDataset

STAMP_FILE = "synthetic.json"


def _settings(stamp: dict) -> dict:
    """What decides the videos: every setting but the folder they are written to."""
    return {key: value for key, value in stamp.items() if key != "out_dir"}


def _stamp(config: SyntheticConfig) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))


def reusable_dataset(config: SyntheticConfig) -> SyntheticDataset | None:
    """The dataset in `config.out_dir` when these settings made it, None when the folder holds none; a ValueError
    naming both settings when it holds one made with others."""
    stamp = Path(config.out_dir) / STAMP_FILE
    if not stamp.exists():
        return None
    stored, wanted = _settings(json.loads(stamp.read_text())), _settings(_stamp(config))
    if stored != wanted:
        changed = [key for key in wanted if stored.get(key) != wanted[key]]
        differs = ", ".join(f"{key} {stored.get(key)!r} there, {wanted[key]!r} now" for key in changed)
        raise ValueError(
            f"{config.out_dir} holds a synthetic dataset made with other settings ({differs}); its videos are in "
            "that folder's database already: use another --out, or delete the folder to start again"
        )
    return SyntheticDataset(
        out_dir=Path(config.out_dir),
        video_dir=Path(config.out_dir) / "videos",
        train_annotations=Path(config.out_dir) / "train.json",
        val_annotations=Path(config.out_dir) / "val_1.json",
        n_train=config.n_train,
        n_val=config.n_val,
        elapsed_s=0.0,
    )


def remember_settings(config: SyntheticConfig) -> None:
    """Record the settings that made the dataset in `config.out_dir`, for `reusable_dataset`."""
    (Path(config.out_dir) / STAMP_FILE).write_text(json.dumps(_stamp(config), sort_keys=True))
