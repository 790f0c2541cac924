"""Frame sampling policies: exact indices and times, short and long videos, and the recorded hash."""

import numpy as np
import pytest

from workers.ingest.sampling import SamplingConfig, plan_frames


def test_uniform_takes_segment_centres():
    plan = plan_frames(SamplingConfig("uniform", 4), duration=4.0, video_fps=10.0, frame_count=40)
    assert plan.indices.tolist() == [5, 15, 25, 35]
    np.testing.assert_allclose(plan.timestamps, [0.5, 1.5, 2.5, 3.5])
    assert plan.slots == 4


def test_uniform_on_a_short_video_keeps_distinct_frames_only():
    plan = plan_frames(SamplingConfig("uniform", 12), duration=0.5, video_fps=10.0, frame_count=5)
    assert plan.indices.tolist() == [0, 1, 2, 3, 4]
    assert plan.slots == 12


def test_fps_policy_takes_first_frame_of_each_second():
    plan = plan_frames(SamplingConfig("fps", 64, fps=1.0), duration=5.5, video_fps=30.0, frame_count=165)
    assert plan.indices.tolist() == [0, 30, 60, 90, 120, 150]
    np.testing.assert_allclose(plan.timestamps, [0, 1, 2, 3, 4, 5])
    assert plan.slots == 64


def test_fps_policy_caps_long_videos_uniformly():
    plan = plan_frames(SamplingConfig("fps", 4, fps=1.0), duration=100.0, video_fps=25.0, frame_count=2500)
    np.testing.assert_allclose(plan.timestamps, [0, 33, 66, 99])
    assert len(plan.indices) == 4


def test_sampling_hash_depends_on_every_setting():
    base = SamplingConfig("uniform", 12)
    hashes = {
        base.hash(224),
        base.hash(64),
        SamplingConfig("uniform", 8).hash(224),
        SamplingConfig("fps", 12).hash(224),
        SamplingConfig("fps", 12, fps=2.0).hash(224),
    }
    assert len(hashes) == 5
    assert base.hash(224) == SamplingConfig("uniform", 12, fps=5.0).hash(224)  # fps is unused by uniform


@pytest.mark.parametrize("kwargs", [{"policy": "random"}, {"num_frames": 0}, {"fps": 0.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)


def test_unusable_video_metadata_is_refused():
    with pytest.raises(ValueError, match="cannot sample"):
        plan_frames(SamplingConfig(), duration=0.0, video_fps=10.0, frame_count=0)
