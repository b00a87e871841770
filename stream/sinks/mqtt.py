"""Events to an MQTT broker, as camera analytics systems publish them (``--mqtt``).

Topics, per stream (``STREAM`` is its id)::

    TOPIC/STREAM/events   the settled events: new, update, end (see stream.settle)
    TOPIC/STREAM/caption  the caption shown now, as plain text, retained, so that a consumer
                          that connects late knows it; empty when nothing is shown (an empty
                          retained message clears the broker's: a late consumer gets none)
    TOPIC/STREAM/status   opened, reconnecting, dropped, ended
    TOPIC/STREAM/frames   every sampled frame's caption, only when asked for (``--mqtt-frames``)
    TOPIC/STREAM/state    online, reconnecting, offline or disabled (retained)
    TOPIC/STREAM/set      ON or OFF, sent by others: enables or disables the camera (a service)
    TOPIC/availability    online, or offline (retained; the broker's last will says offline
                          for a service that vanishes)
    homeassistant/sensor/lrcn_STREAM/config   Home Assistant's MQTT discovery: a sensor per
                          camera whose state is its caption shown, available while both the
                          service and the camera are online (retained; --no-discovery: none)

A camera with a ``topic`` of its own (the config file) uses it instead of ``TOPIC/STREAM``.

Each message but the retained caption is one JSON object (the JSON Lines form, plus ``seq``),
published with QoS 1: the broker acknowledges each, and unacknowledged messages are sent again
after a reconnect, in order. QoS 1 is at-least-once: a consumer may see a message twice, and a
broker that restarts may deliver a message it held at shutdown after those that came while it
was away (mosquitto 2.0 does); ``seq`` numbers each stream's messages from 0, so that a consumer
can drop repeats and put them back in order.

The client connects in the background and reconnects by itself (1 s to 10 s apart); while the
broker is away, messages queue in memory up to a bound and are sent once it is back,
so a broker restart loses nothing and never stops the captioning. Beyond the bound the newest
messages are dropped and counted, said in one log line every few seconds. ``close()`` waits a
bounded time for the acknowledgements of what was sent.

URL form: ``mqtt://[user[:password]@]host[:port]/topic`` (port 1883), or ``mqtts://`` for TLS
(port 8883, the system's certificate authorities). Credentials never appear in logs or errors.

The password is best kept out of the URL, which any local user can read in ``/proc/*/cmdline``:
give only the user in the URL and the password in ``LRCN_MQTT_PASSWORD``, or in a file named by
``LRCN_MQTT_PASSWORD_FILE`` (its first line, the newline stripped: a container's secret file).
Precedence: a password in the URL is used as given, the environment unread (the command line is
the most explicit, as ``--serve-token`` beats its variable); otherwise the file or the variable.
These are errors, said in one line: both variables set (alternatives; which one was meant cannot
be guessed), a file that cannot be read or whose first line is empty (a secret not mounted, more
likely than a blank password), a password from the environment with no user in the URL (MQTT
sends no password without a user name). An empty variable counts as unset. A user with no
password from anywhere logs in with the user name alone.

Example:
    >>> with MqttSink("mqtt://broker.local/lrcn/events") as mqtt:
    ...     for event in caption_stream("rtsp://cam1/live"):
    ...         mqtt.write(event)          # on lrcn/events/cam1-live/events, ...
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from stream.errors import reason
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, Event, SettledEvent
from stream.media.sources import redact
from stream.sinks.base import Sink
from stream.sinks.jsonl import event_json

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 100_000  # messages held while the broker is away (a few hours of one camera)
_INFLIGHT = 20  # messages sent and not yet acknowledged, at most
_CLOSE_TIMEOUT = 10.0  # seconds close() waits for the last acknowledgements
_WARN_EVERY = 5.0  # seconds between log lines about the same trouble
_MQTT_EXTRA = "pip install 'lrcn-stream[mqtt]'"
_STATES = {OPENED: "online", RECONNECTING: "reconnecting", ENDED: "offline"}
DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix
PASSWORD_ENV = "LRCN_MQTT_PASSWORD"
PASSWORD_FILE_ENV = "LRCN_MQTT_PASSWORD_FILE"


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``--mqtt`` URL (``password`` is never shown: ``name`` is the redacted URL)."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = ""


def parse_mqtt_url(url: str, environ: Mapping[str, str] | None = None) -> MqttTarget:
    """Read ``mqtt[s]://[user[:password]@]host[:port]/topic``, the password from the URL or else
    from ``environ`` (default ``os.environ``; see the module doc for the precedence).

    Raises:
        ValueError: not such a URL, or the password's file cannot be read (the message shows
            the URL without credentials and never the password).
    """
    name = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{name}: an MQTT URL starts with mqtt:// or mqtts://")
    topic = parts.path.strip("/")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{name}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{name}: no broker host")
    wildcard = "+" in topic or "#" in url.rsplit("@", 1)[-1]  # "#" would start a fragment
    if not topic or wildcard or parts.query:
        raise ValueError(f"{name}: give a topic without wildcards, e.g. mqtt://host/lrcn/events")
    tls = parts.scheme == "mqtts"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if password is None:
        password = _password_from(os.environ if environ is None else environ)
        if password is not None and username is None:
            raise ValueError(f"{name}: the URL names no user for the password from the "
                             f"environment (mqtt://USER@host/...)")
    return MqttTarget(host=parts.hostname, port=port or (8883 if tls else 1883), topic=topic,
                      tls=tls, name=name, username=username, password=password)


def _password_from(environ: Mapping[str, str]) -> str | None:
    """The password in ``$LRCN_MQTT_PASSWORD_FILE``'s first line or in ``$LRCN_MQTT_PASSWORD``;
    None when neither is set (an empty variable counts as unset, as a shell's ``VAR=`` means)."""
    path, value = environ.get(PASSWORD_FILE_ENV) or None, environ.get(PASSWORD_ENV) or None
    if path is not None and value is not None:
        raise ValueError(f"{PASSWORD_FILE_ENV} and {PASSWORD_ENV} are both set: set one")
    if path is None:
        return value
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{PASSWORD_FILE_ENV}={path}: cannot read the MQTT password "
                         f"({reason(error)})") from None
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:  # most likely a secret that was not mounted, not a blank password
        raise ValueError(f"{PASSWORD_FILE_ENV}={path}: the first line is empty")
    return password


