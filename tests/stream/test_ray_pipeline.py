"""The Ray engine (stream/engines/ray.py) on a local Ray of 2 CPUs: the same captions as the
local engine, a SIGKILLed actor's streams resuming (files, lavfi cameras, RTSP), restarts used
up, the live view's frames, bounded shutdown."""

from __future__ import annotations

import os
import signal
import time

import pytest

from stream.api import caption_stream
from stream.engines.decoder import ReconnectPolicy
from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings  # noqa: E402
from stream.engines.settings import PipelineSettings
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import SourceOptions, parse_sources
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO
from tests.conftest import require_rtsp_server
from tests.media import write_video
from tests.tools.local_ray import captions, local_ray  # noqa: F401 - the module's Ray
from tests.tools.rtsp import RtspServer, free_port

pytestmark = [pytest.mark.timeout(240)]

CAMERA = "lavfi:testsrc2=size=160x120:rate=10,realtime"
OTHER_CAMERA = "lavfi:mandelbrot=size=160x120:rate=10,realtime"


def test_files_get_the_same_captions_as_on_the_local_engine(tmp_path):
    other = write_video(tmp_path / "noise.mp4", frames=45, fps=15, size=(96, 72))
    specs = [str(SAMPLE_VIDEO), str(other), "lavfi:testsrc2=size=160x120:rate=10:duration=3",
             str(tmp_path / "missing.mp4")]
    engine = RayPipeline(parse_sources(specs), DEFAULT_BUNDLE, "cpu",
                         ray_settings=RaySettings(workers=2))
    on_ray = list(engine)
    local = list(Pipeline(parse_sources(specs), open_bundle(DEFAULT_BUNDLE,
                                                            SessionSettings(device="cpu"))))
    assert captions(on_ray) == captions(local)
    assert len(captions(on_ray)) == 89 + 30 + 30
    # Spread over both workers, each stream in one of them.
    assert {worker for worker, _, _ in engine.placement().values()} == {1, 2}
    ended = {e.stream: e for e in on_ray if isinstance(e, StatusEvent) and e.kind == ENDED}
    assert set(ended) == {"shapes_s5_00000", "noise", "lavfi", "missing"}
    assert "no such file" in ended["missing"].error
    assert all(ended[s].error is None for s in ("shapes_s5_00000", "noise", "lavfi"))
    # Per stream, the events come in the order the actor emitted them.
    for stream in ("shapes_s5_00000", "noise"):
        indexes = [e.index for e in on_ray if isinstance(e, CaptionEvent) and e.stream == stream]
        assert indexes == sorted(indexes) == list(range(len(indexes)))


def test_the_library_api_runs_on_ray():
    events = list(caption_stream(str(SAMPLE_VIDEO), DEFAULT_BUNDLE, device="cpu", engine="ray",
                                 ray_settings=RaySettings(workers=1)))
    assert sum(isinstance(e, CaptionEvent) for e in events) == 89
    with pytest.raises(ValueError, match="engine must be local or ray"):
        next(caption_stream(str(SAMPLE_VIDEO), engine="spark"))


def test_the_live_view_gets_frames_at_a_reduced_rate():
    frames = []
    engine = RayPipeline(parse_sources([str(SAMPLE_VIDEO)]), DEFAULT_BUNDLE, "cpu",
                         ray_settings=RaySettings(workers=1, frames_every=0.5),
                         frame_listeners=[lambda stream, rgb, pts: frames.append((stream,
                                                                                  rgb.shape))])
    count = sum(isinstance(e, CaptionEvent) for e in engine)
    assert count == 89
    assert frames and {s for s, _ in frames} == {"shapes_s5_00000"}
    assert len(frames) < count / 2  # at most 2 a second, not one per caption
    assert frames[0][1][-1] == 3


