"""MQTT for home automation, against the real mosquitto broker: the service's availability and
its last will, each camera's state, ON/OFF on its set topic, and Home Assistant's discovery."""

from __future__ import annotations

import signal
import time

import paho.mqtt.client as mqtt
import pytest

from tests.stream.test_camera_api import LIVE, until
from tests.stream.test_mqtt import broker, mosquitto  # noqa: F401 - the fixtures
from tests.stream.test_webview import start_serving
from tests.tools.mqtt_broker import Subscriber

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(240)]
SAFETY = 60.0

# What Home Assistant's MQTT sensor discovery documents for these keys.
DISCOVERY_KEYS = {"name", "unique_id", "object_id", "icon", "state_topic",
                  "json_attributes_topic", "availability", "availability_mode", "device"}


def seen(subscriber: Subscriber, topic: str, payload: object) -> None:
    deadline = time.monotonic() + SAFETY
    while time.monotonic() < deadline:
        if (topic, payload) in subscriber.received():
            return
        time.sleep(0.05)
    raise AssertionError(f"{topic} {payload!r} not seen; got {subscriber.received()[-8:]}")


def publish(port: int, topic: str, payload: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lrcn-test-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_availability_states_set_and_discovery_then_the_will_on_a_kill(broker):  # noqa: F811
    subscriber = Subscriber(broker.port, topic="lrcn/events")
    discovery = Subscriber(broker.port, topic="homeassistant", client_id="lrcn-test-ha")
    process, url = start_serving(LIVE, "--keep-running", "--mqtt", broker.url())
    base = url.rstrip("/")
    try:
        seen(subscriber, "lrcn/events/availability", "online")
        seen(subscriber, "lrcn/events/lavfi/state", "online")
        config = dict(discovery.wait_for_topic("homeassistant/sensor/lrcn_lavfi/config"))[
            "homeassistant/sensor/lrcn_lavfi/config"]
        assert set(config) == DISCOVERY_KEYS
        assert config["state_topic"] == "lrcn/events/lavfi/caption"
        assert config["json_attributes_topic"] == "lrcn/events/lavfi/events"
        assert [a["topic"] for a in config["availability"]] == [
            "lrcn/events/availability", "lrcn/events/lavfi/state"]
        assert config["availability_mode"] == "all" and config["unique_id"] == "lrcn_lavfi"
        publish(broker.port, "lrcn/events/lavfi/set", "OFF")
        until(base, lambda c: c["lavfi"]["state"] == "disabled", "OFF disables")
        seen(subscriber, "lrcn/events/lavfi/state", "disabled")
        publish(broker.port, "lrcn/events/lavfi/set", "on")
        until(base, lambda c: c["lavfi"]["state"] == "live", "ON enables")
        states = [p for t, p in subscriber.received() if t == "lrcn/events/lavfi/state"]
        assert states[-1] == "online" and "disabled" in states
        process.send_signal(signal.SIGKILL)  # no goodbye: the broker's last will says it
        process.wait(30)
        seen(subscriber, "lrcn/events/availability", "offline")
    finally:
        if process.poll() is None:
            process.kill()
        subscriber.close()
        discovery.close()
