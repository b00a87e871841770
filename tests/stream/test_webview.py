"""The live view: a real browser on a live source, tokens, routes, and stalled viewers."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stream.events import CaptionEvent
from stream.settle import Settling
from stream.sinks.webview import WebView, is_loopback, parse_address
from tests.conftest import ctrl_c_as_in_a_terminal, require_tool

ROOT = Path(__file__).resolve().parents[2]
LIVE = "lavfi:testsrc2=size=320x240:rate=30,realtime"

pytestmark = pytest.mark.timeout(180)


def start_serving(*args: str) -> tuple[subprocess.Popen[str], str]:
    """run_stream.py with --serve on a free port; returns the process and the page's URL."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_stream.py"), *args, "--quiet", "--serve",
         "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=ctrl_c_as_in_a_terminal)  # the tests stop it with SIGINT
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"live view: (http://\S+)", line)
        if found:
            return process, found.group(1)
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("run_stream.py did not start serving")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_browser_sees_captions_change_and_frames_arrive(tmp_path, engine):
    """On either engine (Ray's actors send each stream's newest frame twice a second)."""
    chromium = require_tool("chromium", "the live view's browser test")
    from playwright.sync_api import sync_playwright

    process, url = start_serving(LIVE, "--engine", engine, "--settle", "1")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(url)
            caption = ".tile .caption"
            page.wait_for_selector(f"{caption}:not(:empty)", timeout=30_000)
            first = page.inner_text(caption)
            page.wait_for_function(
                "(c) => document.querySelector('.tile .caption').textContent !== c",
                arg=first, timeout=30_000)  # a caption change arrives over SSE
            page.wait_for_function(  # an event that ended is listed with its duration
                "document.querySelectorAll('.tile .history li').length >= 2", timeout=30_000)
            assert " s)" in page.inner_text(".tile .history li:nth-child(2)")
            assert "frames/s" in page.inner_text(".tile .stats")
            pixels = """() => { const img = document.querySelector('.tile img');
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                return Array.from(g.getImageData(0, 0, c.width, c.height).data
                                  .filter((_, i) => i % 97 === 0)).join(','); }"""
            page.wait_for_function("document.querySelector('.tile img').naturalWidth > 0",
                                   timeout=30_000)
            before = page.evaluate(pixels)
            page.wait_for_timeout(1000)
            assert page.evaluate(pixels) != before  # the video keeps receiving frames
            page.screenshot(path=str(tmp_path / "live-view.png"))
            browser.close()
    finally:
        process.terminate()
        process.wait(30)
    assert (tmp_path / "live-view.png").stat().st_size > 10_000


