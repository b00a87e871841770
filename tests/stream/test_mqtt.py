"""--mqtt against Debian's mosquitto broker, started (and restarted) by the tests: every event
arrives, in order per stream, credentials stay hidden, the password can stay out of the command
line (LRCN_MQTT_PASSWORD, LRCN_MQTT_PASSWORD_FILE), and a broker restart stops nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.api import caption_stream
from stream.events import CaptionEvent
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO
from stream.sinks.mqtt import MqttSink, parse_mqtt_url
from tests.conftest import STRICT
from tests.tools.mqtt_broker import Broker, Subscriber, find_mosquitto
from tests.tools.rtsp import free_port

ROOT = Path(__file__).resolve().parents[2]
CAMERA = "lavfi:testsrc2=size=160x120:rate=10,realtime"
PASSWORD_ENV, PASSWORD_FILE_ENV = "LRCN_MQTT_PASSWORD", "LRCN_MQTT_PASSWORD_FILE"  # as users set

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def no_password_in_the_environment(monkeypatch):
    """The tests set the password variables themselves; a developer's own must not leak in."""
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)


def mosquitto() -> str:
    executable = find_mosquitto()
    if executable is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if STRICT:
            pytest.fail(f"LRCN_STRICT is set but {message}")
        pytest.skip(message)
    return executable


@pytest.fixture()
def broker(tmp_path):
    broker = Broker(mosquitto(), tmp_path, free_port()).start()
    yield broker
    broker.stop()


@pytest.fixture()
def locked_broker(tmp_path):
    """A broker that refuses anyone but bob with his password."""
    broker = Broker(mosquitto(), tmp_path, free_port(), users={"bob": "s3cret"}).start()
    yield broker
    broker.stop()


def run_stream(*args: str, env: dict[str, str], timeout: float = 150):
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **env})


def by_stream(messages):
    """Each stream's numbered messages (events, statuses, frames), in the order they came."""
    streams: dict[str, list[dict]] = {}
    for topic, payload in messages:
        if isinstance(payload, dict) and "seq" in payload:
            streams.setdefault(topic.split("/")[-2], []).append(payload)
    return streams


def retained(messages, stream):
    """The captions published on ``stream``'s caption topic, in order."""
    return [payload for topic, payload in messages if topic.endswith(f"/{stream}/caption")]


def test_mqtt_urls():
    target = parse_mqtt_url("mqtt://bob:p%40ss@broker.local/site/events")
    assert (target.host, target.port, target.topic, target.tls) == (
        "broker.local", 1883, "site/events", False)
    assert (target.username, target.password) == ("bob", "p@ss")
    assert "p%40ss" not in repr(target) and "p@ss" not in repr(target)
    assert target.name == "mqtt://***@broker.local/site/events"
    assert parse_mqtt_url("mqtts://broker:9999/t").port == 9999
    assert parse_mqtt_url("mqtts://broker/t").port == 8883
    for bad, message in (("mqtt://u:secret@host:99999/t", "port"), ("mqtt:///t", "no broker"),
                         ("mqtt://host/a/#", "without wildcards"), ("tcp://host/t", "mqtt://")):
        with pytest.raises(ValueError, match=message) as raised:
            parse_mqtt_url(bad)
        assert "secret" not in str(raised.value)


def test_the_password_comes_from_the_url_else_the_file_or_the_variable(monkeypatch, tmp_path):
    # A user and no password anywhere: the user name alone, as before.
    assert parse_mqtt_url("mqtt://bob@broker/t").password is None
    monkeypatch.setenv(PASSWORD_ENV, "")  # empty counts as unset, as for --serve-token's
    assert parse_mqtt_url("mqtt://bob@broker/t").password is None

    monkeypatch.setenv(PASSWORD_ENV, "p@ss word")
    target = parse_mqtt_url("mqtt://bob@broker/t")
    assert (target.username, target.password) == ("bob", "p@ss word")
    assert "p@ss" not in repr(target) and target.name == "mqtt://***@broker/t"
    # The URL's own password wins; the environment is not read at all.
    assert parse_mqtt_url("mqtt://bob:url%21@broker/t").password == "url!"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "absent"))
    assert parse_mqtt_url("mqtt://bob:url%21@broker/t").password == "url!"

    monkeypatch.delenv(PASSWORD_ENV)
    secret = tmp_path / "mqtt-password"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(secret))
    for text in ("fr0m file\n", "fr0m file\r\nsecond line\n", "fr0m file"):
        secret.write_text(text, encoding="utf-8", newline="")
        assert parse_mqtt_url("mqtts://bob@broker/t").password == "fr0m file"  # first line