class MqttSink(Sink):
    """Publish a run's events to the broker at ``url`` (see the module doc for the topics).

    Args:
        url: ``mqtt[s]://[user[:password]@]host[:port]/topic`` (or its parsed MqttTarget);
            without a password in it, the password comes from ``LRCN_MQTT_PASSWORD_FILE``
            or ``LRCN_MQTT_PASSWORD``.
        queue_limit: messages held while the broker cannot be reached, at most.
        frames: publish every per-frame caption too, on ``TOPIC/STREAM/frames``.
        topics: stream id -> the topic its messages go under instead of ``TOPIC/STREAM``.
        discovery: announce each camera to Home Assistant (MQTT discovery, retained).
        on_set: called with (camera, on) for an ON or OFF on its set topic.

    Raises:
        ValueError: the URL is malformed or the password's file unreadable (a broker that
            cannot be reached is retried, not raised).
        ImportError: paho-mqtt is not installed.
    """

    def __init__(self, url: str | MqttTarget, queue_limit: int = _QUEUE_LIMIT,
                 frames: bool = False, topics: Mapping[str, str] | None = None,
                 discovery: bool = False,
                 on_set: Callable[[str, bool], None] | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as error:
            raise ImportError(f"--mqtt needs paho-mqtt ({_MQTT_EXTRA}): {error}") from error
        self._mqtt = mqtt
        self.target = url if isinstance(url, MqttTarget) else parse_mqtt_url(url)
        self.name = self.target.name
        self.sent = 0  # messages handed to the client
        self.acknowledged = 0
        self.dropped = 0  # beyond the queue limit
        self._lock = threading.Lock()
        self._warned: dict[str, float] = {}
        self._seq: dict[str, int] = {}  # the next seq of each stream
        self._shown: dict[str, str] = {}  # the caption last retained for each stream
        self.frames = frames
        self.topics = dict(topics or {})
        self.discovery = discovery
        self.on_set = on_set
        self.availability = f"{self.target.topic}/availability"
        self._known: set[str] = set()  # cameras seen (announced, with discovery)
        self._state: dict[str, str] = {}  # each camera's state as last retained
        self._connected_once = False
        client_id = f"lrcn-stream-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv311, clean_session=True)
        if self.target.username is not None:
            self._client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.max_queued_messages_set(queue_limit)
        self._client.max_inflight_messages_set(_INFLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        # The broker says "offline" for a service that vanishes (killed, its network lost).
        self._client.will_set(self.availability, "offline", qos=1, retain=True)
        self._client.connect_async(self.target.host, self.target.port, keepalive=30)
        self._client.loop_start()
        self._open = True

    def write(self, event: Event) -> None:
        if not self._open:
            raise ValueError(f"{self.name}: sink is closed")
        base = self._base(event.stream)
        if event.stream not in self._known:
            self._known.add(event.stream)
            if self.discovery:
                self._discover(event.stream)
        if isinstance(event, CaptionEvent):
            if event.shown is not None:
                self._show(event.stream, event.shown)
            if self.frames:
                self._publish(f"{base}/frames", event)
        elif isinstance(event, SettledEvent):
            self._publish(f"{base}/events", event)
        else:
            if event.kind in (RECONNECTING, ENDED):
                self._show(event.stream, "")  # nothing is shown until it is back
            disabled = event.kind == ENDED and self._state.get(event.stream) == "disabled"
            if event.kind in _STATES and not disabled:  # a disabled camera's end: still that
                self.camera_state(event.stream, _STATES[event.kind])
            self._publish(f"{base}/status", event)

    def camera_state(self, stream: str, state: str) -> None:
        """Retain ``stream``'s state (online, reconnecting, offline, disabled) on its state
        topic, when it changed."""
        if self._state.get(stream) != state:
            self._state[stream] = state
            self._send(f"{self._base(stream)}/state", state, retain=True)

    def _show(self, stream: str, caption: str) -> None:
        """Retain ``caption`` as ``stream``'s caption shown now, when it changed."""
        if caption != self._shown.get(stream, ""):
            self._shown[stream] = caption
            self._send(f"{self._base(stream)}/caption", caption, retain=True)

    def _discover(self, stream: str) -> None:
        """Home Assistant's MQTT discovery: a sensor whose state is the caption shown."""
        node = "lrcn_" + re.sub(r"[^A-Za-z0-9_-]", "_", stream)
        base = self._base(stream)
        config = {
            "name": stream, "unique_id": node, "object_id": node, "icon": "mdi:cctv",
            # The events' records as attributes: the caption's log-probability and time.
            "state_topic": f"{base}/caption", "json_attributes_topic": f"{base}/events",
            "availability": [
                {"topic": self.availability},  # online / offline: the service's, with its will
                {"topic": f"{base}/state", "payload_available": "online",
                 "payload_not_available": "offline"}],
            "availability_mode": "all",
            "device": {"identifiers": [node], "name": f"lrcn-stream {stream}",
                       "manufacturer": "lrcn-stream", "model": "live captions"}}
        self._send(f"{DISCOVERY_PREFIX}/sensor/{node}/config", json.dumps(config), retain=True)

    def _base(self, stream: str) -> str:
        return self.topics.get(stream) or f"{self.target.topic}/{stream}"

    def _publish(self, topic: str, event: Event) -> None:
        seq = self._seq.get(event.stream, 0)
        self._seq[event.stream] = seq + 1  # a dropped message leaves a gap: seen, not hidden
        self._send(topic, event_json(event, seq=seq))

    def _send(self, topic: str, payload: str, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:  # also called from the client's thread (on connect)
            if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
                dropped = self.dropped
            else:
                self.sent += 1
                return
        self._warn("queue", f"MQTT {self.name}: {dropped} message(s) dropped so far, "
                            f"the broker has been away for too long")

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        """``TOPIC/STREAM/set`` (or a camera's own ``TOPIC/set``): ON or OFF."""
        topic = str(message.topic).removesuffix("/set")
        stream = next((s for s, t in self.topics.items() if t == topic), None)
        if stream is None and topic.startswith(f"{self.target.topic}/"):
            stream = topic[len(self.target.topic) + 1:]
        command = bytes(message.payload).decode(errors="replace").strip().upper()
        if stream is None or "/" in stream or command not in ("ON", "OFF"):
            self._warn("set", f"MQTT {self.name}: ignored {message.topic!s}: expected ON or "
                              f"OFF on TOPIC/CAMERA/set")
            return
        if self.on_set is not None:  # off the client's thread: enabling may take a moment
            threading.Thread(target=self.on_set, args=(stream, command == "ON"),
                             name="mqtt-set", daemon=True).start()

    def close(self) -> None:
        """Wait (at most a bounded time) for the broker's acknowledgements, then disconnect."""
        if not self._open:
            return
        self._open = False
        self._send(self.availability, "offline", retain=True)  # a clean end, said
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        while self.acknowledged < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self._client.disconnect()
        self._client.loop_stop()
        missing = self.sent - self.acknowledged
        if missing > 0 or self.dropped:
            log.warning("MQTT %s: %d message(s) not acknowledged by the broker, %d dropped",
                        self.name, max(0, missing), self.dropped)

    def _on_connect(self, client: object, userdata: object, flags: object, code: object,
                    properties: object = None) -> None:
        if getattr(code, "is_failure", False):
            self._warn("connect", f"MQTT {self.name}: the broker refused the connection ({code})")
            return
        self._warned.clear()
        self._send(self.availability, "online", retain=True)
        if self.on_set is not None:
            self._client.subscribe(f"{self.target.topic}/+/set", qos=1)
            for topic in self.topics.values():
                self._client.subscribe(f"{topic}/set", qos=1)
        again = " again" if self._connected_once else ""
        self._connected_once = True
        log.info("MQTT %s: connected%s", self.name, again)

    def _on_connect_fail(self, client: object, userdata: object) -> None:
        self._warn("connect", f"MQTT {self.name}: cannot reach the broker; retrying")

    def _on_disconnect(self, client: object, userdata: object, flags: object, code: object,
                       properties: object = None) -> None:
        if self._open:
            self._warn("connect", f"MQTT {self.name}: disconnected ({code}); reconnecting, "
                                  f"events queue meanwhile")

    def _on_publish(self, client: object, userdata: object, mid: int, code: object,
                    properties: object = None) -> None:
        with self._lock:
            self.acknowledged += 1

    def _warn(self, what: str, message: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[what] = now
            log.warning("%s", message)
