"""Probe and decode: frame content and shape from a clip of known colours, and a named reason for bad files."""

import re

import numpy as np
import pytest
from conftest import make_bad_files, make_video

from workers.ingest.decode import decode_frames, decode_item
from workers.ingest.probe import VideoError, probe_video
from workers.ingest.sampling import SamplingConfig

RED, BLUE = np.array([255, 0, 0]), np.array([0, 0, 255])


@pytest.fixture(scope="module")
def red_then_blue(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clips") / "red_blue.mp4", ["red", "blue"], seconds_each=1.0)


def test_probe_reads_duration_rate_and_size(red_then_blue):
    info = probe_video(red_then_blue)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(10.0)
    assert info.frame_count == 20
    assert (info.width, info.height, info.codec, info.has_audio) == (96, 64, "h264", False)


def test_decode_returns_cropped_frames_of_the_right_colour(red_then_blue):
    decoded = decode_frames(red_then_blue, SamplingConfig("uniform", 4), image_size=32)
    assert decoded.frames.shape == (4, 32, 32, 3) and decoded.frames.dtype == np.uint8
    assert decoded.mask.tolist() == [True] * 4
    np.testing.assert_allclose(decoded.timestamps, [0.2, 0.7, 1.2, 1.7], atol=1e-6)
    means = decoded.frames.reshape(4, -1, 3).mean(axis=1)
    for frame, expected in zip(means, [RED, RED, BLUE, BLUE], strict=True):
        assert np.abs(frame - expected).max() < 20, frame


def test_short_video_is_padded_with_a_mask(tmp_path):
    clip = make_video(tmp_path / "short.mp4", ["white"], seconds_each=0.3)
    decoded = decode_frames(clip, SamplingConfig("uniform", 8), image_size=16)
    assert decoded.frames.shape == (8, 16, 16, 3)
    assert decoded.mask.tolist() == [True] * 3 + [False] * 5
    assert not decoded.frames[3:].any()
    assert decoded.frames[:3].min() > 200


def test_fps_policy_on_other_containers(tmp_path):
    clip = make_video(tmp_path / "clip.webm", ["red", "blue", "red"], seconds_each=1.0)
    decoded = decode_frames(clip, SamplingConfig("fps", 5, fps=1.0), image_size=16)
    assert decoded.mask.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(decoded.timestamps[:3], [0.0, 1.0, 2.0])
    colours = decoded.frames[:3].reshape(3, -1, 3).mean(axis=1)
    assert colours[1][2] > 200 and colours[0][0] > 200


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file (0 bytes)"),
        ("garbage", "ffprobe cannot read the file"),
        ("truncated", "ffprobe cannot read the file"),
        ("audio", "no video stream (audio-only file)"),
    ],
)
def test_bad_files_raise_a_named_reason(bad_files, kind, reason):
    with pytest.raises(VideoError, match=re.escape(reason)):
        decode_frames(bad_files[kind], SamplingConfig(), image_size=16)


def test_decode_item_turns_failures_into_failed_rows(bad_files, red_then_blue):
    sampling = SamplingConfig("uniform", 3)
    failed = decode_item({"video_id": "x", "path": str(bad_files["empty"])}, sampling, 16)
    assert failed["status"] == "failed" and failed["error"] == "empty file (0 bytes)"
    assert failed["frames"].shape == (3, 16, 16, 3) and not failed["frame_mask"].any()
    missing = decode_item({"video_id": "y", "path": "/nonexistent/clip.mp4"}, sampling, 16)
    assert missing["status"] == "failed" and "file not found" in missing["error"]
    ok = decode_item({"video_id": "z", "path": str(red_then_blue)}, sampling, 16)
    assert ok["status"] == "ok" and ok["error"] == "" and ok["frame_mask"].all()
