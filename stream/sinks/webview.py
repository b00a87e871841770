"""The live web view: each stream as a tile with its video, settled caption, events and stats.

``run_stream.py SOURCES --serve 127.0.0.1:8080`` serves (aiohttp, in its own thread)::

    GET /                    the page (no other files are served)
    GET /events              Server-Sent Events: a snapshot, then every settled event and status
    GET /frames/STREAM.mjpg  the stream's frames as MJPEG (multipart/x-mixed-replace)

It binds to loopback by default. Any other address needs a token (``--serve-token`` or the
``LRCN_SERVE_TOKEN`` environment variable), compared in constant time, given as ``?token=`` or
``Authorization: Bearer``; requests without it get 401.

The pipeline pays almost nothing for it: the worker hands over a reference to each captioned
frame (no copy, no encoding) and events are handed to the server's loop. JPEG encoding happens
only for connected viewers, and each viewer gets the newest frame when it is ready for one: a
slow or stalled browser skips frames, it never makes anything wait or queue up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import ipaddress
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.events import END, NEW, CaptionEvent, Event, SettledEvent
from stream.sinks.base import Sink

log = logging.getLogger(__name__)

TOKEN_ENV = "LRCN_SERVE_TOKEN"
_HISTORY = 50  # events kept per stream for the page
_VIEWER_QUEUE = 256  # events buffered per viewer; a viewer that falls further behind loses old
_FRAME_POLL = 0.03  # seconds between checks for a newer frame in an MJPEG response
_BOUNDARY = "frame"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``, or ``PORT`` alone for 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--serve {text}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


@dataclass
class _Tile:
    caption: str = ""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    frames: int = 0
    latency_ms: float = 0.0
    dropped: int = 0
    reconnects: int = 0
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    newest: tuple[np.ndarray, int] | None = None  # the newest frame and its number, one object
    stats_sent: float = 0.0  # when the last stats-only message went out

    def event(self, event: SettledEvent) -> None:
        """Take in a settled event: the caption shown, and the history of events (newest first,
        each with its start, caption and, once it ended, its duration)."""
        if event.type == NEW:
            self.caption = event.caption
            self.history.appendleft({"id": event.id, "pts": event.start,
                                     "caption": event.caption, "duration": None})
            return
        if event.type == END and self.caption == event.caption:
            self.caption = ""  # nothing shown until the next event begins
        else:
            self.caption = event.caption
        for item in self.history:
            if item["id"] == event.id:
                item["caption"] = event.caption
                item["duration"] = event.duration
                break

    def stats(self) -> dict[str, Any]:
        elapsed = max(1e-6, time.monotonic() - self.started)
        return {"fps": round(self.frames / elapsed, 1), "latency_ms": round(self.latency_ms, 1),
                "dropped": self.dropped, "reconnects": self.reconnects, "state": self.state}


class WebView(Sink):
    """The server; a sink for events, and a frame listener for the pipeline's worker.

    Args:
        host, port: where to listen (port 0 picks a free one: see :attr:`port`).
        streams: the stream ids, in tile order.
        token: required for a non-loopback ``host``; None reads ``LRCN_SERVE_TOKEN``.
    """

    START_TIMEOUT = 30.0  # seconds start() waits for the server to listen

    def __init__(self, host: str, port: int, streams: list[str],
                 token: str | None = None) -> None:
        self.host = host
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        if not is_loopback(host) and not self.token:
            raise ValueError(f"--serve {host}: serving beyond this machine needs a token "
                             f"(--serve-token or {TOKEN_ENV})")
        self.port = port
        self.tiles = {stream: _Tile() for stream in streams}
        self._routes: list[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self._viewers: set[asyncio.Queue[str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="webview", daemon=True)

    # -------------------------------------------------------------- the pipeline's side

    def start(self) -> WebView:
        """Start serving; returns once listening (raises OSError if the port is taken, and
        TimeoutError if the server is not listening within :attr:`START_TIMEOUT` seconds)."""
        self._thread.start()
        if not self._ready.wait(self.START_TIMEOUT):
            self.close()
            raise TimeoutError(f"the live view is not listening after {self.START_TIMEOUT:g} s")
        if self._error is not None:
            raise self._error
        log.info("live view on http://%s:%d/", self.host, self.port)
        return self

    def add_routes(self, add: Callable[[Any], None]) -> None:
        """Before :meth:`start`: ``add(router)`` adds routes of the caller's (the cameras' API)
        to the server, behind the same token rules."""
        self._routes.append(add)

    def frame(self, stream: str, rgb: np.ndarray, pts: float) -> None:
        """The worker's hook: keep a reference to the stream's newest frame (nothing else)."""
        tile = self.tiles.get(stream)
        if tile is not None:
            # One assignment: a reader never pairs one frame with another's number.
            tile.newest = (rgb, tile.newest[1] + 1 if tile.newest else 1)

    def write(self, event: Event) -> None:
        with self._lock:
            tile = self.tiles.setdefault(event.stream, _Tile())
            if isinstance(event, CaptionEvent):
                tile.frames += 1
                tile.latency_ms = event.latency_ms
                tile.state = "live"
                now = time.monotonic()
                if now - tile.stats_sent >= 0.5:  # stats twice a second at most
                    tile.stats_sent = now
                    self._publish({"type": "stats", "stream": event.stream,
                                   "stats": tile.stats()})
                return
            if isinstance(event, SettledEvent):
                tile.event(event)
                message = {"type": "event", "stream": event.stream, "caption": tile.caption,
                           "history": list(tile.history), "stats": tile.stats()}
            else:
                tile.dropped = max(tile.dropped, event.dropped)
                tile.reconnects = max(tile.reconnects, event.reconnects)
                tile.state = event.kind
                message = {"type": "status", "stream": event.stream, "kind": event.kind,
                           "message": event.message, "stats": tile.stats()}
        self._publish(message)

    def close(self) -> None:
        """Stop serving (bounded); safe to call more than once, or after the server ended."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended: nothing to stop
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:
            self._thread.join(10)

    def _publish(self, message: dict[str, Any]) -> None:
        if self._loop is None or not self._viewers:
            return  # nobody watching: nothing to do
        text = json.dumps(message)
        self._loop.call_soon_threadsafe(self._fan_out, text)

    def _fan_out(self, text: str) -> None:
        for queue in list(self._viewers):
            if queue.full():  # a viewer far behind loses its oldest events, never blocks
                queue.get_nowait()
            queue.put_nowait(text)

    # -------------------------------------------------------------- the server's side

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to start(), or logged once running
            self._error = error
            self._ready.set()
            if not isinstance(error, OSError):
                log.error("live view stopped: %s", error)

    async def _main(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        app.router.add_get("/events", self._events)
        app.router.add_get("/frames/{stream}.mjpg", self._frames)
        for add in self._routes:
            add(app.router)
        # Open responses (event streams, MJPEG) end within a second of stop: a page left open
        # never delays the end of a run.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _authorized(self, request: Any) -> bool:
        if not self.token:
            # Loopback without a token: only loopback host names, so that a web page cannot
            # reach the view by pointing its own domain at 127.0.0.1 (DNS rebinding).
            host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") \
                else request.host[1:].split("]")[0]
            return is_loopback(host)
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):]
        return hmac.compare_digest(given.encode(), self.token.encode())

    @property
    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def check(request: web.Request, handler: Any) -> web.StreamResponse:
            if not self._authorized(request):
                return web.Response(status=401, text="401: a valid token is required\n")
            response: web.StreamResponse = await handler(request)
            return response

        return check

    async def _page(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=PAGE, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"type": "snapshot", "streams": [
                {"stream": name, "caption": tile.caption, "history": list(tile.history),
                 "stats": tile.stats()} for name, tile in self.tiles.items()]}

    async def _events(self, request: Any) -> Any:
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(_VIEWER_QUEUE)
        self._viewers.add(queue)
        try:
            await response.write(f"data: {json.dumps(self._snapshot())}\n\n".encode())
            quiet = 0.0
            while self._stop is not None and not self._stop.is_set():
                try:
                    text = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    quiet += 0.5
                    if quiet >= 15:  # keep proxies from closing an idle stream
                        await response.write(b": keep-alive\n\n")
                        quiet = 0.0
                    continue
                quiet = 0.0
                await response.write(f"data: {text}\n\n".encode())
        except ConnectionResetError:  # the viewer left (a cancellation propagates)
            pass
        finally:
            self._viewers.discard(queue)
        return response

    async def _frames(self, request: Any) -> Any:
        from aiohttp import web

        tile = self.tiles.get(request.match_info["stream"])
        if tile is None:
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
            "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = -1
        loop = asyncio.get_running_loop()
        try:
            while self._stop is not None and not self._stop.is_set():
                newest = tile.newest
                if newest is None or newest[1] == sent:
                    await asyncio.sleep(_FRAME_POLL)
                    continue
                frame, seq = newest
                jpeg = await loop.run_in_executor(None, _jpeg, frame)
                await response.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                     + jpeg + b"\r\n")
                sent = seq
        except ConnectionResetError:  # the viewer left (a cancellation propagates)
            pass
        return response


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lrcn-stream: live captions</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; background: #111; color: #eee; margin: 1rem; }
 h1 { font-size: 1.1rem; font-weight: 600; }
 #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
          gap: 1rem; }
 .tile { background: #1d1d1d; border-radius: 8px; padding: .6rem; }
 .name { font-weight: 600; margin-bottom: .4rem; }
 .screen { position: relative; }
 .screen img { width: 100%; aspect-ratio: 1; object-fit: cover; background: #000;
               border-radius: 4px; display: block; }
 .caption { position: absolute; left: 0; right: 0; bottom: .5rem; text-align: center;
            font-size: 1.15rem; font-weight: 600; padding: 0 .5rem;
            text-shadow: 0 0 4px #000, 0 0 2px #000, 1px 1px 2px #000; }
 .stats { font-size: .8rem; color: #aaa; margin: .4rem 0; }
 .history { font-size: .85rem; max-height: 9rem; overflow-y: auto; margin: 0;
            padding-left: 1rem; }
 .history li { margin: .1rem 0; } .history .t { color: #888; margin-right: .4rem; }
</style></head>
<body><h1>lrcn-stream &mdash; live captions</h1><div id="tiles"></div>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const tiles = {};
function tile(name) {
  if (tiles[name]) return tiles[name];
  const el = document.createElement("div");
  el.className = "tile"; el.dataset.stream = name;
  el.innerHTML = '<div class="name"></div><div class="screen"><img alt="">' +
    '<div class="caption"></div></div><div class="stats"></div><ol class="history"></ol>';
  el.querySelector(".name").textContent = name;
  const img = el.querySelector("img");
  const frames = "/frames/" + encodeURIComponent(name) + ".mjpg" + q;
  img.onerror = () => setTimeout(() => { img.src = frames + (q ? "&" : "?") + "r=" +
                                         Date.now(); }, 1000);  // reconnect after a drop
  img.src = frames;
  document.getElementById("tiles").appendChild(el);
  return tiles[name] = el;
}
function stats(el, s) {
  if (!s) return;
  el.querySelector(".stats").textContent = s.state + " \\u00b7 " + s.fps + " frames/s \\u00b7 " +
    s.latency_ms + " ms \\u00b7 " + s.dropped + " dropped \\u00b7 " + s.reconnects +
    " reconnects";
}
function add(el, item) {
  const li = document.createElement("li");
  const t = document.createElement("span"); t.className = "t";
  t.textContent = item.pts.toFixed(1) + "s";
  li.appendChild(t); li.appendChild(document.createTextNode(item.caption || "(none)"));
  if (item.duration !== null && item.duration !== undefined) {
    const d = document.createElement("span"); d.className = "t";
    d.textContent = " (" + item.duration.toFixed(1) + " s)"; li.appendChild(d);
  }
  const list = el.querySelector(".history"); list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}
function show(el, s) {  // the shown caption and the events, newest first
  el.querySelector(".history").replaceChildren();
  el.querySelector(".caption").textContent = s.caption;
  for (const item of s.history.slice().reverse()) add(el, item);
}
const source = new EventSource("/events" + q);
source.onmessage = (message) => {
  const m = JSON.parse(message.data);
  if (m.type === "snapshot") {  // also after a reconnect: start the lists over
    for (const s of m.streams) { show(tile(s.stream), s); stats(tile(s.stream), s.stats); }
    return;
  }
  const el = tile(m.stream);
  if (m.type === "event") show(el, m);
  stats(el, m.stats);
};
</script></body></html>
"""