@pytest.mark.parametrize("environment, message", [
    ({PASSWORD_FILE_ENV: "{tmp}/absent"},
     f"{PASSWORD_FILE_ENV}={{tmp}}/absent: cannot read the MQTT password (No such file"),
    ({PASSWORD_FILE_ENV: "{tmp}"}, f"{PASSWORD_FILE_ENV}={{tmp}}: cannot read the MQTT password"),
    ({PASSWORD_FILE_ENV: "{tmp}/empty"}, f"{PASSWORD_FILE_ENV}={{tmp}}/empty: the first line is"),
    ({PASSWORD_FILE_ENV: "{tmp}/empty", PASSWORD_ENV: "x"}, "are both set: set one"),
])
def test_a_password_source_that_cannot_be_used_is_one_line_naming_it(
        environment, message, monkeypatch, tmp_path):
    (tmp_path / "empty").write_text("\nsecret on line two\n", encoding="utf-8")
    for key, value in environment.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    with pytest.raises(ValueError) as raised:
        parse_mqtt_url("mqtt://bob@broker/t")
    assert message.format(tmp=tmp_path) in str(raised.value)
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)


def test_a_password_from_the_environment_needs_a_user_in_the_url(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    with pytest.raises(ValueError, match="names no user") as raised:
        parse_mqtt_url("mqtt://broker/t")
    assert "s3cret" not in str(raised.value)


def test_an_unreadable_password_file_is_a_usage_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-secret"
    # A bad source list after it: the old code, which never read the file, stops there quickly.
    result = run_stream("@/nonexistent/cams.txt", "--mqtt", "mqtt://bob@127.0.0.1:1/t",
                        env={PASSWORD_FILE_ENV: str(missing)}, timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{PASSWORD_FILE_ENV}={missing}: cannot read the MQTT password" in last
    assert "Traceback" not in result.stderr


def test_the_password_from_the_environment_logs_in_and_every_event_arrives(locked_broker,
                                                                           tmp_path):
    """The broker refuses a login without the password: events arriving show it was sent."""
    subscriber = Subscriber(locked_broker.port, credentials=("bob", "s3cret"))
    try:
        result = run_stream(str(SAMPLE_VIDEO), "--mqtt", locked_broker.url("bob"),
                            "--jsonl", str(tmp_path / "out.jsonl"), "--log-level", "info",
                            env={PASSWORD_ENV: "s3cret"})
        assert result.returncode == 0, result.stderr
        written = [e for e in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
                   if e["type"] != "caption"]  # the frames go to MQTT only when asked for
        got = by_stream(subscriber.wait_for(len(written)))
    finally:
        subscriber.close()
    assert [{k: v for k, v in m.items() if k != "seq"}
            for m in got.get("shapes_s5_00000", [])] == written
    assert "s3cret" not in result.stderr + result.stdout
    assert "not acknowledged" not in result.stderr


def test_every_event_arrives_in_order_per_stream_and_credentials_stay_hidden(broker, tmp_path):
    subscriber = Subscriber(broker.port)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "run_stream.py"), str(SAMPLE_VIDEO), str(SAMPLE_VIDEO),
             "--mqtt", broker.url("bob:s3cret"), "--mqtt-frames", "--jsonl", str(tmp_path / "out"),
             "--log-level", "info"], capture_output=True, text=True, timeout=150, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        written = {stream: [json.loads(line) for line in
                            (tmp_path / "out" / f"{stream}.jsonl").read_text().splitlines()]
                   for stream in ("shapes_s5_00000", "shapes_s5_00000-2")}
        received = by_stream(subscriber.wait_for(sum(map(len, written.values()))))
    finally:
        subscriber.close()
    assert set(received) == set(written)
    for stream, events in written.items():
        got = received[stream]
        assert [m["seq"] for m in got] == list(range(len(events)))  # all, in order, once
        assert [{k: v for k, v in m.items() if k != "seq"} for m in got] == events
    assert sum(m["type"] == "caption" for m in received["shapes_s5_00000"]) == 89
    topics = {topic.split("/")[-1] for topic, _ in subscriber.received()}
    assert topics == {"events", "status", "frames", "caption", "state", "availability"}
    assert "s3cret" not in result.stderr + result.stdout
    assert "MQTT mqtt://***@127.0.0.1" in result.stderr


