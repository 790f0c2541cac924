"""Decode the planned frames of one video with ffmpeg, resized and centre-cropped for the backbone, in memory.

One ffmpeg process per video: a `select` filter keeps only the planned frames, so scaling runs on those alone,
and raw RGB comes back through a pipe (no frames on disk).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from schemas.tables import VIDEO_FAILED, VIDEO_OK
from workers.ingest.frame_images import encode_jpegs
from workers.ingest.probe import VideoError, VideoInfo, last_line, probe_video
from workers.ingest.sampling import SamplingConfig, plan_frames


@dataclass(frozen=True)
class DecodedVideo:
    """Padded uint8 frames [slots, S, S, 3], their validity mask and times, the probe result and the time taken."""

    frames: np.ndarray
    mask: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo
    seconds: float


def select_expression(indices: np.ndarray) -> str:
    """An ffmpeg `select` expression that keeps exactly the given frame numbers."""
    return "+".join(f"eq(n,{int(i)})" for i in indices)


def decode_frames(path: str | Path, sampling: SamplingConfig, image_size: int) -> DecodedVideo:
    """Probe, plan and decode one video; raise VideoError (with the reason) when it cannot be used."""
    start = time.perf_counter()
    info = probe_video(path)
    plan = plan_frames(sampling, info.duration, info.fps, info.frame_count)
    stream = (
        ffmpeg.input(str(path))
        .video.filter("select", select_expression(plan.indices))
        .filter("scale", image_size, image_size, force_original_aspect_ratio="increase", flags="bicubic")
        .filter("crop", image_size, image_size)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        .global_args("-nostdin", "-xerror")
    )
    try:
        raw, _ = stream.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        raise VideoError(f"ffmpeg cannot decode the file: {last_line(error.stderr)}") from None
    frame_bytes = image_size * image_size * 3
    decoded = min(len(raw) // frame_bytes, len(plan.indices))
    if decoded == 0:
        raise VideoError("no frames could be decoded")
    frames = np.zeros((plan.slots, image_size, image_size, 3), dtype=np.uint8)
    frames[:decoded] = np.frombuffer(raw[: decoded * frame_bytes], dtype=np.uint8).reshape(
        decoded, image_size, image_size, 3
    )
    mask = np.zeros(plan.slots, dtype=bool)
    mask[:decoded] = True
    timestamps = np.zeros(plan.slots, dtype=np.float32)
    timestamps[:decoded] = plan.timestamps[:decoded]
    return DecodedVideo(frames, mask, timestamps, info, time.perf_counter() - start)


def decode_item(row: dict, sampling: SamplingConfig, image_size: int, jpeg_quality: int | None = None) -> dict:
    """Decode one discovered video into a row for the encode stage; any failure becomes a `failed` row with its
    reason (and zero frames) so that one bad file never stops a run. With `jpeg_quality` the row also carries its
    valid frames as JPEG files (`jpeg`), for the `frame_images` table."""
    out = dict(row)
    if jpeg_quality is not None:
        out["jpeg"] = []
    try:
        decoded = decode_frames(row["path"], sampling, image_size)
        if jpeg_quality is not None:
            out["jpeg"] = encode_jpegs(decoded.frames, decoded.mask, jpeg_quality)
    except VideoError as error:
        return _failed(out, str(error), sampling, image_size)
    except Exception as error:  # any other decoder crash is still one bad input, not a stopped run
        return _failed(out, f"{type(error).__name__}: {error}", sampling, image_size)
    info = decoded.info
    out.update(
        status=VIDEO_OK,
        error="",
        duration_s=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        video_codec=info.codec,
        has_audio=info.has_audio,
        frames=decoded.frames,
        frame_mask=decoded.mask,
        timestamps=decoded.timestamps,
        decode_seconds=decoded.seconds,
    )
    return out


def _failed(out: dict, reason: str, sampling: SamplingConfig, image_size: int) -> dict:
    slots = sampling.num_frames
    out.update(
        status=VIDEO_FAILED,
        error=reason,
        duration_s=float("nan"),
        fps=float("nan"),
        width=0,
        height=0,
        video_codec="",
        has_audio=False,
        frames=np.zeros((slots, image_size, image_size, 3), dtype=np.uint8),
        frame_mask=np.zeros(slots, dtype=bool),
        timestamps=np.zeros(slots, dtype=np.float32),
        decode_seconds=0.0,
    )
    return out


def thumbnail_command(path: str, seconds: float, width: int) -> list[str]:
    """The ffmpeg command line that writes one JPEG frame of `path` at `seconds`, `width` pixels wide (height kept
    in proportion, even), to standard output: what the service runs for a hit's thumbnail."""
    stream = ffmpeg.input(path, ss=seconds).output(
        "pipe:", vframes=1, format="image2", vcodec="mjpeg", vf=f"scale={width}:-2"
    )
    return stream.compile()
