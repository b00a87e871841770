"""The streaming pipeline and its library API, :func:`caption_stream`.

::

    sources ─► decoder thread per source ─► Mailbox (bounded, per stream) ─► inference worker
                                                                              │ micro-batches
    caller ◄── events queue (bounded) ◄───────────────────────────────────────┘ across streams

The inference worker owns the :class:`~stream.captioning.CaptionCore` (and so every stream's
recurrent state): it takes a micro-batch of frames from all streams, runs the encoder once, steps
each stream's memory, decodes the captions and turns them into events. The caller's thread
consumes the events (sinks run there), so a slow consumer slows the worker, which fills the
mailbox: files then wait, live sources drop their oldest frames.

Failure rules: a source that fails ends its own stream with an ``ended`` status carrying the
error; the others go on. An exception in the worker or a decoder thread (a bug, or a broken
bundle at run time) stops everything and is raised in the caller's thread with its cause. When
the caller stops iterating (break, an exception in a sink, Ctrl-C), every thread is told to stop
and joined with a bounded timeout.

Example:
    >>> for event in caption_stream("clip.mp4", bundle="models/shapes"):
    ...     if isinstance(event, CaptionEvent) and event.changed:
    ...         print(f"{event.pts:6.2f}s {event.caption}")
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from stream.bundle import Bundle, LoadedBundle, check_files, open_bundle, read_bundle
from stream.captioning import Caption, CaptionCore
from stream.decoder import Decoder, ReconnectPolicy, Resume
from stream.errors import MediaError, StreamError, reason
from stream.events import DROPPED, ENDED, RECONNECTING, CaptionEvent, Event, StatusEvent
from stream.mailbox import FrameItem, Item, Mailbox
from stream.paths import DEFAULT_BUNDLE
from stream.sessions import SessionSettings
from stream.sources import Source, SourceOptions, open_sources, redact

if TYPE_CHECKING:
    from stream.ray_pipeline import RaySettings

log = logging.getLogger(__name__)

T = TypeVar("T")
FrameListener = Callable[[str, np.ndarray, float], None]  # (stream, rgb, pts) of a frame

_POLL = 0.1  # seconds between stop checks in waits that would otherwise be unbounded
_JOIN_TIMEOUT = 10.0  # longest wait for the threads at shutdown (a network read times out first)
_DROP_REPORT_EVERY = 1.0  # seconds between "dropped" statuses of one stream


@dataclass(frozen=True)
class PipelineSettings:
    """How the pipeline batches, queues and reconnects.

    Attributes:
        max_batch: frames per encoder call at most.
        max_wait_ms: how long a batch waits for more frames after its first one arrived.
        queue_size: frames queued per stream at most (live sources drop beyond it).
        beam: 1 for greedy captions, more for beam search.
        reconnect: when live sources are reopened.
        sources: how sources are opened (timeouts, RTSP transport, webcam settings).
        events_queue: events buffered for a slow consumer before the worker waits.
        every_frame: caption every decoded frame instead of sampling at the bundle's
            ``sample_fps`` (for benchmarks: the model was trained at its sample rate).
        encode_every_frame: run the CNN on every captioned frame, not only on key frames
            (for comparison, and for models whose appearance changes fast).
    """

    max_batch: int = 8
    max_wait_ms: float = 20.0
    queue_size: int = 8
    beam: int = 1
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    sources: SourceOptions = field(default_factory=SourceOptions)
    events_queue: int = 256
    every_frame: bool = False
    encode_every_frame: bool = False

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max batch must be at least 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max wait must be 0 ms or more, got {self.max_wait_ms}")
        if self.queue_size < 1:
            raise ValueError(f"queue size must be at least 1, got {self.queue_size}")
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")


class Pipeline:
    """Decoder threads + one inference worker over a loaded bundle; iterate for the events.

    Args:
        sources: stream id -> parsed source, or the :class:`MediaError` its string raised (that
            stream ends at once with the error, the others run).
        loaded: the bundle, from :func:`stream.bundle.open_bundle`.
        settings: batching, queues, reconnects.
        resume: stream id -> where that stream carries on, for streams taken over from a
            process that died (see :class:`~stream.decoder.Resume`).
        frame_listeners: called by the worker with (stream, rgb, pts) of every captioned frame;
            each must be cheap and never block (the live view keeps the newest frame).
        join_on_exit: leaving the iteration joins the threads; a caller with outputs to
            finish first (the CLI) passes False and calls :meth:`close` itself afterwards.
    """

    def __init__(
        self,
        sources: dict[str, Source | MediaError],
        loaded: LoadedBundle,
        settings: PipelineSettings | None = None,
        resume: dict[str, Resume] | None = None,
        frame_listeners: Sequence[FrameListener] = (),
        join_on_exit: bool = True,
    ) -> None:
        self.settings = settings or PipelineSettings()
        resume = resume or {}
        self.loaded = loaded
        self.stop = threading.Event()
        self.mailbox = Mailbox(self.settings.queue_size, self.stop)
        self.events: queue.Queue[Event | None] = queue.Queue(self.settings.events_queue)
        bundle = loaded.bundle
        size = (bundle.input_size, bundle.input_size)
        self.decoders: list[Decoder] = []
        self._failed: list[StatusEvent] = []
        for stream, source in sources.items():
            if isinstance(source, MediaError):
                self._failed.append(unopened(stream, source))
                continue
            self.mailbox.register(stream, live=bool(source.live))
            sample_fps = None if self.settings.every_frame else bundle.sample_fps
            self.decoders.append(Decoder(stream, source, self.mailbox, sample_fps, size,
                                         self.settings.reconnect, self.stop,
                                         resume.get(stream)))
        self.worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self.worker_error: BaseException | None = None
        self.frame_listeners = list(frame_listeners)
        self.join_on_exit = join_on_exit
        self._started = False

    def __iter__(self) -> Generator[Event, None, None]:
        """Start the threads and yield events until every stream has ended.

        Raises the first exception of any thread (with its cause) after stopping the rest.
        """
        if self._started:
            raise RuntimeError("a pipeline runs once")
        self._started = True
        yield from self._failed
        try:
            # The core is built here, before any thread, so that a broken bundle fails early.
            self._core = CaptionCore(self.loaded, beam=self.settings.beam,
                                     encode_every_frame=self.settings.encode_every_frame)
            for decoder in self.decoders:
                decoder.start()
            self.worker.start()
            while True:
                try:
                    event = self.events.get(timeout=_POLL)
                except queue.Empty:
                    self._raise_thread_error()
                    # A dead worker puts nothing more: once the queue is empty, it is over.
                    if not self.worker.is_alive() and self.events.empty():
                        break
                    continue
                if event is None:
                    break
                yield event
            self._raise_thread_error()
        finally:
            self.stop.set()
            if self.join_on_exit:
                self.close()

    def close(self) -> None:
        """Stop every thread and wait for them, at most a bounded time."""
        self.stop.set()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in [*self.decoders, self.worker]:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("%s did not stop within %.0f s; leaving it", thread.name,
                                _JOIN_TIMEOUT)

    def _raise_thread_error(self) -> None:
        for error in [self.worker_error, *(d.error for d in self.decoders)]:
            if error is not None:
                raise StreamError(f"the pipeline stopped: {type(error).__name__}: "
                                  f"{redact(reason(error))}") from error

    def _work(self) -> None:
        try:
            self._batches()
        except BaseException as error:
            self.worker_error = error
            self.stop.set()

    def _batches(self) -> None:
        settings = self.settings
        last_text: dict[str, str] = {}
        reported: dict[str, tuple[int, float]] = {}  # stream -> (drops reported, when)
        while True:
            batch = self.mailbox.take(settings.max_batch, settings.max_wait_ms / 1000)
            if batch is None:
                break
            for event in self._caption(batch, last_text):
                if not self._emit(event):
                    return
            ended = {item.stream for item in batch
                     if isinstance(item, StatusEvent) and item.kind == ENDED}
            # An ended stream's last status already carries its final drop count.
            for stream in {item.stream for item in batch} - ended:
                drop = self._drop_status(stream, reported)
                if drop is not None and not self._emit(drop):
                    return
        self._emit(None)

    def _caption(self, batch: list[Item], last_text: dict[str, str]) -> list[Event]:
        frames = [item for item in batch if isinstance(item, FrameItem)]
        captions: Iterator[Caption] = iter(())
        if frames:
            captions = iter(self._core.step(np.stack([f.rgb for f in frames]),
                                            [f.stream for f in frames],
                                            [f.reset for f in frames],
                                            [f.pts for f in frames]))
        events: list[Event] = []
        for item in batch:
            if isinstance(item, StatusEvent):
                # The batch's frames were all stepped above, so a status must not touch the
                # state: a reopened stream's first frame carries the reset flag, and a
                # ``reconnecting`` in mid-batch would wipe the frames stepped after it. Only
                # an ended stream's state goes (it has no frames after its end).
                if item.kind == ENDED:
                    self._core.forget(item.stream)
                if item.kind in (ENDED, RECONNECTING):  # the next caption is news again
                    last_text.pop(item.stream, None)
                events.append(item)
                continue
            caption = next(captions)
            for listener in self.frame_listeners:
                listener(item.stream, item.rgb, item.pts)
            now = time.monotonic()
            changed = last_text.get(item.stream) != caption.text
            last_text[item.stream] = caption.text
            events.append(CaptionEvent(
                stream=item.stream, index=item.index, pts=round(item.pts, 6),
                decoded_at=item.decoded_at, emitted_at=time.time(), caption=caption.text,
                logprob=round(caption.logprob, 4),
                latency_ms=round((now - item.decoded_mono) * 1000, 2), changed=changed,
                reset=item.reset, encoded=caption.encoded))
        return events

    def _drop_status(
        self, stream: str, reported: dict[str, tuple[int, float]]
    ) -> StatusEvent | None:
        dropped = self.mailbox.dropped(stream)
        count, when = reported.get(stream, (0, 0.0))
        now = time.monotonic()
        if dropped == count or now - when < _DROP_REPORT_EVERY:
            return None
        reported[stream] = (dropped, now)
        return StatusEvent(stream=stream, kind=DROPPED, at=time.time(), dropped=dropped,
                           message=f"{dropped - count} frame(s) dropped to keep up "
                                   f"({dropped} in all)")

    def _emit(self, event: Event | None) -> bool:
        """Hand an event to the consumer; False when the pipeline stopped first."""
        return put_unless_stopped(self.events, event, self.stop)


def put_unless_stopped(into: queue.Queue[T], item: T, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded queue ``into``, waiting while it is full; False when
    ``stop`` was set first (the wait never outlasts a stop by more than a poll interval)."""
    while not stop.is_set():
        try:
            into.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def unopened(stream: str, error: MediaError) -> StatusEvent:
    """The ``ended`` status of a stream whose source string could not be parsed."""
    return StatusEvent(stream=stream, kind=ENDED, at=time.time(), message=str(error),
                       error=str(error))


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
        sources: a source string or several (see :mod:`stream.sources` for the forms).
        bundle: a bundle directory, or one already opened (local engine only).
        device: auto, cpu, cuda or tensorrt (when ``bundle`` is a path).
        settings: batching, queues, reconnects, source options.
        engine: "local" (this process) or "ray" (Ray actors, see :mod:`stream.ray_pipeline`).
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
    parsed = open_sources(specs, settings.sources)
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
    from stream.ray_pipeline import RayPipeline  # Ray is an extra: imported when asked for

    yield from RayPipeline(sources, bundle, device, settings, ray_settings)
