"""Frame sampling policies: which frames of a video become model input, decided explicitly and recorded.

`uniform` takes the centre frame of K equal segments (the whole video, whatever its length). `fps` takes the
first frame of every 1/fps seconds from 0 (ActivityNet's 1 fps protocol) and, past a cap, keeps `cap` of them
by uniform index (as the GLSCL lineage does). Either way the output has a fixed number of slots; short videos
are padded and masked. The settings and the preprocessing size hash into `sampling_hash`, stored with features.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Policy = Literal["uniform", "fps"]


@dataclass(frozen=True)
class SamplingConfig:
    """How frames are chosen: a policy, the number of slots (K for uniform, the cap for fps) and the rate."""

    policy: Policy = "uniform"
    num_frames: int = 12
    fps: float = 1.0

    def __post_init__(self) -> None:
        if self.policy not in ("uniform", "fps"):
            raise ValueError(f"unknown sampling policy {self.policy!r}: use 'uniform' or 'fps'")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def describe(self, image_size: int) -> str:
        """The full decode recipe as canonical JSON: what `sampling_hash` is computed from."""
        recipe = {**asdict(self), "image_size": image_size, "resize": "short-side-bicubic+center-crop"}
        if self.policy == "uniform":
            recipe.pop("fps")
        return json.dumps(recipe, sort_keys=True)

    def hash(self, image_size: int) -> str:
        """A short stable hash of the decode recipe, part of the frames table key."""
        return hashlib.sha256(self.describe(image_size).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FramePlan:
    """Which source frames to decode (increasing indices), their times in seconds, and the padded slot count."""

    indices: np.ndarray
    timestamps: np.ndarray
    slots: int


def plan_frames(config: SamplingConfig, duration: float, video_fps: float, frame_count: int) -> FramePlan:
    """Choose frame indices for a video of `duration` seconds, `video_fps` frames/s and `frame_count` frames."""
    if duration <= 0 or video_fps <= 0 or frame_count <= 0:
        raise ValueError(f"cannot sample a video of duration {duration}s, {video_fps} fps, {frame_count} frames")
    if config.policy == "uniform":
        times = (np.arange(config.num_frames) + 0.5) * duration / config.num_frames
    else:
        count = max(1, math.ceil(duration * config.fps - 1e-9))
        times = np.arange(count) / config.fps
        if count > config.num_frames:
            times = times[np.linspace(0, count - 1, config.num_frames).round().astype(int)]
    indices = np.unique(np.clip(np.floor(times * video_fps + 1e-6).astype(np.int64), 0, frame_count - 1))
    return FramePlan(indices=indices, timestamps=(indices / video_fps).astype(np.float32), slots=config.num_frames)
