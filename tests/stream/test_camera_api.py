"""The cameras' HTTP API of run_stream.py (--serve, --keep-running; stream/cli/cameras.py),
with a real HTTP client against the real server, on both engines: a camera added, listed,
disabled, enabled and removed, and a camera of the command line removed, while another camera
keeps captioning with no index gap and no reset."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.stream.test_webview import start_serving

LIVE = "lavfi:testsrc2=size=160x120:rate=10,realtime"  # an endless, paced camera
SAFETY = 90.0  # seconds: only a broken service makes a wait this long

pytestmark = pytest.mark.timeout(300)


def call(url: str, method: str = "GET", body: object = None,
         content_type: str | None = "application/json") -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if content_type and method != "GET":
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def cameras(base: str) -> dict[str, dict]:
    status, body = call(f"{base}/api/cameras")
    assert status == 200
    return {camera["id"]: camera for camera in body["cameras"]}


def until(base: str, check, what: str) -> dict[str, dict]:
    """The cameras once ``check(cameras)`` holds (the service is asynchronous: polled)."""
    deadline = time.monotonic() + SAFETY
    while time.monotonic() < deadline:
        listed = cameras(base)
        if check(listed):
            return listed
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {SAFETY:g} s; last {cameras(base)}")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_cameras_come_and_go_while_another_keeps_captioning(tmp_path, engine):
    out = tmp_path / "out"
    process, url = start_serving(LIVE, LIVE, "--keep-running", "--engine", engine,
                                 "--queue-size", "64", "--settle", "1",
                                 "--jsonl", f"{out}/")
    base = url.rstrip("/")
    try:
        listed = until(base, lambda c: {c["lavfi"]["state"], c["lavfi-2"]["state"]} == {"live"},
                       "the command line's cameras live")
        fps_in = listed["lavfi"]["decoded_fps"]
        assert (fps_in is None) if engine == "ray" else (fps_in > 0)  # counted by local only
        # Bad requests: one line each, nothing disturbed.
        assert call(f"{base}/api/cameras", "POST", {"source": LIVE, "id": "lavfi"})[0] == 409
        assert call(f"{base}/api/cameras", "POST", {"source": ""})[0] == 400
        status, body = call(f"{base}/api/cameras", "POST", {"source": LIVE, "colour": "red"})
        assert status == 400 and "unknown key 'colour'" in body["error"]
        assert call(f"{base}/api/cameras", "POST", {"source": LIVE},
                    content_type="text/plain")[0] == 415
        assert call(f"{base}/api/cameras/nobody", "DELETE")[0] == 404
        # Added by its source alone: the id follows the stream-id rule.
        status, body = call(f"{base}/api/cameras", "POST", {"source": LIVE})
        assert status == 201 and body["id"] == "lavfi-3" and body["source"] == LIVE
        until(base, lambda c: c["lavfi-3"]["frames"] >= 5, "the added camera captioned")
        assert call(f"{base}/api/cameras/lavfi-3/disable", "POST")[0] == 200
        until(base, lambda c: c["lavfi-3"]["state"] == "disabled", "disabled")
        assert call(f"{base}/api/cameras/lavfi-3/enable", "POST")[0] == 200
        until(base, lambda c: c["lavfi-3"]["state"] == "live" and c["lavfi-3"]["frames"] >= 3,
              "enabled again")
        assert call(f"{base}/api/cameras/lavfi-3", "DELETE") == (200, {"removed": "lavfi-3"})
        assert call(f"{base}/api/cameras/lavfi-2", "DELETE")[0] == 200  # one of the start's
        until(base, lambda c: set(c) == {"lavfi"}, "both removed")
        until(base, lambda c: c["lavfi"]["frames"] >= 20, "the camera that stays goes on")
        assert cameras(base)["lavfi"]["state"] == "live"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    kept = [e for e in records(out / "lavfi.jsonl") if e["type"] == "caption"]
    assert [e["index"] for e in kept] == list(range(len(kept))) and len(kept) >= 20  # no gap
    assert [e["index"] for e in kept if e["reset"]] == [0]  # no reset
    # The other camera of the start, until it was removed: no gap, no reset either.
    other = [e for e in records(out / "lavfi-2.jsonl") if e["type"] == "caption"]
    assert [e["index"] for e in other] == list(range(len(other))) and len(other) >= 5
    assert [e["index"] for e in other if e["reset"]] == [0]
    for removed in ("lavfi-2", "lavfi-3"):  # closed complete: their last records say so
        lines = records(out / f"{removed}.jsonl")
        ended = [e for e in lines if e["type"] == "status" and e["kind"] == "ended"]
        assert ended and ended[-1]["message"] == "removed"
        assert lines[-1]["type"] in ("end", "status")
    added = records(out / "lavfi-3.jsonl")
    # Disabled and enabled: two runs in the one file, each starting over with a reset.
    assert [e["index"] for e in added if e["type"] == "caption" and e["reset"]] == [0, 0]
