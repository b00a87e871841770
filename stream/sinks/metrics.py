"""Prometheus metrics of a run (``GET /metrics`` on the live view's server), counted from the
events every sink sees, with prometheus_client; a camera's series carry the label ``camera``.

::

    lrcn_frames_decoded_total{camera}      frames decoded, sampled or not (local engine)
    lrcn_frames_sampled_total{camera}      sampled frames: captioned or dropped
    lrcn_frames_captioned_total{camera}    frames captioned
    lrcn_frames_dropped_total{camera}      frames dropped to keep up (live sources)
    lrcn_frames_encoded_total{camera}      frames the CNN ran on (key frames)
    lrcn_reconnects_total{camera}          reopenings of the source
    lrcn_caption_events_total{camera}      settled events begun (new)
    lrcn_caption_latency_seconds{camera}   decode to caption (histogram)
    lrcn_queue_frames{camera}              frames queued for the model now (local engine)
    lrcn_batch_frames                      frames per encoder batch (histogram; local engine)
    lrcn_model_info{device, engine}        1, labelled with where the model runs

Counters only ever go up: a camera removed keeps its series (Prometheus sees them end).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stream.events import NEW, CaptionEvent, Event, SettledEvent, StatusEvent
from stream.sinks.base import Sink

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics(Sink):
    """The counters of a run, in a registry of their own.

    Args:
        device: where the model runs (a label of ``lrcn_model_info``).
        engine: local or ray.
        depths: frames queued per stream now (the local engine's mailbox), or None.

    Raises:
        ImportError: prometheus_client is not installed (the ``service`` extra).
    """

    def __init__(self, device: str, engine: str,
                 depths: Callable[[], dict[str, int]] | None = None) -> None:
        try:
            import prometheus_client as prometheus
        except ImportError as error:
            raise ImportError(f"/metrics needs prometheus_client (pip install "
                              f"'lrcn-stream[service]'): {error}") from error
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        counter = self._counter
        self.decoded = counter("lrcn_frames_decoded", "Frames decoded, sampled or not")
        self.sampled = counter("lrcn_frames_sampled", "Sampled frames: captioned or dropped")
        self.captioned = counter("lrcn_frames_captioned", "Frames captioned")
        self.dropped = counter("lrcn_frames_dropped", "Frames dropped to keep up")
        self.encoded = counter("lrcn_frames_encoded", "Frames the CNN ran on (key frames)")
        self.reconnects = counter("lrcn_reconnects", "Reopenings of the source")
        self.events = counter("lrcn_caption_events", "Settled caption events begun")
        self.latency = prometheus.Histogram(
            "lrcn_caption_latency_seconds", "Decode to caption", ["camera"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        queued = prometheus.Gauge("lrcn_queue_frames", "Frames queued for the model now",
                                  ["camera"], registry=self.registry)
        self.batches = prometheus.Histogram(
            "lrcn_batch_frames", "Frames per batch of the model", buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry)
        info = prometheus.Gauge("lrcn_model_info", "Where the model runs",
                                ["device", "engine"], registry=self.registry)
        info.labels(device=device, engine=engine).set(1)
        self.depths = depths
        self.decoders: Callable[[], dict[str, int]] | None = None  # frames decoded per stream
        self._decoded: dict[str, int] = {}  # as last read: a decoder that restarts counts anew
        self._queued = queued
        self._seen: dict[str, tuple[int, int]] = {}  # camera -> (dropped, reconnects) counted
        self._lock = threading.Lock()

    def _counter(self, name: str, documentation: str) -> Any:
        return self._prometheus.Counter(name, documentation, ["camera"], registry=self.registry)

    def write(self, event: Event) -> None:
        camera = event.stream
        with self._lock:
            if camera not in self._seen:  # every series of a camera exists from its start, at 0
                self._seen[camera] = (0, 0)
                for counter in (self.sampled, self.captioned, self.dropped, self.encoded,
                                self.reconnects, self.events):
                    counter.labels(camera=camera)
            if isinstance(event, CaptionEvent):
                self.captioned.labels(camera=camera).inc()
                self.sampled.labels(camera=camera).inc()
                if event.encoded:
                    self.encoded.labels(camera=camera).inc()
                self.latency.labels(camera=camera).observe(event.latency_ms / 1000)
            elif isinstance(event, SettledEvent):
                if event.type == NEW:
                    self.events.labels(camera=camera).inc()
            elif isinstance(event, StatusEvent):
                self._status(event)

    def _status(self, event: StatusEvent) -> None:
        """Statuses carry running totals: the counters go up by what is new."""
        dropped, reconnects = self._seen.get(event.stream, (0, 0))
        if event.dropped > dropped:
            self.dropped.labels(camera=event.stream).inc(
                event.dropped - dropped)
            self.sampled.labels(camera=event.stream).inc(
                event.dropped - dropped)
        if event.reconnects > reconnects:
            self.reconnects.labels(camera=event.stream).inc(
                event.reconnects - reconnects)
        self._seen[event.stream] = (max(dropped, event.dropped),
                                    max(reconnects, event.reconnects))

    def batch(self, frames: int) -> None:
        """The local engine's batch listener."""
        self.batches.observe(frames)

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format (queue depths read now)."""
        if self.depths is not None:
            for camera, frames in self.depths().items():
                self._queued.labels(camera=camera).set(frames)
        if self.decoders is not None:
            for camera, frames in self.decoders().items():
                last = self._decoded.get(camera, 0)
                self.decoded.labels(camera=camera).inc(frames - last if frames >= last
                                                       else frames)  # a new decoder: anew
                self._decoded[camera] = frames
        with self._lock:
            return bytes(self._prometheus.generate_latest(self.registry))

    @property
    def content_type(self) -> str:
        return str(self._prometheus.CONTENT_TYPE_LATEST)
