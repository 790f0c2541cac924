"""Probe a video file with ffprobe and turn every way it can be unusable into a named reason."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg


class VideoError(Exception):
    """A video that cannot be ingested; the message is the reason stored in its `failed` row."""


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a file's first video stream."""

    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    codec: str
    has_audio: bool


_CONTEXT_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")


def last_line(stderr: bytes | None, count: int = 2) -> str:
    """The last non-empty lines of ffmpeg's stderr, joined, without the `[demuxer @ 0x...]` pointers (so that
    equal reasons group together): they are the lines that name the problem."""
    text = (stderr or b"").decode(errors="replace")
    lines = [_CONTEXT_PREFIX.sub("", line.strip()) for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:]) if lines else "no message from ffmpeg"


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _number(*candidates: object) -> float:
    for candidate in candidates:
        try:
            value = float(candidate)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Read duration, frame rate, frame count, size and codec; raise VideoError with a reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as error:
        raise VideoError(f"ffprobe cannot read the file: {last_line(error.stderr)}") from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if video is None:
        raise VideoError("no video stream (audio-only file)" if has_audio else "no video stream in the file")
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    duration = _number(video.get("duration"), info.get("format", {}).get("duration"))
    if fps <= 0:
        raise VideoError(f"video stream ({video.get('codec_name', 'unknown codec')}) has no frame rate")
    if duration <= 0:
        raise VideoError("video stream has no duration")
    frame_count = int(_number(video.get("nb_frames")) or max(1, math.floor(duration * fps)))
    return VideoInfo(
        duration=duration,
        fps=fps,
        frame_count=frame_count,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        codec=str(video.get("codec_name", "unknown")),
        has_audio=has_audio,
    )
