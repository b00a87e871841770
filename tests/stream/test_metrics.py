"""/metrics, /healthz and /readyz on the live view's server: the counters parsed with
prometheus_client's own parser and checked against the JSON Lines of the same run; readiness
before and after the model loads."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request

import av
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.cli.cameras import Cameras
from stream.media.sources import SourceOptions, parse_source
from stream.paths import SAMPLE_VIDEO
from tests.stream.test_camera_api import call, records, until
from tests.stream.test_webview import start_serving

pytestmark = pytest.mark.timeout(300)


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, camera) -> value, parsed by prometheus_client."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("camera", ""))] = sample.value
    return found


def test_the_metrics_count_what_the_jsonl_holds(tmp_path):
    out = tmp_path / "out"
    process, url = start_serving(str(SAMPLE_VIDEO), "--keep-running", "--jsonl", f"{out}/")
    base = url.rstrip("/")
    try:
        assert call(f"{base}/healthz") == (200, {"status": "ok"})
        until(base, lambda c: c["shapes_s5_00000"]["state"] == "ended", "the file captioned")
        assert call(f"{base}/readyz") == (200, {"ready": True, "waiting": []})
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            found = samples(response.read().decode())
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    lines = records(out / "shapes_s5_00000.jsonl")
    captions = [e for e in lines if e["type"] == "caption"]
    camera = "shapes_s5_00000"
    assert found[("lrcn_frames_captioned_total", camera)] == len(captions) == 89
    assert found[("lrcn_frames_sampled_total", camera)] == len(captions)  # none dropped
    assert found[("lrcn_frames_encoded_total", camera)] == sum(e["encoded"] for e in captions)
    assert found[("lrcn_caption_events_total", camera)] == sum(e["type"] == "new" for e in lines)
    assert found[("lrcn_caption_latency_seconds_count", camera)] == len(captions)
    assert found[("lrcn_caption_latency_seconds_sum", camera)] == pytest.approx(
        sum(e["latency_ms"] for e in captions) / 1000, rel=1e-6)
    assert found[("lrcn_reconnects_total", camera)] == 0
    assert found[("lrcn_model_info", "")] == 1
    # The sample: 30 fps sampled at 10; every frame decoded (H.264 is not intra-only).
    with av.open(str(SAMPLE_VIDEO)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert found[("lrcn_frames_decoded_total", camera)] == frames == 265
    assert found[("lrcn_batch_frames_sum", "")] == len(captions)  # every frame in a batch
    assert 1 <= found[("lrcn_batch_frames_count", "")] <= len(captions)


def test_ready_once_the_model_is_loaded_and_every_enabled_camera_has_opened():
    cameras = Cameras(None, SourceOptions(), {"a": str(SAMPLE_VIDEO), "b": str(SAMPLE_VIDEO)},
                      disabled={"b"})
    assert cameras.readiness() == ["the model is loading"]

    class Engine:
        def add(self, stream, source):
            pass

        def remove(self, stream):
            pass

    cameras.engine = Engine()
    assert cameras.readiness() == ["a: starting"]  # b is disabled: not waited for
    from stream.events import OPENED, StatusEvent

    cameras.write(StatusEvent("a", OPENED, 0.0))
    assert cameras.readiness() == []
    assert parse_source(str(SAMPLE_VIDEO))  # the sources stay parseable


def test_the_service_routes_need_the_token_beyond_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("LRCN_SERVE_TOKEN", "s3cret")
    process, url = start_serving(str(SAMPLE_VIDEO), "--keep-running", "--quiet")
    base = url.rstrip("/").split("?")[0]
    try:
        for route in ("/metrics", "/readyz", "/api/cameras"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}{route}?token=wrong", timeout=30)
            assert refused.value.code == 401
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
