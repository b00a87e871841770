"""RTSP against a real server (GStreamer's gst-rtsp-server in its own process)."""

from __future__ import annotations

import json

import pytest

from stream.api import caption_stream
from stream.engines.decoder import ReconnectPolicy
from stream.engines.settings import PipelineSettings
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import SourceOptions
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.sinks.jsonl import JsonlSink
from tests.conftest import require_rtsp_server
from tests.media import write_video
from tests.tools.rtsp import RtspServer, free_port

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def python():
    return require_rtsp_server()


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return open_bundle(tiny_bundle, SessionSettings(device="cpu"))


@pytest.fixture(scope="module")
def camera_video(tmp_path_factory):
    """12 s of 30 fps H.264: longer than the part of it each test watches."""
    path = tmp_path_factory.mktemp("rtsp") / "camera.mp4"
    return write_video(path, frames=360, fps=30, size=(160, 120))


SETTINGS = PipelineSettings(reconnect=ReconnectPolicy(attempts=30, delay=0.2, max_delay=1.0),
                            source_options=SourceOptions(timeout=5))


def test_a_killed_server_is_reconnected_and_nothing_is_lost_or_repeated(
        python, loaded, camera_video, tmp_path):
    server = RtspServer(python, camera_video, free_port()).start()
    log = tmp_path / "events.jsonl"
    seen: list = []
    try:
        with JsonlSink(log) as sink:
            before_kill = after_restart = 0
            for event in caption_stream(server.url(), loaded, settings=SETTINGS):
                sink.write(event)
                seen.append(event)
                if isinstance(event, CaptionEvent):
                    if server.process.poll() is None and before_kill < 12:
                        before_kill += 1
                        if before_kill == 12:
                            server.kill()  # mid-stream: the client sees an end of stream
                    elif before_kill == 12 and any(
                            isinstance(e, StatusEvent) and e.kind == RECONNECTING for e in seen):
                        after_restart += 1
                        if after_restart == 12:
                            break
                elif isinstance(event, StatusEvent) and event.kind == RECONNECTING \
                        and server.process.poll() is not None:
                    server.start()
    finally:
        server.kill()
    written = [json.loads(line) for line in log.read_text().splitlines()]
    assert written == [e.to_json() for e in seen]  # every emitted event is in the file
    captions = [e for e in written if e["type"] == "caption"]
    indexes = [e["index"] for e in captions]
    assert len(set(indexes)) == len(indexes) and indexes == sorted(indexes)  # none twice
    assert len(captions) >= 24
    pts = [e["pts"] for e in captions]
    assert all(a < b for a, b in zip(pts, pts[1:], strict=False))  # time goes on across the gap
    kinds = [e["kind"] for e in written if e["type"] == "status"]
    assert kinds[0] == OPENED and RECONNECTING in kinds and kinds.count(OPENED) >= 2
    resets = [e["index"] for e in captions if e["reset"]]
    assert resets[0] == 0 and len(resets) == 2  # the state starts over at the discontinuity
    first_after = next(i for i, e in enumerate(written) if e["type"] == "status"
                       and e["kind"] == RECONNECTING)
    assert next(e for e in written[first_after:] if e["type"] == "caption")["reset"]


def test_wrong_credentials_end_the_stream_with_an_error_that_hides_them(
        python, loaded, camera_video):
    settings = PipelineSettings(reconnect=ReconnectPolicy(attempts=1, delay=0.1))
    with RtspServer(python, camera_video, free_port(), user="viewer",
                    password="right") as server:
        events = list(caption_stream(server.url("viewer:wrong-pass"), loaded,
                                     settings=settings))
        ok = next(e for e in caption_stream(server.url("viewer:right"), loaded)
                  if isinstance(e, CaptionEvent))
    [ended] = [e for e in events if isinstance(e, StatusEvent) and e.kind == ENDED]
    assert ended.error and "gave up" in ended.error
    text = "\n".join(json.dumps(e.to_json()) for e in events)
    assert "wrong-pass" not in text and "viewer:" not in text and "***@127.0.0.1" in text
    assert ok.stream == "127.0.0.1-cam"  # the right credentials work


def test_a_stalled_server_times_out_and_is_reconnected_when_it_wakes(python, loaded,
                                                                   camera_video):
    """SIGSTOP: the socket stays open but nothing comes; past --timeout the stream reopens
    (with backoff, failing while the server sleeps) and goes on once it is woken."""
    import os
    import signal
    import time

    settings = PipelineSettings(reconnect=ReconnectPolicy(attempts=30, delay=0.2, max_delay=1.0),
                                source_options=SourceOptions(timeout=1))
    server = RtspServer(python, camera_video, free_port()).start()
    kinds: list[str] = []
    stopped_at = woken = None
    captions_after = 0
    try:
        for event in caption_stream(server.url(), loaded, settings=settings):
            if isinstance(event, StatusEvent):
                kinds.append(event.kind)
                if event.kind == RECONNECTING and woken is None and stopped_at is not None \
                        and time.monotonic() - stopped_at > 2:
                    os.kill(server.process.pid, signal.SIGCONT)
                    woken = time.monotonic()
                continue
            if stopped_at is None and event.index >= 8:
                os.kill(server.process.pid, signal.SIGSTOP)
                stopped_at = time.monotonic()
            elif woken is not None:
                captions_after += 1
                if captions_after >= 5:
                    break
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.kill()
    assert RECONNECTING in kinds and kinds.count(OPENED) >= 2 and captions_after >= 5


def test_three_kills_and_restarts_in_one_run(python, loaded, camera_video, tmp_path):
    """The server dies three times; each time the stream comes back, nothing is lost."""
    server = RtspServer(python, camera_video, free_port()).start()
    log = tmp_path / "events.jsonl"
    since_open, kills = 0, 0
    try:
        with JsonlSink(log) as sink:
            for event in caption_stream(server.url(), loaded, settings=SETTINGS):
                sink.write(event)
                if isinstance(event, StatusEvent):
                    if event.kind == RECONNECTING and server.process.poll() is not None:
                        server.start()
                    if event.kind == OPENED:
                        since_open = 0
                    continue
                since_open += 1
                if since_open == 6:
                    if kills == 3:
                        break
                    server.kill()
                    kills += 1
    finally:
        server.kill()
    written = [json.loads(line) for line in log.read_text().splitlines()]
    captions = [e for e in written if e["type"] == "caption"]
    assert sum(e["reset"] for e in captions) == 4  # the start and three reconnects
    assert [e["index"] for e in captions] == sorted({e["index"] for e in captions})
    pts = [e["pts"] for e in captions]
    assert all(a < b for a, b in zip(pts, pts[1:], strict=False))
