"""The library API: :func:`caption_stream` checks its arguments, opens the bundle and hands the
sources to an engine (this process's threads, or Ray actors); iterate for the events.

Example:
    >>> from stream.api import caption_stream
    >>> from stream.events import CaptionEvent
    >>> for event in caption_stream("clip.mp4"):
    ...     if isinstance(event, CaptionEvent) and event.changed:
    ...         print(f"{event.pts:6.2f}s {event.caption}")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import PipelineSettings
from stream.errors import MediaError
from stream.events import Event, StreamEvent
from stream.media.sources import Source, parse_sources
from stream.model.bundle import Bundle, LoadedBundle, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from stream.settle import DEFAULT_SETTLE, Settling, check_settle

__all__ = ["PipelineSettings", "RaySettings", "caption_stream"]

EMITS = ("both", "frames", "events")


def caption_stream(
    sources: str | Sequence[str],
    bundle: str | Path | LoadedBundle = DEFAULT_BUNDLE,
    *,
    device: str = "auto",
    settings: PipelineSettings | None = None,
    engine: str = "local",
    ray_settings: RaySettings | None = None,
    settle: int = DEFAULT_SETTLE,
    emit: str = "both",
    precision: str = "auto",
) -> Iterator[Event]:
    """Caption one or more sources live; yield a :class:`CaptionEvent` per sampled frame (its
    ``shown`` the settled caption), the settled events (:class:`SettledEvent`: new, update,
    end) and :class:`StatusEvent` s (opened, reconnecting, dropped, ended) as they happen.

    Args:
        sources: a source string or several (see :mod:`stream.media.sources` for the forms).
        bundle: a bundle directory, or one already opened (local engine only).
        device: auto, cpu, cuda or tensorrt (when ``bundle`` is a path).
        precision: the encoder's, auto, fp32 or int8 (when ``bundle`` is a path; see
            :class:`~stream.model.sessions.SessionSettings`).
        settings: batching, queues, reconnects, source options.
        engine: "local" (this process) or "ray" (Ray actors, see :mod:`stream.engines.ray`).
        ray_settings: workers, their resources and the cluster, for the Ray engine.
        settle: sampled frames a new caption must hold before it shows (see
            :mod:`stream.settle`; 1: every frame's caption shows).
        emit: "frames" (the per-frame captions), "events" (the settled events) or "both";
            statuses always.

    Raises:
        ValueError, BundleError, DeviceError: at the call, before it returns the iterator
            (no stream has started).
        StreamError: a thread of the pipeline failed (the cause is attached).

    A source that cannot be opened or decoded does not raise: its stream ends with an
    ``ended`` status whose ``error`` says why.
    """
    settings = settings or PipelineSettings()
    check_settle(settle)
    if emit not in EMITS:
        raise ValueError(f"emit must be one of {', '.join(EMITS)}, got {emit!r}")
    specs = [sources] if isinstance(sources, str) else list(sources)
    if not specs:
        raise ValueError("no sources given")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be local or ray, got {engine!r}")
    parsed = parse_sources(specs, settings.source_options)
    events: Iterator[StreamEvent]
    if engine == "ray":
        read = bundle.bundle if isinstance(bundle, LoadedBundle) else read_bundle(bundle)
        check_files(read)  # a bad bundle raises here, before Ray starts
        events = _ray_events(parsed, read, device, settings, ray_settings, precision)
    else:
        loaded = (bundle if isinstance(bundle, LoadedBundle)
                  else open_bundle(bundle, SessionSettings(device=device, precision=precision)))
        read = loaded.bundle
        events = iter(Pipeline(parsed, loaded, settings))  # threads start at the first next()
    settling = Settling(settle, 1.0 / read.sample_fps, frames=emit != "events",
                        events=emit != "frames")
    return settling(events)


def _ray_events(sources: dict[str, Source | MediaError], bundle: Bundle, device: str,
                settings: PipelineSettings, ray_settings: RaySettings | None,
                precision: str) -> Iterator[StreamEvent]:
    """The Ray engine's events; Ray starts (or is joined) at the first ``next()``."""
    yield from RayPipeline(sources, bundle, device, settings, ray_settings, precision=precision)
