"""Live sources that stop sending: a read timeout, then a reconnect, for every kind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from stream.api import caption_stream
from stream.engines.decoder import ReconnectPolicy, retried_packets
from stream.engines.settings import PipelineSettings
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import PipeReader, SourceOptions, parse_source
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings

pytestmark = pytest.mark.timeout(120)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "cam.fifo"
    os.mkfifo(path)
    return path


def test_a_named_pipe_is_a_live_source_with_a_read_timeout(fifo):
    source = parse_source(str(fifo), SourceOptions(timeout=2.0))
    assert (source.kind, source.live, source.timeout) == ("pipe", True, (2.0, 2.0))


def test_a_pipe_whose_writer_pauses_is_reconnected_and_goes_on(fifo, tiny_bundle):
    """The writer stops for 2.5 s with the pipe open (a stalled camera), in the middle of a
    group of pictures: after --timeout the stream reconnects (the pipe itself stays open, so
    the writer never loses its reader), its memory starts over, and captions go on from the
    next keyframe when the writer does."""
    loaded = open_bundle(tiny_bundle, SessionSettings(device="cpu"))
    writer = subprocess.Popen([sys.executable, "-m", "tests.tools.pipe_writer", str(fifo),
                               "--before", "24", "--pause", "2.5", "--after", "26",
                               "--gop", "10"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    settings = PipelineSettings(queue_size=64, reconnect=ReconnectPolicy(10, 0.0, 0.0),
                                source_options=SourceOptions(timeout=1.0))
    try:
        events = list(caption_stream(str(fifo), loaded, settings=settings))
    finally:
        writer.wait(30)
    assert writer.returncode == 0  # the reader was back before the writer went on
    kinds = [e.kind if isinstance(e, StatusEvent) else "caption" for e in events]
    # (Opening may time out too, while the writer starts its encoder: that is retried.)
    first_gap = kinds.index(RECONNECTING, kinds.index("caption"))
    assert "decode failed" in events[first_gap].message
    assert "no data for 1 s" in events[first_gap].message
    # Reopened mid-stream, the probe reaches a keyframe: the real size, no undecodable start.
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert all(e.message.endswith("h264 64x48") for e in statuses if e.kind == OPENED)
    assert all("no data for 1 s" in e.message for e in statuses if e.kind == RECONNECTING)
    reopened = first_gap + kinds[first_gap:].index(OPENED)
    after = [e for e in events[reopened:] if isinstance(e, CaptionEvent)]
    assert len(after) >= 5 and after[0].reset and not any(e.reset for e in after[1:])
    captions = [e for e in events if isinstance(e, CaptionEvent)]
    assert all(b.pts > a.pts for a, b in zip(captions, captions[1:], strict=False))
    assert [e.index for e in captions] == list(range(len(captions)))
    assert kinds[-1] == ENDED and events[-1].error is None  # the writer closed: a clean end


def test_a_stalled_pipe_read_gives_up_after_the_timeout_or_at_a_stop(fifo):
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes
    try:
        reader = PipeReader(str(fifo), timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no data for 0.3 s"):
            reader.read(10)
        assert time.monotonic() - started >= 0.3
        reader.close()
        stop = threading.Event()
        stopped = PipeReader(str(fifo), timeout=60, stop=stop)
        threading.Timer(0.2, stop.set).start()
        assert stopped.read(10) == b""  # a stop ends the read as an end of stream
        stopped.close()
    finally:
        os.close(writer)


def test_cameras_read_without_blocking_and_have_a_read_timeout():
    source = parse_source("webcam:0", SourceOptions(timeout=3.0), platform="linux")
    assert source.options["fflags"] == "nonblock" and source.timeout == (3.0, 3.0)


class _NothingYet:
    """A non-blocking input: EAGAIN ``waits`` times, then ``packets``, then its end."""

    def __init__(self, waits: int, packets: list[str]) -> None:
        self.waits, self.packets = waits, packets

    def demux(self, stream):
        while self.waits:
            self.waits -= 1
            raise BlockingIOError("EAGAIN")
        yield from self.packets


def test_a_non_blocking_read_is_retried_until_the_timeout():
    stop = threading.Event()
    assert list(retried_packets(_NothingYet(3, ["a", "b"]), None, 5.0, stop)) == ["a", "b"]
    with pytest.raises(TimeoutError, match="no frame for 0.05 s"):
        list(retried_packets(_NothingYet(10**9, []), None, 0.05, stop))
    stop.set()
    assert list(retried_packets(_NothingYet(10**9, []), None, 60.0, stop)) == []
