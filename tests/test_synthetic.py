"""The synthetic benchmark: ActivityNet-format annotations, ffmpeg-made videos that match their captions, seed
determinism, and frame timing that hides direction and event order from any order-blind pooling."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from workers.ingest.sampling import SamplingConfig, plan_frames
from workers.synthetic.videos import (
    BACKGROUND,
    PALETTE,
    Event,
    SyntheticConfig,
    SyntheticDataset,
    frame_objects,
    generate_synthetic_dataset,
    order_test_candidates,
)

SMALL = {"n_train": 4, "n_val": 2, "size": 32, "object_size": 8, "duration": 2.0, "fps": 8}


def small_config(out_dir: Path, **changes: object) -> SyntheticConfig:
    """Six 2-second 32 px videos, half of them with two events."""
    return SyntheticConfig(out_dir=out_dir, **{**SMALL, "two_event_fraction": 0.5, **changes})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    calls: list[tuple[int, int]] = []
    result = generate_synthetic_dataset(
        small_config(tmp_path_factory.mktemp("synthetic")), progress=lambda *c: calls.append(c)
    )
    assert calls[-1] == (6, 6)
    return result


def annotations(dataset: SyntheticDataset) -> dict[str, dict]:
    """Both splits' entries."""
    return {**json.loads(dataset.train_annotations.read_text()), **json.loads(dataset.val_annotations.read_text())}


def decode_frame(path: Path, frame: int, size: int) -> np.ndarray:
    """One frame of a video as an RGB array [size, size, 3]."""
    raw, _ = (
        ffmpeg.input(str(path))
        .filter("select", f"eq(n,{frame})")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", frames=1)
        .run(capture_stdout=True, capture_stderr=True)
    )
    return np.frombuffer(raw, np.uint8).reshape(size, size, 3).astype(int)


def test_annotations_are_activitynet_captions(dataset: SyntheticDataset) -> None:
    train = json.loads(dataset.train_annotations.read_text())
    val = json.loads(dataset.val_annotations.read_text())
    assert dataset.val_annotations.name == "val_1.json"
    assert (len(train), len(val)) == (4, 2) and not set(train) & set(val)
    for video_id, entry in {**train, **val}.items():
        assert video_id.startswith("v_") and (dataset.video_dir / f"{video_id}.mp4").is_file()
        assert set(entry) == {"duration", "timestamps", "sentences"} and entry["duration"] == 2.0
        assert len(entry["timestamps"]) == len(entry["sentences"])
        expected = [[0.0, 2.0]] if len(entry["sentences"]) == 1 else [[0.0, 1.0], [1.0, 2.0]]
        assert entry["timestamps"] == expected
        assert all(Event.from_sentence(s).sentence == s for s in entry["sentences"])
    captions = [tuple(entry["sentences"]) for entry in annotations(dataset).values()]
    assert len(set(captions)) == len(captions)
    assert Counter(len(c) for c in captions) == {1: 3, 2: 3}


def test_same_seed_same_dataset(dataset: SyntheticDataset, tmp_path: Path) -> None:
    again = generate_synthetic_dataset(small_config(tmp_path / "again"), progress=lambda *_: None)
    assert again.train_annotations.read_text() == dataset.train_annotations.read_text()
    assert again.val_annotations.read_text() == dataset.val_annotations.read_text()
    for video in sorted(dataset.video_dir.iterdir()):
        assert (again.video_dir / video.name).read_bytes() == video.read_bytes()
    other = generate_synthetic_dataset(small_config(tmp_path / "other", seed=1), progress=lambda *_: None)
    assert other.train_annotations.read_text() != dataset.train_annotations.read_text()


def test_videos_are_h264_with_the_configured_geometry(dataset: SyntheticDataset) -> None:
    for video in dataset.video_dir.glob("v_*.mp4"):
        probe = ffmpeg.probe(str(video))
        (stream,) = probe["streams"]
        assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
        assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (32, 32, "8/1")
        assert int(stream["nb_frames"]) == 16
        assert float(probe["format"]["duration"]) == pytest.approx(2.0, abs=0.01)


def test_pixels_show_the_captioned_object_where_expected(dataset: SyntheticDataset) -> None:
    config = small_config(dataset.out_dir)
    half = config.object_size // 2
    for video_id, entry in annotations(dataset).items():
        events = [Event.from_sentence(s) for s in entry["sentences"]]
        objects = frame_objects(config, events)
        for frame in (1, 6, 9, 14):  # inside each stop of each event
            event, x, y = objects[frame]
            image = decode_frame(dataset.video_dir / f"{video_id}.mp4", frame, config.size)
            assert np.abs(image[y + half, x + half] - PALETTE[event.colour]).max() < 40, (video_id, frame)
            mirror = config.size - config.object_size - (x if event.direction in ("left", "right") else y)
            other = (mirror, y) if event.direction in ("left", "right") else (x, mirror)
            assert np.abs(image[other[1] + half, other[0] + half] - BACKGROUND).max() < 40, (video_id, frame)


