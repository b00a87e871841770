"""Start, stop and restart Debian's mosquitto broker for the --mqtt tests, and a subscriber
that keeps every message it receives."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def find_mosquitto() -> str | None:
    """mosquitto's path (Debian installs it in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


class Broker:
    """mosquitto on 127.0.0.1:``port`` with persistence in ``folder``: a restart keeps the
    subscribers' sessions and their queued messages, as a broker in service does."""

    def __init__(self, executable: str, folder: Path, port: int,
                 users: dict[str, str] | None = None) -> None:
        """``users``: user name to password; given, the broker refuses anyone else (so that a
        test sees the password was sent, not merely accepted by an open broker)."""
        self.executable, self.port = executable, port
        self.config = folder / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if users:
            passwords = folder / "passwords"
            passwords.write_text("".join(f"{user}:{_hashed(password)}\n"
                                         for user, password in users.items()), encoding="utf-8")
            # user root: a mosquitto started as root reads the password file after dropping to
            # its own user, which cannot enter the test's private folder (no effect otherwise).
            access = f"allow_anonymous false\npassword_file {passwords}\nuser root\n"
        # max_queued_messages 0: no cap on what waits for a subscriber that is away (the
        # default, 1000, drops the rest).
        self.config.write_text(f"listener {port} 127.0.0.1\n{access}"
                               f"persistence true\npersistence_location {folder}/\n"
                               f"max_queued_messages 0\n", encoding="utf-8")
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.executable, "-c", str(self.config)],
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """A clean stop (SIGTERM): mosquitto saves its sessions and queues first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def url(self, credentials: str = "", topic: str = "lrcn/events") -> str:
        at = f"{credentials}@" if credentials else ""
        return f"mqtt://{at}127.0.0.1:{self.port}/{topic}"


def _hashed(password: str) -> str:
    """mosquitto's ``$6$`` password-file form, SHA-512 of password then salt (what
    mosquitto_passwd writes; computed here so the tests need only the broker itself)."""
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Subscriber:
    """A persistent-session QoS 1 subscriber to ``topic/#`` that reconnects by itself. It keeps
    JSON messages as dicts and the plain-text ones (captions, states, availability) as
    strings."""

    def __init__(self, port: int, topic: str = "lrcn/events",
                 credentials: tuple[str, str] | None = None,
                 client_id: str = "lrcn-test-sub") -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{topic}/#", qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._keep
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the subscriber could not subscribe")

    def _keep(self, client: object, userdata: object, message: Any) -> None:
        text = message.payload.decode()
        numbered = message.topic.rsplit("/", 1)[-1] in ("events", "status", "frames")
        payload = json.loads(text) if numbered or message.topic.endswith("/config") else text
        with self._lock:
            self.messages.append((message.topic, payload))

    def received(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The messages, once at least ``count`` distinct numbered ones came (or ``timeout``
        passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len({(t, m["seq"]) for t, m in got if isinstance(m, dict) and "seq" in m}) \
                    >= count:
                return got
            time.sleep(0.1)
        return self.received()

    def wait_for_topic(self, topic: str, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The messages, once one came on ``topic`` (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if any(t == topic for t, _ in got):
                return got
            time.sleep(0.1)
        return self.received()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
