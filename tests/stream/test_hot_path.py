"""The decoders' hot path: one swscale context per thread (not one per frame), with identical
pixels, and intra-only codecs (MJPEG) never decoding the frames that are not sampled."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from stream.engines.local import Pipeline
from stream.media import frames as frames_module
from stream.media.frames import FrameCounter, TimeSampler, frame_to_rgb, sampled_frames
from stream.media.sources import parse_source
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from tests.media import write_video


def write_mjpeg(path, frames=60, fps=30, size=(96, 64)):
    """An MJPEG AVI (every frame a key frame, as a USB webcam sends)."""
    rng = np.random.default_rng(1)
    width, height = size
    with av.open(str(path), "w") as output:
        stream = output.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


@pytest.mark.parametrize("size", [(224, 224), (64, 48), (320, 240)])
def test_a_shared_reformatter_gives_the_pixels_of_a_fresh_one(tmp_path, size):
    path = write_video(tmp_path / "v.mp4", frames=20, size=(160, 120))
    shared = av.video.reformatter.VideoReformatter()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            fresh = frame.to_ndarray(width=size[0], height=size[1], format="rgb24",
                                     interpolation="BILINEAR", threads=1)
            assert np.array_equal(frame_to_rgb(frame, size, shared), fresh)


def test_each_decoder_thread_builds_one_reformatter(tmp_path, monkeypatch):
    built = []
    real = av.video.reformatter.VideoReformatter

    def Counted():  # noqa: N802 - stands in for the class
        built.append(1)
        return real()

    monkeypatch.setattr(frames_module, "VideoReformatter", Counted)
    paths = [write_video(tmp_path / f"v{k}.mp4", frames=60, seed=k) for k in range(2)]
    from stream.model.bundle import open_bundle

    loaded = open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu", threads=1))
    seen = []
    pipeline = Pipeline({f"v{k}": parse_source(str(p)) for k, p in enumerate(paths)}, loaded,
                        frame_listeners=[lambda stream, rgb, pts: seen.append(stream)])
    list(pipeline)
    assert len(seen) == 40  # 2 files of 2 s at 10 fps: every frame converted...
    assert len(built) == 2  # ...by one reformatter per decoder thread (per opening)


def test_an_intra_only_source_decodes_only_the_sampled_frames(tmp_path):
    path = write_mjpeg(tmp_path / "cam.avi", frames=60, fps=30)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        every = [(t, frame.to_ndarray(format="rgb24"))
                 for t, frame in sampled_frames(container, stream, TimeSampler(None))]
    grid = TimeSampler(10)
    expected = [(t, rgb) for t, rgb in every if grid.accept(t)]
    counter = FrameCounter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        got = [(t, frame.to_ndarray(format="rgb24"))
               for t, frame in sampled_frames(container, stream, TimeSampler(10), counter)]
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))
    assert len(got) == 20 and counter.decoded == 20  # not 60



@pytest.mark.parametrize("first, seek", [
    (0.0, True),  # a live decoder's start and an archive's first chunk
    (1.0, False),  # an unseekable resume: from the start, skipping to 1 s
])
def test_the_one_media_path_skips_an_intra_only_sources_unsampled_frames(tmp_path, first, seek):
    """The decoder and the archive read through frames_from: the skip must hold there too."""
    from stream.media.frames import frames_from

    path = write_mjpeg(tmp_path / "cam.avi", frames=60, fps=30)
    counter = FrameCounter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [t for t, _ in frames_from(container, stream, first, 10, counter, "cam",
                                           seek)]
    assert times == pytest.approx([k / 10 for k in range(int(first * 10), 20)])
    assert counter.decoded == len(times)  # nothing decoded that was not sampled