def _kill(engine: RayPipeline, stream: str) -> int:
    _, pid, _ = engine.placement()[stream]
    assert pid is not None and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_killed_actor_is_restarted_and_its_streams_resume_without_repeating(tmp_path):
    """Worker 1 captions a file played in real time, worker 2 a camera; worker 1's process is
    SIGKILLed mid-file. Its stream says reconnecting, reopens with a reset and goes on after
    the last frame received, to the end of the file; the camera is not touched."""
    settings = PipelineSettings(source_options=SourceOptions(realtime=True))
    sources = parse_sources([str(SAMPLE_VIDEO), CAMERA], settings.source_options)
    engine = RayPipeline(sources, DEFAULT_BUNDLE, "cpu", settings,
                         RaySettings(workers=2, max_restarts=2))
    file, camera = "shapes_s5_00000", "lavfi"
    events, killed, start = [], None, time.monotonic()
    camera_after_kill = 0
    for event in engine:
        events.append(event)
        if isinstance(event, CaptionEvent):
            if event.stream == file and event.index == 30 and killed is None:
                killed = _kill(engine, file)
            if event.stream == camera and killed is not None:
                camera_after_kill += 1
        if camera_after_kill >= 40 and any(isinstance(e, StatusEvent) and e.kind == ENDED
                                           and e.stream == file for e in events):
            break
        assert time.monotonic() - start < 120, "the run did not finish"
    engine.close()
    ours = [e for e in events if e.stream == file]
    kinds = [e.kind for e in ours if isinstance(e, StatusEvent)]
    assert kinds == [OPENED, RECONNECTING, OPENED, ENDED]
    lost = next(e for e in ours if isinstance(e, StatusEvent) and e.kind == RECONNECTING)
    assert "worker 1 lost" in lost.message and lost.reconnects == 1
    shown = [e for e in ours if isinstance(e, CaptionEvent)]
    indexes = [e.index for e in shown]
    assert len(set(indexes)) == len(indexes) and indexes == sorted(indexes)
    pts = [e.pts for e in shown]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    resumed = shown[[e.reset for e in shown].index(True, 1)]
    assert resumed.index > 30 and resumed.pts > 3.0
    assert pts[-1] == pytest.approx(8.8, abs=0.15)  # to the end of the file
    ended = next(e for e in ours if isinstance(e, StatusEvent) and e.kind == ENDED)
    assert ended.error is None and ended.reconnects >= 1
    # The camera on worker 2 went on untouched: no reset, no gap, no status but its opening.
    theirs = [e for e in events if e.stream == camera]
    assert [e.kind for e in theirs if isinstance(e, StatusEvent)] == [OPENED]
    shots = [e for e in theirs if isinstance(e, CaptionEvent)]
    assert [e.index for e in shots] == list(range(len(shots)))
    assert sum(e.reset for e in shots) == 1
    assert engine.placement()[file][1] != killed


def test_when_restarts_are_used_up_the_streams_move_to_another_actor():
    sources = parse_sources([CAMERA, OTHER_CAMERA])
    engine = RayPipeline(sources, DEFAULT_BUNDLE, "cpu",
                         ray_settings=RaySettings(workers=2, max_restarts=0))
    victim, survivor = "lavfi", "lavfi-2"
    moved = None
    indexes: dict[str, list[int]] = {victim: [], survivor: []}
    resets_after_move = []
    with_time = time.monotonic()
    for event in engine:
        if isinstance(event, CaptionEvent):
            indexes[event.stream].append(event.index)
            if event.stream == victim and event.index == 10 and moved is None:
                _kill(engine, victim)
            if moved is not None and event.stream == victim:
                resets_after_move.append(event.reset)
                if len(resets_after_move) == 10:
                    break
        elif isinstance(event, StatusEvent) and event.stream == victim:
            assert event.kind != ENDED, event  # it moves, it does not end
            if "moving to worker" in event.message:
                moved = event
        assert time.monotonic() - with_time < 120
    engine.close()
    assert moved is not None and moved.kind == RECONNECTING
    assert "worker 1 died and cannot be restarted" in moved.message
    assert moved.message.endswith("moving to worker 2")
    assert resets_after_move[0] and not any(resets_after_move[1:])  # a reset at the move
    assert indexes[victim] == sorted(set(indexes[victim]))  # none twice, in order
    assert engine.placement()[victim][0] == engine.placement()[survivor][0] == 2
    assert len(indexes[survivor]) > 10  # the survivor went on


def test_with_no_actor_left_the_streams_end_with_an_error():
    engine = RayPipeline(parse_sources([CAMERA]), DEFAULT_BUNDLE, "cpu",
                         ray_settings=RaySettings(workers=1, max_restarts=0))
    ended = None
    for event in engine:
        if isinstance(event, CaptionEvent) and event.index == 10:
            _kill(engine, event.stream)
        if isinstance(event, StatusEvent) and event.kind == ENDED:
            ended = event
    started = time.monotonic()
    engine.close()
    assert time.monotonic() - started < 20
    assert ended is not None and "worker 1 died and cannot be restarted" in ended.error


def test_an_rtsp_camera_resumes_on_the_restarted_actor(tmp_path):
    python = require_rtsp_server()
    video = write_video(tmp_path / "camera.mp4", frames=360, fps=30, size=(160, 120))
    server = RtspServer(python, video, free_port()).start()
    settings = PipelineSettings(reconnect=ReconnectPolicy(attempts=10, delay=0.2, max_delay=1.0))
    try:
        engine = RayPipeline(parse_sources([server.url()]), DEFAULT_BUNDLE, "cpu", settings,
                             RaySettings(workers=1, max_restarts=1))
        shown: list[CaptionEvent] = []
        statuses: list[StatusEvent] = []
        start = time.monotonic()
        for event in engine:
            if isinstance(event, CaptionEvent):
                shown.append(event)
                if event.index == 10 and len(statuses) == 1:
                    _kill(engine, event.stream)
                if len(statuses) >= 3 and event.index >= shown[0].index + 30:
                    break
            else:
                statuses.append(event)
            assert time.monotonic() - start < 120
        engine.close()
    finally:
        server.kill()
    assert [s.kind for s in statuses[:3]] == [OPENED, RECONNECTING, OPENED]
    indexes = [e.index for e in shown]
    assert indexes == sorted(set(indexes))
    after = [e for e in shown if e.index > 10]
    assert after[0].reset and after[0].pts > shown[10].pts  # its clock goes on
