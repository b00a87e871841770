"""The cameras of a running ``run_stream.py``: listed, added, removed, disabled and enabled while
the others go on, over HTTP on the live view's server (``--serve``, the same token rules).

::

    GET    /api/cameras               every camera: id, source (credentials hidden), state,
                                      enabled, frames, decoded and captioned fps, dropped,
                                      reconnects, the caption shown, error
    POST   /api/cameras               add one: {"source": "...", "id": "...", "enabled": true}
                                      ("source" alone is enough: the id then follows the
                                      stream-id rule); 201 with the camera, 400 or 409 with why
    DELETE /api/cameras/{id}          remove one: its open event ends, its outputs are closed
    POST   /api/cameras/{id}/disable  stop captioning it (its outputs stay open)
    POST   /api/cameras/{id}/enable   caption it again (its state starts over, with a reset)

Requests and answers are JSON (``{"error": "..."}``, one line, with 400, 404, 409, 415, or
503 while the model loads);
a POST must say ``Content-Type: application/json``, so that a web page on another site cannot
send one (a browser only sends that header to another origin after asking, and nobody answers).
The cameras given on the command line are listed and can be removed like the others. A
camera's state: ``starting``, ``live``, ``reconnecting``, ``ended`` (its source ended),
``failed`` (with ``error``), ``disabled``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.errors import MediaError
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, Event, StatusEvent
from stream.media.sources import Source, SourceOptions, parse_source, redact, stream_ids
from stream.sinks.base import PerStream, Sink
from stream.sinks.metrics import Metrics

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # what stream_ids makes: file-name-safe
_KEYS = {"source", "id", "enabled"}


class Engine(Protocol):
    """What the cameras need of an engine (both have it)."""

    def add(self, stream: str, source: Source) -> None: ...

    def remove(self, stream: str) -> None: ...


class CameraError(Exception):
    """A request that cannot be carried out: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Camera:
    """One camera as the service knows it."""

    id: str
    spec: str  # as given: it may hold credentials, never shown
    enabled: bool = True
    state: str = "starting"
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    caption: str = ""
    error: str | None = None
    deleting: bool = False
    restart: Source | None = None  # to start on once its stream has ended (a new source)
    since: float = field(default_factory=time.monotonic)  # frames counted from here

    def to_json(self, decoded: int | None = None) -> dict[str, Any]:
        elapsed = time.monotonic() - self.since
        fps_in = None if decoded is None or elapsed <= 0 else round(decoded / elapsed, 2)
        return {"id": self.id, "source": redact(self.spec), "state": self.state,
                "enabled": self.enabled, "frames": self.frames, "decoded_fps": fps_in,
                "captioned_fps": round(self.frames / elapsed, 2) if elapsed > 0 else 0.0,
                "dropped": self.dropped, "reconnects": self.reconnects,
                "caption": self.caption, "error": self.error}