def get(url: str, token_header: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token_header:
        request.add_header("Authorization", f"Bearer {token_header}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_beyond_loopback_a_token_is_required_and_checked():
    with pytest.raises(ValueError, match="needs a token"):
        WebView("0.0.0.0", 0, ["cam"], token="")
    view = WebView("0.0.0.0", 0, ["cam"], token="s3cret").start()
    try:
        base = f"http://127.0.0.1:{view.port}"
        assert get(f"{base}/") == 401
        assert get(f"{base}/?token=wrong") == 401
        assert get(f"{base}/events", token_header="wrong") == 401
        assert get(f"{base}/?token=s3cret") == 200
        assert get(f"{base}/", token_header="s3cret") == 200
        # only its own routes: no files, no unknown streams
        assert get(f"{base}/../etc/passwd?token=s3cret") == 404
        assert get(f"{base}/frames/other.mjpg?token=s3cret") == 404
    finally:
        view.close()


def test_a_stalled_viewer_never_holds_the_pipeline_up(tmp_path):
    """Viewers that connect and never read: captioning still runs to its end."""
    process, url = start_serving("lavfi:testsrc2=size=320x240:rate=30:d=4", "--jsonl",
                                 str(tmp_path / "out.jsonl"))
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    stalled = []
    for path in ("/events", "/frames/lavfi.mjpg", "/frames/lavfi.mjpg"):
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.append(sock)  # never read from
    try:
        wait_for_line(process, "every source has ended")  # the captioning ran to its end
    finally:
        for sock in stalled:
            sock.close()
    process.terminate()
    assert process.wait(30) == 143
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sum('"caption"' in line for line in lines) >= 20  # 4 s at 10 frames/s, all there


def wait_for_line(process: subprocess.Popen[str], text: str) -> str:
    """The first line of the served run's stderr that holds ``text``; fails if it exits
    first."""
    assert process.stderr is not None
    seen = []
    while line := process.stderr.readline():
        if text in line:
            return line.strip()
        seen.append(line)
    process.wait(30)
    raise AssertionError(f"run_stream.py exited ({process.returncode}) without saying "
                         f"{text!r}: {''.join(seen)}")


def test_the_view_stays_up_after_a_file_ends_until_ctrl_c(tmp_path):
    """A file ends in seconds; the view (and its captions) stays up to be looked at, said in
    one line, until Ctrl-C. The overlay is written when the sources end, not lost to the
    Ctrl-C. (Before: the run exited a second after the file ended.)"""
    import signal

    video = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"
    process, url = start_serving(str(video), "--jsonl", str(tmp_path / "out.jsonl"),
                                 "--overlay", str(tmp_path / "overlay.mp4"))
    try:
        notice = wait_for_line(process, "every source has ended")
        assert notice == f"every source has ended; the live view stays up at {url} until Ctrl-C"
        assert (tmp_path / "overlay.mp4").stat().st_size > 0
        with urllib.request.urlopen(url, timeout=SAFETY) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        with urllib.request.urlopen(url + "api/cameras", timeout=SAFETY) as cameras:
            assert [c["id"] for c in json.load(cameras)["cameras"]] == ["shapes_s5_00000"]
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "ended" and records[-1]["message"] == "end of stream"


SAFETY = 30.0  # seconds: only a broken view makes a test wait this long


def next_event(response) -> dict:
    """The next Server-Sent Event's data, from an open /events response. Keep-alives come every
    15 s, so a deadline, not the socket's timeout, bounds the wait for a missing event."""
    deadline = time.monotonic() + SAFETY
    data = []
    while time.monotonic() < deadline and (line := response.readline().decode()):
        if line.startswith("data: "):
            data.append(line[len("data: "):].rstrip("\n"))
        elif line == "\n" and data:
            return json.loads("".join(data))
    raise AssertionError(f"no event within {SAFETY:g} s")


def next_frame(response):
    """The next part of an open MJPEG response, decoded: an (H, W, 3) uint8 array."""
    import numpy as np
    from PIL import Image

    assert response.readline() == b"--frame\r\n"
    headers = {}
    while (line := response.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    jpeg = response.read(int(headers["content-length"]))
    assert response.readline() == b"\r\n"
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_the_view_keeps_only_the_newest_frame_and_lists_the_events():
    """Through its routes: a viewer gets the newest frame, the caption shown and the settled
    events, newest first, each with its duration once it ended."""
    import numpy as np

    def shade(value: int) -> np.ndarray:
        return np.full((16, 16, 3), value, np.uint8)

    view = WebView("127.0.0.1", 0, ["cam"]).start()
    settling = Settling(settle=1, frame_interval=0.1)

    def say(index: int, text: str, latency_ms: float) -> None:
        for event in settling.push(CaptionEvent("cam", index, index / 10, 0.0, 0.0, text, -1.0,
                                                latency_ms, changed=True, reset=index == 0)):
            view.write(event)

    base = f"http://127.0.0.1:{view.port}"
    try:
        for i in range(3):  # three frames, three captions of which two differ
            view.frame("cam", shade(60 * i), i / 10)
            say(i, f"c{i // 2}", 5.0)
        # Reads block until the server sends: SAFETY is only a safety net.
        with urllib.request.urlopen(f"{base}/frames/cam.mjpg", timeout=SAFETY) as frames:
            assert frames.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert abs(next_frame(frames).mean() - 120) < 10  # the newest, not 0 or 60
            view.frame("cam", shade(240), 0.3)
            assert abs(next_frame(frames).mean() - 240) < 10  # a new frame: the next part
        with urllib.request.urlopen(f"{base}/events", timeout=SAFETY) as events:
            snapshot = next_event(events)
            assert snapshot["type"] == "snapshot"
            [tile] = snapshot["streams"]
            assert tile["stream"] == "cam" and tile["caption"] == "c1"
            assert [(item["caption"], item["duration"]) for item in tile["history"]] == [
                ("c1", None), ("c0", pytest.approx(0.2))]  # events, not frames
            assert tile["stats"]["state"] == "live" and tile["stats"]["latency_ms"] == 5.0
            say(3, "c2", 6.0)
            change = next_event(events)
            while change["type"] != "event" or change["caption"] != "c2":
                change = next_event(events)  # stats, and the end of the event before
            assert [(item["caption"], item["duration"]) for item in change["history"]] == [
                ("c2", None), ("c1", pytest.approx(0.1)), ("c0", pytest.approx(0.2))]
            assert change["stats"]["latency_ms"] == 6.0
    finally:
        view.close()


@pytest.mark.parametrize("text, host, port", [("127.0.0.1:8080", "127.0.0.1", 8080),
                                              ("8080", "127.0.0.1", 8080),
                                              ("[::1]:9000", "::1", 9000)])
def test_addresses(text, host, port):
    assert parse_address(text) == (host, port)


def test_bad_addresses_and_loopback_rules():
    with pytest.raises(ValueError):
        parse_address("localhost:http")
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_other_host_names_are_refused_on_loopback_without_a_token():
    """DNS rebinding: a page whose domain points at 127.0.0.1 must not read the view."""
    view = WebView("127.0.0.1", 0, ["cam"]).start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{view.port}/events")
        request.add_header("Host", f"attacker.example:{view.port}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert get(f"http://localhost:{view.port}/") == 200
    finally:
        view.close()


def test_an_open_page_does_not_delay_the_end_of_a_run(tmp_path):
    import signal

    process, url = start_serving(LIVE, "--srt", str(tmp_path / "live.srt"))
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    viewer = socket.create_connection((host, int(port)))
    viewer.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert viewer.recv(100).startswith(b"HTTP/1.1 200")
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    try:
        assert process.wait(30) == 143
    finally:
        viewer.close()
    assert time.monotonic() - start < 5
    assert (tmp_path / "live.srt").read_text().count("-->") >= 1


def test_closing_twice_or_after_the_server_ended_is_harmless():
    view = WebView("127.0.0.1", 0, ["cam"]).start()
    view.close()
    view.close()  # the loop has ended: nothing to stop, no error
    WebView("127.0.0.1", 0, ["cam"]).close()  # never started


def test_a_server_that_never_listens_is_an_error_not_a_silent_start(monkeypatch):
    import asyncio

    async def never_ready(self):
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        await self._stop.wait()

    monkeypatch.setattr(WebView, "_main", never_ready)
    monkeypatch.setattr(WebView, "START_TIMEOUT", 0.2)
    view = WebView("127.0.0.1", 0, ["cam"])
    with pytest.raises(TimeoutError, match="not listening after 0.2 s"):
        view.start()
    assert not view._thread.is_alive()  # stopped, not left running


def test_a_cancelled_event_stream_stays_cancelled():
    """Server shutdown cancels open responses: the handler must not swallow that."""
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    view = WebView("127.0.0.1", 0, ["cam"])

    async def run():
        view._stop = asyncio.Event()
        task = asyncio.ensure_future(view._events(make_mocked_request("GET", "/events")))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not view._viewers

    asyncio.run(run())
