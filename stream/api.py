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
from stream.events import Event
from stream.media.sources import Source, parse_sources
from stream.model.bundle import Bundle, LoadedBundle, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE

__all__ = ["PipelineSettings", "RaySettings", "caption_stream"]


def caption_stream(
    sources: str | Sequence[str],
    bundle: str | Path | LoadedBundle = DEFAULT_BUNDLE,
    *,
    device: str = "auto",
    settings: PipelineSettings | None = None,
    engine: str = "local",
    ray_settings: RaySettings | None = None,
) -> Iterator[Event]:
    """Caption one or more sources live; yield a :class:`CaptionEvent` per sampled frame and
    :class:`StatusEvent` s (opened, reconnecting, dropped, ended) as they happen.

    Args:
        sources: a source string or several (see :mod:`stream.media.sources` for the forms).
        bundle: a bundle directory, or one already opened (local engine only).
        device: auto, cpu, cuda or tensorrt (when ``bundle`` is a path).
        settings: batching, queues, reconnects, source options.
        engine: "local" (this process) or "ray" (Ray actors, see :mod:`stream.engines.ray`).
        ray_settings: workers, their resources and the cluster, for the Ray engine.

    Raises:
        ValueError, BundleError, DeviceError: at the call, before it returns the iterator
            (no stream has started).
        StreamError: a thread of the pipeline failed (the cause is attached).

    A source that cannot be opened or decoded does not raise: its stream ends with an
    ``ended`` status whose ``error`` says why.
    """
    settings = settings or PipelineSettings()
    specs = [sources] if isinstance(sources, str) else list(sources)
    if not specs:
        raise ValueError("no sources given")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be local or ray, got {engine!r}")
    parsed = parse_sources(specs, settings.source_options)
    if engine == "ray":
        read = bundle.bundle if isinstance(bundle, LoadedBundle) else read_bundle(bundle)
        check_files(read)  # a bad bundle raises here, before Ray starts
        return _ray_events(parsed, read, device, settings, ray_settings)
    loaded = (bundle if isinstance(bundle, LoadedBundle)
              else open_bundle(bundle, SessionSettings(device=device)))
    return iter(Pipeline(parsed, loaded, settings))  # its threads start at the first next()


def _ray_events(sources: dict[str, Source | MediaError], bundle: Bundle, device: str,
                settings: PipelineSettings, ray_settings: RaySettings | None) -> Iterator[Event]:
    """The Ray engine's events; Ray starts (or is joined) at the first ``next()``."""
    yield from RayPipeline(sources, bundle, device, settings, ray_settings)
