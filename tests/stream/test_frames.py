from __future__ import annotations

import pytest

from stream.errors import MediaError
from stream.media.frames import TimeSampler, iter_sampled_frames, read_sampled_frames
from tests.media import write_image, write_video


@pytest.mark.parametrize("fps", [25, 30, 60])
def test_sampling_by_time_is_independent_of_source_rate(tmp_path, fps):
    path = write_video(tmp_path / f"v{fps}.mp4", frames=2 * fps, fps=fps)
    frames, times = read_sampled_frames(path, sample_fps=10, size=(32, 24))
    # Two seconds at 10 samples/s, whatever the source rate.
    assert len(times) == 20
    assert frames.shape == (20, 24, 32, 3)
    for k, t in enumerate(times):
        # Each sample is the first source frame at or after k / 10 s.
        assert k / 10 - 1e-6 <= t < k / 10 + 1 / fps


def test_none_keeps_every_frame(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=12, fps=30)
    assert len(read_sampled_frames(path, None, (16, 16))[1]) == 12


@pytest.mark.parametrize(
    "times, expected",
    [
        ([0.0, 0.04, 0.08, 0.12, 0.16, 0.2], [0.0, 0.12, 0.2]),  # 25 fps source
        ([0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.2, 0.3]),  # source at the sample rate
        ([0.0, 0.5, 0.55, 0.6], [0.0, 0.5, 0.6]),  # a gap: next sample after the late frame
    ],
)
def test_time_sampler(times, expected):
    sampler = TimeSampler(10)
    assert [t for t in times if sampler.accept(t)] == expected


def test_time_sampler_rejects_bad_rate():
    with pytest.raises(ValueError, match="positive"):
        TimeSampler(0)


def test_still_image_is_one_frame(tmp_path):
    path = write_image(tmp_path / "img.png", color=200)
    frames = list(iter_sampled_frames(path, 10, (8, 8)))
    assert len(frames) == 1 and frames[0].time == 0.0
    assert abs(int(frames[0].rgb.mean()) - 200) <= 2


def test_missing_file_names_the_input(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(MediaError, match="nope.mp4"):
        list(iter_sampled_frames(missing, 10, (8, 8)))


def test_not_media_names_the_input(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match="bad.mp4"):
        list(iter_sampled_frames(bad, 10, (8, 8)))