def centres(n: int, k: int) -> np.ndarray:
    return np.floor((np.arange(k) + 0.5) * n / k).astype(int)


def starts(n: int, k: int) -> np.ndarray:
    return np.floor(np.arange(k) * n / k).astype(int)


def linspace_rounded(n: int, k: int) -> np.ndarray:
    return np.linspace(0, n - 1, k).round().astype(int)


def linspace_truncated(n: int, k: int) -> np.ndarray:
    return np.linspace(0, n - 1, k).astype(int)


def project_uniform(config: SyntheticConfig) -> Callable[[int, int], np.ndarray]:
    """The project's own `uniform` sampler (segment centres over the video's duration)."""
    return lambda n, k: plan_frames(SamplingConfig("uniform", k), config.duration, config.fps, n).indices


def sampled(config: SyntheticConfig, events: list[Event], indices: np.ndarray) -> Counter:
    """The multiset of (colour, shape, x, y) in the sampled frames: all that mean pooling can see."""
    objects = frame_objects(config, events)
    return Counter((objects[i][0].colour, objects[i][0].shape, *objects[i][1:]) for i in indices)


@pytest.mark.parametrize("changes", [{}, SMALL, {"stops_per_event": 4}], ids=["default", "small", "4-stops"])
def test_sampled_frames_hide_direction_and_order(changes: dict, tmp_path: Path) -> None:
    config = SyntheticConfig(out_dir=tmp_path, **changes)
    samplers = [centres, starts, linspace_rounded, linspace_truncated, project_uniform(config)]
    n = config.n_frames
    red, blue = Event("red", "square", "left"), Event("blue", "circle", "up")
    one_per_span = 2 * config.stops_per_event
    for k in [k for k in (4, 8, 12, 16) if k % one_per_span == 0]:
        for sampler in samplers:
            indices = sampler(n, k)
            assert len(indices) == k
            for events in ([red], [blue], [red, blue]):
                seen = sampled(config, events, indices)
                assert sampled(config, [e.flipped() for e in events], indices) == seen
                assert sampled(config, events[::-1], indices) == seen
                for i in range(len(events)):
                    flipped = [e.flipped() if j == i else e for j, e in enumerate(events)]
                    assert sampled(config, flipped, indices) == seen
    positions = [xy for _, *xy in frame_objects(config, [red])]
    assert positions != [xy for _, *xy in frame_objects(config, [red.flipped()])]
    assert positions[0][0] > positions[-1][0] and positions[0][1] == positions[-1][1]


def test_the_fps_policy_is_symmetric_too(tmp_path: Path) -> None:
    config = SyntheticConfig(out_dir=tmp_path)
    events = [Event("green", "square", "right"), Event("white", "circle", "down")]
    for rate in (1.0, 2.0):
        indices = plan_frames(SamplingConfig("fps", 64, rate), config.duration, config.fps, config.n_frames).indices
        seen = sampled(config, events, indices)
        assert sampled(config, events[::-1], indices) == seen
        assert sampled(config, [e.flipped() for e in events], indices) == seen


def test_order_test_candidates() -> None:
    true = ["a red square moves left.", "a blue circle moves up."]
    assert order_test_candidates(true) == [
        true,
        ["a blue circle moves up.", "a red square moves left."],
        ["a red square moves right.", "a blue circle moves up."],
        ["a red square moves left.", "a blue circle moves down."],
    ]
    with pytest.raises(ValueError, match="two-sentence"):
        order_test_candidates(true[:1])
    with pytest.raises(ValueError, match="not a synthetic caption"):
        order_test_candidates(["a red square jumps.", true[1]])


def test_captions_repeat_only_when_they_run_out(tmp_path: Path) -> None:
    config = small_config(
        tmp_path, n_train=5, n_val=1, colours=("red",), shapes=("square",), two_event_fraction=0.0, duration=1.0
    )
    result = generate_synthetic_dataset(config, progress=lambda *_: None)
    captions = [tuple(entry["sentences"]) for entry in annotations(result).values()]
    assert len(captions) == 6 and len(set(captions)) == 4
    assert len(list(result.video_dir.glob("v_*.mp4"))) == 6


def test_config_rejects_spans_that_split_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 2 x stops_per_event"):
        SyntheticConfig(out_dir=tmp_path, duration=1.5, fps=10)
    with pytest.raises(ValueError, match="colours"):
        SyntheticConfig(out_dir=tmp_path, colours=("mauve",))