class Cameras(Sink):
    """The registry; a sink that follows each camera's events (put it after the outputs).

    Args:
        engine: the running pipeline (local or Ray), which adds and removes streams; None
            until it exists (requests meanwhile are answered 503).
        options: how new sources are opened.
        specs: the cameras it started with, id -> source string.
        outputs: the per-stream outputs, closed when a camera is removed.
        disabled: the ids among ``specs`` that start disabled (not running).
    """

    def __init__(self, engine: Engine | None, options: SourceOptions, specs: dict[str, str],
                 outputs: PerStream | None = None, disabled: Collection[str] = ()) -> None:
        self.engine = engine
        self.options = options
        self.outputs = outputs
        self.cameras = {stream: Camera(stream, spec, enabled=stream not in disabled,
                                       state="disabled" if stream in disabled else "starting")
                        for stream, spec in specs.items()}
        self.on_state: Callable[[str, str], None] | None = None  # told "disabled"
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ requests

    def describe(self) -> list[dict[str, Any]]:
        """Every camera's JSON; ``decoded_fps`` (frames decoded a second, sampled or not) where
        the engine counts them (the local one), else null."""
        counts = getattr(self.engine, "decoded", None)
        decoded: dict[str, int] = counts() if callable(counts) else {}
        with self._lock:
            return [camera.to_json(decoded.get(camera.id) if callable(counts) else None)
                    for camera in self.cameras.values()]

    def add(self, request: object) -> dict[str, Any]:
        """Add the camera a request describes; its JSON.

        Raises:
            CameraError: 400 for a malformed request or source, 409 for an id in use.
        """
        if not isinstance(request, dict):
            raise CameraError(400, "expected a JSON object, e.g. {\"source\": \"rtsp://...\"}")
        unknown = sorted(set(request) - _KEYS)
        if unknown:
            raise CameraError(400, f"unknown key {unknown[0]!r}; expected {sorted(_KEYS)}")
        spec, wanted, enabled = (request.get("source"), request.get("id"),
                                 request.get("enabled", True))
        if not isinstance(spec, str) or not spec.strip():
            raise CameraError(400, "source: expected a source string, e.g. rtsp://host/path")
        if wanted is not None and (not isinstance(wanted, str) or not _ID.fullmatch(wanted)):
            raise CameraError(400, "id: expected letters, digits, '.', '_' or '-' (at most 64)")
        if not isinstance(enabled, bool):
            raise CameraError(400, "enabled: expected true or false")
        source = self._parse(spec)
        with self._lock:
            taken = list(self.cameras)
            stream = wanted or stream_ids([spec], taken=taken)[0]
            if stream.lower() in (t.lower() for t in taken):
                raise CameraError(409, f"{stream}: a camera of that id exists")
            camera = Camera(stream, spec, enabled=enabled,
                            state="starting" if enabled else "disabled")
            if enabled:
                self._start(camera, source)
            self.cameras[stream] = camera
            return camera.to_json()

    def remove(self, stream: str) -> dict[str, Any]:
        """Remove a camera: its stream ends (its open event with it), its outputs close."""
        with self._lock:
            camera = self._camera(stream)
            if camera.enabled and self._stop(camera):
                camera.deleting = True  # gone once its last event is through
            else:
                self._forget(camera)
            return {"removed": stream}

    def disable(self, stream: str) -> dict[str, Any]:
        with self._lock:
            camera = self._camera(stream)
            if camera.enabled:
                camera.enabled = False
                if not self._stop(camera):
                    self._disabled(camera)
            return camera.to_json()

    def enable(self, stream: str) -> dict[str, Any]:
        with self._lock:
            camera = self._camera(stream)
            if not camera.enabled or camera.state in ("ended", "failed"):
                self._start(camera, self._parse(camera.spec))
                camera.enabled = True
            return camera.to_json()

    def update(self, stream: str, spec: str, enabled: bool) -> None:
        """Give a camera another source or enabled state (a reloaded config): a running one
        with a new source is stopped and started again on it once its stream has ended."""
        with self._lock:
            camera = self._camera(stream)
            if spec != camera.spec:
                source = self._parse(spec)
                camera.spec = spec
                if camera.enabled and self._stop(camera):
                    camera.restart = source if enabled else None
                    camera.enabled = enabled
                    return
                camera.enabled = False
            if enabled and not camera.enabled:
                self._start(camera, self._parse(camera.spec))
                camera.enabled = True
            elif not enabled and camera.enabled:
                camera.enabled = False
                if not self._stop(camera):
                    self._disabled(camera)

    def readiness(self) -> list[str]:
        """Why the service is not ready (empty: ready): the model is loaded and every enabled
        camera has opened, is reconnecting within its policy, or has come to its end."""
        if self.engine is None:
            return ["the model is loading"]
        with self._lock:
            return [f"{c.id}: {c.state}" + (f" ({c.error})" if c.error else "")
                    for c in self.cameras.values()
                    if c.enabled and c.state in ("starting", "failed")]

    # ------------------------------------------------------------------ events

    def write(self, event: Event) -> None:
        with self._lock:
            camera = self.cameras.get(event.stream)
            if camera is None:
                return
            if isinstance(event, CaptionEvent):
                camera.frames += 1
                camera.caption = event.on_screen
                camera.state = "live"
            elif isinstance(event, StatusEvent):
                camera.dropped, camera.reconnects = event.dropped, event.reconnects
                if event.kind == OPENED:
                    camera.state = "live"
                elif event.kind == RECONNECTING:
                    camera.state = "reconnecting"
                elif event.kind == ENDED:
                    self._ended(camera, event)

    def _ended(self, camera: Camera, event: StatusEvent) -> None:
        camera.caption = ""
        if camera.deleting:
            self._forget(camera)
        elif camera.restart is not None:  # its source changed: on the new one now
            source, camera.restart = camera.restart, None
            try:
                self._start(camera, source)
            except CameraError as error:
                camera.state, camera.error = "failed", str(error)
        elif not camera.enabled:
            self._disabled(camera)
        else:
            camera.state = "failed" if event.error else "ended"
            camera.error = event.error

    # ------------------------------------------------------------------ helpers

    def _disabled(self, camera: Camera) -> None:
        camera.state = "disabled"
        if self.on_state is not None:
            self.on_state(camera.id, "disabled")

    def switch(self, stream: str, on: bool) -> None:
        """Enable or disable a camera (MQTT's ON and OFF); a refusal is logged."""
        try:
            self.enable(stream) if on else self.disable(stream)
        except CameraError as error:
            log.warning("%s %s: %s", stream, "ON" if on else "OFF", error)

    def _camera(self, stream: str) -> Camera:
        camera = self.cameras.get(stream)
        if camera is None:
            raise CameraError(404, f"{stream}: no such camera")
        return camera

    def _parse(self, spec: str) -> Source:
        try:
            return parse_source(spec, self.options)
        except MediaError as error:
            raise CameraError(400, f"source: {redact(str(error))}") from None

    def _engine(self) -> Engine:
        if self.engine is None:
            raise CameraError(503, "the model is still loading; try again in a moment")
        return self.engine

    def _start(self, camera: Camera, source: Source) -> None:
        try:
            self._engine().add(camera.id, source)
        except ValueError as error:  # its previous run is still stopping
            raise CameraError(409, str(error)) from None
        camera.state, camera.error, camera.frames = "starting", None, 0
        camera.since = time.monotonic()

    def _stop(self, camera: Camera) -> bool:
        """Stop its stream; False when it was not running (it ended already)."""
        try:
            self._engine().remove(camera.id)
        except KeyError:
            return False
        return True

    def _forget(self, camera: Camera) -> None:
        del self.cameras[camera.id]
        if self.outputs is not None:
            self.outputs.close_stream(camera.id)


