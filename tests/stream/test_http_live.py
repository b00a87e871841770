"""Live HTTP sources: a stream whose server ends it cleanly is reopened like RTSP; a file
served over HTTP (an MPEG-TS file has no duration either) ends at its end, once.

The server is local (stdlib ``http.server`` in a thread). A stream is sent as a camera sends
it: in real time, chunked (no ``Content-Length``), for about a second, then ended cleanly (the
last chunk) and the connection closed; each new request gets the stream again. A file is sent
with its ``Content-Length``, as fast as the socket takes it. The tests wait on events (the
statuses the pipeline reports), bounded by the test's timeout, never on sleeps.
"""

from __future__ import annotations

import collections
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from stream.engines.decoder import ReconnectPolicy
from stream.engines.local import Pipeline
from stream.engines.settings import PipelineSettings
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import parse_sources
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from tests.media import write_video

pytestmark = pytest.mark.timeout(120)

FPS = 25  # the rate FFmpeg's mpjpeg demuxer assumes: MJPEG timestamps match the real pace
BOUNDARY = b"frame"


def _mjpeg_frames(count: int, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """``count`` JPEG images of changing grey levels (an MJPEG camera's frames)."""
    width, height = size
    rng = np.random.default_rng(0)
    frames: list[bytes] = []
    with av.open(io.BytesIO(), "w", format="mjpeg") as output:
        stream = output.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(count):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            rgb[: height // 2] = (i * 9) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frames += [bytes(packet) for packet in stream.encode(frame)]
        frames += [bytes(packet) for packet in stream.encode()]
    return frames


class StreamServer:
    """A local HTTP server: ``/live.mjpeg`` (multipart/x-mixed-replace) and ``/live.ts``
    (MPEG-TS) stream about a second of video in real time and end cleanly; any other path is a
    file under ``root``, sent with its length. ``requests`` counts the GETs per path and
    ``ended`` the stream responses that reached their clean end (counted before the last chunk
    is sent: a client that sees the end sees the count)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: collections.Counter[str] = collections.Counter()
        self.ended: collections.Counter[str] = collections.Counter()
        self.closing = threading.Event()  # the test is over: stop streaming at once
        self.jpegs = _mjpeg_frames(FPS)
        ts = write_video(root / "live-source.ts", frames=FPS, fps=FPS, container="mpegts",
                         keyframe_every=5).read_bytes()
        # one slice of whole TS packets per frame period: about a second, paced
        per = max(188, len(ts) // FPS // 188 * 188)
        self.ts_slices = [ts[i:i + per] for i in range(0, len(ts), per)]
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked responses

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                with server._lock:
                    server.requests[name] += 1
                self.close_connection = True
                if name == "live.mjpeg":
                    self._stream("multipart/x-mixed-replace;boundary=frame",
                                 [b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(j) + j + b"\r\n"
                                  for j in server.jpegs], 1 / FPS)
                elif name == "live.ts":
                    self._stream("video/mp2t", server.ts_slices, 1 / len(server.ts_slices))
                else:
                    self._file(server.root / name)

            def _stream(self, content_type: str, pieces: list[bytes], period: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for piece in pieces:  # as a camera sends it: one piece per period
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    if server.closing.wait(period):
                        return
                with server._lock:
                    server.ended[self.path.lstrip("/")] += 1
                self.wfile.write(b"0\r\n\r\n")  # the clean end of a chunked response
                self.wfile.flush()

            def _file(self, path: Path) -> None:
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return open_bundle(tiny_bundle, SessionSettings(device="cpu"))


@pytest.fixture
def server(tmp_path) -> Iterator[StreamServer]:
    running = StreamServer(tmp_path)
    yield running
    running.close()


def _kind(event: object) -> str:
    return event.kind if isinstance(event, StatusEvent) else "caption"


@pytest.mark.parametrize("path", ["live.mjpeg", "live.ts"])
def test_a_live_http_stream_that_ends_cleanly_is_reopened_like_rtsp(loaded, server, path):
    """The server ends the response cleanly after a second: a `reconnecting` status (an end of
    stream, not an error), the stream is opened again, and its captions go on, the first with
    the reset flag, with PTS and indexes still increasing."""
    settings = PipelineSettings(reconnect=ReconnectPolicy(attempts=3, delay=0.0, max_delay=0.0))
    pipeline = Pipeline(parse_sources([f"{server.base}/{path}"], settings.source_options), loaded,
                        settings)
    events, seen = iter(pipeline), list[object]()
    ended_when_reconnecting = None
    try:
        for event in events:  # bounded by the test's timeout
            seen.append(event)
            kinds = [_kind(e) for e in seen]
            if _kind(event) == RECONNECTING and ended_when_reconnecting is None:
                ended_when_reconnecting = server.ended[path]
            if RECONNECTING in kinds and kinds[kinds.index(RECONNECTING):].count("caption") >= 2:
                break
    finally:
        events.close()
    kinds = [_kind(e) for e in seen]
    assert RECONNECTING in kinds, f"the stream was not reopened: {kinds}"
    assert ENDED not in kinds
    gap = kinds.index(RECONNECTING)
    reconnecting = seen[gap]
    assert isinstance(reconnecting, StatusEvent)
    assert "end of stream; reopening" in reconnecting.message  # a clean end, not an error
    assert ended_when_reconnecting is not None and ended_when_reconnecting >= 1
    assert server.requests[path] >= 2
    before = [e for e in seen[:gap] if isinstance(e, CaptionEvent)]
    reopened = gap + kinds[gap:].index(OPENED)
    after = [e for e in seen[reopened:] if isinstance(e, CaptionEvent)]
    assert before and before[0].reset
    assert len(after) >= 2 and after[0].reset and not any(e.reset for e in after[1:])
    captions = before + after
    assert all(b.pts > a.pts for a, b in zip(captions, captions[1:], strict=False))
    assert all(b.index > a.index for a, b in zip(captions, captions[1:], strict=False))
    assert not any(t.is_alive() for t in [*pipeline.decoders.values(), pipeline.worker])


def test_a_ts_file_served_over_http_ends_once_at_its_end(loaded, server):
    """An MPEG-TS file has no duration, so it is live; but it is sent with its length: at its
    end the stream ends (one `ended`, no error), and it is requested once, never replayed."""
    write_video(server.root / "clip.ts", frames=60, fps=30, container="mpegts")
    settings = PipelineSettings(reconnect=ReconnectPolicy(attempts=3, delay=0.0, max_delay=0.0))
    pipeline = Pipeline(parse_sources([f"{server.base}/clip.ts"], settings.source_options), loaded,
                        settings)
    events, seen = iter(pipeline), []
    try:
        for event in events:
            seen.append(event)
            if _kind(event) == RECONNECTING:  # a replay would go on for ever: stop at once
                break
    finally:
        events.close()
    kinds = [_kind(e) for e in seen]
    assert RECONNECTING not in kinds and kinds.count(OPENED) == 1
    assert kinds[-1] == ENDED and kinds.count(ENDED) == 1
    ended = seen[-1]
    assert isinstance(ended, StatusEvent)
    assert ended.error is None and ended.reconnects == 0
    assert server.requests["clip.ts"] == 1
    indexes = [e.index for e in seen if isinstance(e, CaptionEvent)]  # 2 s at 5 frames/s
    assert indexes == sorted(set(indexes)) and indexes[-1] == 9
    assert len(indexes) + ended.dropped == 10