def test_the_run_goes_on_while_the_broker_restarts_and_nothing_is_lost(broker):
    """A live camera captioned into MqttSink; the broker is stopped after 10 captions and
    started again 3 s later. Captions go on meanwhile; once the broker is back, every message
    arrives. A restarting mosquitto may deliver a message it held at shutdown late: ``seq``
    puts it back in place."""
    subscriber = Subscriber(broker.port)
    sent: list[CaptionEvent] = []
    during_outage = 0
    try:
        sink = MqttSink(broker.url(), frames=True)
        with sink:
            stopped_at = None
            for event in caption_stream(CAMERA, DEFAULT_BUNDLE, device="cpu"):
                sink.write(event)
                sent.append(event)
                captions = sum(isinstance(e, CaptionEvent) for e in sent)
                if captions == 10 and stopped_at is None:
                    broker.stop()
                    stopped_at = time.monotonic()
                if stopped_at is not None and broker.process.poll() is not None:
                    during_outage += isinstance(event, CaptionEvent)
                    if time.monotonic() - stopped_at > 3:
                        broker.start()
                if captions >= 70:
                    break
        assert sink.acknowledged == sink.sent >= len(sent) and sink.dropped == 0
        got = by_stream(subscriber.wait_for(len(sent)))["lavfi"]
    finally:
        subscriber.close()
    assert during_outage >= 20  # 10 fps for 3 s: the captioning did not wait for the broker
    unique = {m["seq"]: m for m in got}
    assert sorted(unique) == list(range(len(sent)))  # every one arrived
    assert [unique[k]["index"] for k in sorted(unique) if unique[k]["type"] == "caption"] == [
        e.index for e in sent if isinstance(e, CaptionEvent)]
    # Arrival order: in order but for the few messages in flight when the broker stopped.
    first_arrivals = list(dict.fromkeys(m["seq"] for m in got))
    out_of_place = sum(a > b for a, b in zip(first_arrivals, first_arrivals[1:], strict=False))
    assert out_of_place <= 20


def test_a_broker_that_is_not_there_is_retried_and_said_without_stopping_the_run(caplog):
    port = free_port()  # nothing listens there
    with caplog.at_level("WARNING"), MqttSink(f"mqtt://u:secret@127.0.0.1:{port}/t",
                                              frames=True) as sink:
        for event in caption_stream(str(SAMPLE_VIDEO), DEFAULT_BUNDLE, device="cpu"):
            sink.write(event)
        assert sink.sent > 89
        time.sleep(1.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "stream.sinks.mqtt"]
    assert any("cannot reach the broker" in line for line in lines)
    assert any("not acknowledged" in line for line in lines)
    assert not any("secret" in line for line in lines)


def looped(video: Path, out: Path, times: int) -> Path:
    """``video`` played ``times`` times over, as one H.264 file (a long camera-like input)."""
    import av

    with av.open(str(out), "w") as output:
        stream = None
        frame_index = 0
        for _ in range(times):
            with av.open(str(video)) as source:
                rate = source.streams.video[0].average_rate
                for frame in source.decode(video=0):
                    if stream is None:
                        stream = output.add_stream("libx264", rate=rate)
                        stream.width, stream.height = frame.width, frame.height
                        stream.pix_fmt = "yuv420p"
                    image = frame.reformat(format="yuv420p")
                    image.pts, image.time_base = frame_index, 1 / rate
                    frame_index += 1
                    output.mux(stream.encode(image))
        output.mux(stream.encode(None))
    return out


def test_a_minute_of_camera_is_a_few_messages_per_event_not_one_per_frame(broker, tmp_path):
    """About 60 s at the sampling rate of 10 frames a second: 600 captions, which go to the
    broker only as the events they settle into, the statuses and the retained caption."""
    video = looped(SAMPLE_VIDEO, tmp_path / "minute.mp4", 7)
    subscriber = Subscriber(broker.port)
    try:
        result = run_stream(str(video), "--mqtt", broker.url(), "--quiet", "--jsonl",
                            str(tmp_path / "out.jsonl"), env={})
        assert result.returncode == 0, result.stderr
        written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        numbered = [e for e in written if e["type"] != "caption"]
        messages = subscriber.wait_for(len(numbered))
    finally:
        subscriber.close()
    frames = sum(e["type"] == "caption" for e in written)
    events = sum(e["type"] == "new" for e in written)
    assert frames >= 600 and events >= 7 * 4  # the sample's four scenes, seven times over
    assert len(messages) <= 4 * events  # new, update, end, the retained caption; 2 statuses
    assert len(messages) < frames / 4
    assert not any(topic.endswith("/frames") for topic, _ in messages)


def test_a_late_subscriber_gets_the_caption_shown_now(broker):
    from stream.events import ENDED, StatusEvent
    from stream.settle import Settling

    settling = Settling(settle=2, frame_interval=0.1)
    with MqttSink(broker.url()) as sink:
        for index, caption in enumerate(["a red circle", "a red circle", "a blue star"]):
            for event in settling.push(CaptionEvent("cam", index, index / 10, 0.0, 0.0, caption,
                                                    -0.5, 0.0, changed=True, reset=index == 0)):
                sink.write(event)  # the flash of "a blue star" is never shown
        late = Subscriber(broker.port, topic="lrcn/events")  # connects after the publishing
        try:
            assert retained(late.wait_for_topic("lrcn/events/cam/caption"), "cam") == [
                "a red circle"]
            for event in settling.push(StatusEvent("cam", ENDED, 0.0)):
                sink.write(event)  # nothing shown now: the retained caption is cleared
            deadline = time.monotonic() + 30
            while len(retained(late.received(), "cam")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert retained(late.received(), "cam") == ["a red circle", ""]
        finally:
            late.close()