def api_routes(cameras: Cameras, metrics: Metrics | None = None) -> Any:
    """A function that adds the cameras' routes to an aiohttp router, with ``GET /healthz``
    (the process answers), ``GET /readyz`` (200, or 503 with the reasons) and, with
    ``metrics``, ``GET /metrics`` (Prometheus's text format)."""
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        waiting = cameras.readiness()
        return web.json_response({"ready": not waiting, "waiting": waiting},
                                 status=503 if waiting else 200)

    async def exposition(request: web.Request) -> web.Response:
        assert metrics is not None
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": metrics.content_type})

    async def call(function: Any, *args: Any, status: int = 200) -> web.Response:
        loop = asyncio.get_running_loop()
        try:  # off the server's loop: adding a camera may wait for its previous run to stop
            body = await loop.run_in_executor(None, function, *args)
        except CameraError as error:
            return web.json_response({"error": str(error)}, status=error.status)
        return web.json_response(body, status=status)

    def json_only(request: web.Request) -> web.Response | None:
        if request.content_type != "application/json":
            return web.json_response({"error": "send Content-Type: application/json"},
                                     status=415)
        return None

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"cameras": cameras.describe()})

    async def adding(request: web.Request) -> web.Response:
        refused = json_only(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.text())
        except ValueError as error:
            return web.json_response({"error": f"not JSON: {error}"}, status=400)
        return await call(cameras.add, body, status=201)

    async def removing(request: web.Request) -> web.Response:
        return await call(cameras.remove, request.match_info["id"])

    async def switching(request: web.Request) -> web.Response:
        refused = json_only(request)
        if refused is not None:
            return refused
        action = cameras.enable if request.match_info["action"] == "enable" else cameras.disable
        return await call(action, request.match_info["id"])

    def add(router: Any) -> None:
        router.add_get("/healthz", healthz)
        router.add_get("/readyz", readyz)
        if metrics is not None:
            router.add_get("/metrics", exposition)
        router.add_get("/api/cameras", listing)
        router.add_post("/api/cameras", adding)
        router.add_delete("/api/cameras/{id}", removing)
        router.add_post("/api/cameras/{id}/{action:enable|disable}", switching)

    return add
