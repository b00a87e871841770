"""The Ray engine's resume (stream/engines/ray.py over stream.engines.decoder's Resume): a
file whose actor is SIGKILLed mid-stream goes on in the restarted actor from the frame after the
last caption the driver received, so that the stream's captions are exactly an uninterrupted
run's (no frame lost, none twice), in containers whose seeks land late (MPEG-TS with a long GOP)
and in raw H.264, which cannot seek (decoded from its start and skipped)."""

from __future__ import annotations

import time

import pytest

from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import PipelineSettings
from stream.events import DROPPED, ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import SourceOptions, parse_sources
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from tests.media import write_video
from tests.tools.local_ray import kill_actor, local_ray  # noqa: F401 - the module's Ray

pytestmark = [pytest.mark.timeout(180)]

KILL_AFTER = 10  # the caption index after which the actor is killed (1 s into the file)

# (suffix, PyAV format, GOP in frames, first PTS): a 2 s GOP puts the resume point (~1.1 s)
# far from the keyframe before it; MPEG-TS seeks land late at this size (the retry further
# back); raw H.264 has no index to seek in; the others start at 1.5 s (a non-zero start time).
CONTAINERS = [
    pytest.param(".ts", "mpegts", 60, 0, id="mpegts-2s-gop"),
    pytest.param(".h264", "h264", 60, 0, id="raw-h264"),
    pytest.param(".mp4", None, 60, 45, id="mp4"),
    pytest.param(".flv", "flv", 60, 45, id="flv"),
]


def _pairs(events, stream):
    return [(e.index, round(e.pts, 4)) for e in events
            if isinstance(e, CaptionEvent) and e.stream == stream]


@pytest.mark.parametrize("suffix, container, gop, first_pts", CONTAINERS)
def test_a_killed_actor_resumes_a_file_with_exactly_the_frames_of_an_uninterrupted_run(
        tmp_path, suffix, container, gop, first_pts):
    """A 4 s file played in real time (so the kill lands mid-stream: the actor is never more
    than a few frames ahead of the driver) on one actor; when the driver has received caption
    10, the actor's process is SIGKILLed. The restarted actor resumes the file: the stream's
    (index, pts) sequence is the local engine's uninterrupted one, and it ends normally."""
    path = write_video(tmp_path / f"clip{suffix}", frames=120, fps=30, size=(160, 120),
                       container=container, keyframe_every=gop, first_pts=first_pts)
    loaded = open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu", threads=1))
    stream = "clip"
    reference = _pairs(Pipeline(parse_sources([str(path)]), loaded), stream)
    # 4 s at 10 fps; raw H.264 has no timestamps: timed by position at FFmpeg's 25 fps, 4.8 s
    assert [index for index, _ in reference] == list(range(48 if container == "h264" else 40))

    # A queue longer than the file: a live (real-time) stream that falls behind would drop
    # frames, and this test is about the resume losing none.
    settings = PipelineSettings(queue_size=64, source_options=SourceOptions(realtime=True))
    engine = RayPipeline(parse_sources([str(path)], settings.source_options), DEFAULT_BUNDLE, "cpu",
                         settings, RaySettings(workers=1, max_restarts=1))
    events, killed, start = [], None, time.monotonic()
    try:
        for event in engine:
            events.append(event)
            if (isinstance(event, CaptionEvent) and event.index == KILL_AFTER
                    and killed is None):
                killed = kill_actor(engine, stream)
            assert time.monotonic() - start < 120, "the run did not finish"
    finally:
        engine.close()
    assert killed is not None
    assert engine.placement()[stream][1] != killed  # it went on in a new process

    assert _pairs(events, stream) == reference
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert [e.kind for e in statuses] == [OPENED, RECONNECTING, OPENED, ENDED]
    assert "worker 1 lost" in statuses[1].message
    ended = statuses[-1]
    assert ended.error is None and ended.message == "end of stream"
    assert ended.dropped == 0 and not any(e.kind == DROPPED for e in statuses)
    # The restarted actor's first caption (with the reset: its memory starts over) is the
    # frame right after the last one the driver received before the loss, mid-file.
    lost = next(k for k, e in enumerate(events) if e is statuses[1])
    before = [e.index for e in events[:lost] if isinstance(e, CaptionEvent)]
    resets = [e.index for e in events if isinstance(e, CaptionEvent) and e.reset]
    assert resets == [0, before[-1] + 1]
    assert KILL_AFTER < resets[1] <= len(reference) - 10
