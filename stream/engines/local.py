"""The local engine: decoder threads, a mailbox and one inference worker in this process.

::

    sources ─► decoder thread per source ─► Mailbox (bounded, per stream) ─► inference worker
                                                                              │ micro-batches
    caller ◄── events queue (bounded) ◄───────────────────────────────────────┘ across streams

The inference worker owns the :class:`~stream.model.captioning.CaptionCore` (and so every stream's
recurrent state): it takes a micro-batch of frames from all streams, runs the encoder once, steps
each stream's memory, decodes the captions and turns them into events. The decoder threads
compute each frame's thumbnail and key-frame signature, in parallel with the model. Each stream's
key-frame windows take the phase of its id (:meth:`~stream.model.keyframes.KeyFrameRule.phase`),
so that cameras started together do not all run the CNN in the same batch. The caller's thread
consumes the events (sinks run there), so a slow consumer slows the worker, which fills the
mailbox: files then wait, live sources drop their oldest frames.

Failure rules: a source that fails ends its own stream with an ``ended`` status carrying the
error; the others go on. An exception in the worker or a decoder thread (a bug, or a broken
bundle at run time) stops everything and is raised in the caller's thread with its cause. When
the caller stops iterating (break, an exception in a sink, Ctrl-C), every thread is told to stop
and joined with a bounded timeout. Most callers use :func:`stream.api.caption_stream`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np

from stream.engines.decoder import Decoder, Resume
from stream.engines.mailbox import FrameItem, Item, Mailbox
from stream.engines.settings import FrameListener, PipelineSettings, unopened
from stream.errors import MediaError, StreamError, reason
from stream.events import DROPPED, ENDED, RECONNECTING, CaptionEvent, StatusEvent, StreamEvent
from stream.media.sources import Source, redact
from stream.model.bundle import LoadedBundle
from stream.model.captioning import Caption, CaptionCore
from stream.model.keyframes import EVERY_FRAME, FrameSignals
from stream.stopping import POLL, put_unless_stopped

log = logging.getLogger(__name__)


_JOIN_TIMEOUT = 10.0  # longest wait for the threads at shutdown (a network read times out first)
_DROP_REPORT_EVERY = 1.0  # seconds between "dropped" statuses of one stream


class Pipeline:
    """Decoder threads + one inference worker over a loaded bundle; iterate for the events.

    Args:
        sources: stream id -> parsed source, or the :class:`MediaError` its string raised (that
            stream ends at once with the error, the others run).
        loaded: the bundle, from :func:`stream.model.bundle.open_bundle`.
        settings: batching, queues, reconnects.
        resume: stream id -> where that stream carries on, for streams taken over from a
            process that died (see :class:`~stream.engines.decoder.Resume`).
        frame_listeners: called by the worker with (stream, rgb, pts) of every captioned frame;
            each must be cheap and never block (the live view keeps the newest frame).
        join_on_exit: leaving the iteration joins the threads; a caller with outputs to
            finish first (the CLI) passes False and calls :meth:`close` itself afterwards.
        keep_open: the pipeline goes on when every stream has ended, waiting for streams that
            :meth:`add` brings (a service); it ends when the caller stops iterating.

    Streams may be added (:meth:`add`) and removed (:meth:`remove`) while it runs, from any
    thread; the other streams are not touched.
    """

    def __init__(
        self,
        sources: dict[str, Source | MediaError],
        loaded: LoadedBundle,
        settings: PipelineSettings | None = None,
        resume: dict[str, Resume] | None = None,
        frame_listeners: Sequence[FrameListener] = (),
        join_on_exit: bool = True,
        keep_open: bool = False,
    ) -> None:
        self.settings = settings or PipelineSettings()
        resume = resume or {}
        self.loaded = loaded
        self.stop = threading.Event()
        self.mailbox = Mailbox(self.settings.queue_size, self.stop)
        self.mailbox.hold_open(keep_open)
        self.events: queue.Queue[StreamEvent | None] = queue.Queue(self.settings.events_queue)
        self.decoders: dict[str, Decoder] = {}  # the streams' decoders, the latest per id
        # The decoders compute the signals by the rule the core will apply (built in __iter__).
        rule = EVERY_FRAME if self.settings.encode_every_frame else loaded.bundle.keyframes
        self._signals = FrameSignals(loaded.bundle.motion_pool, rule)
        self._retired: list[Decoder] = []  # decoders of removed or replaced streams
        self._lock = threading.Lock()  # decoders, _retired, _started: add/remove from any thread
        self._failed: list[StatusEvent] = []
        for stream, source in sources.items():
            if isinstance(source, MediaError):
                self._failed.append(unopened(stream, source))
            else:
                self._register(stream, source, resume.get(stream))
        self.worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self.worker_error: BaseException | None = None
        self.frame_listeners = list(frame_listeners)
        self.batch_listeners: list[Callable[[int], None]] = []  # called with each batch's frames
        self.join_on_exit = join_on_exit
        self._started = False
        self._running = False  # the decoders were started: those added later start at once

    def __iter__(self) -> Generator[StreamEvent, None, None]:
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
            with self._lock:
                self._running = True
                for decoder in self.decoders.values():
                    decoder.start()
            self.worker.start()
            while True:
                try:
                    event = self.events.get(timeout=POLL)
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
            self._stop_all()
            if self.join_on_exit:
                self.close()

    def add(self, stream: str, source: Source, resume: Resume | None = None) -> None:
        """Caption ``source`` as ``stream`` from now on (its first frame resets its state),
        next to the streams running; before the iteration starts, it starts with them.
        ``resume``: it carries on a stream captioned elsewhere (see :class:`Resume`).

        Raises:
            ValueError: a stream of that id is running, or still stopping (try again).
        """
        with self._lock:
            if self.stop.is_set():
                raise ValueError(f"{stream}: the pipeline has stopped")
            if self.mailbox.running(stream):
                raise ValueError(f"{stream}: a stream of that id is running")
            previous = self.decoders.pop(stream, None)
            if previous is not None:
                self._retired.append(previous)
            # One that ended or was removed is on its way out: its thread, its last status.
            for old in [d for d in self._retired if d.stream == stream]:
                old.join(_JOIN_TIMEOUT)
                if old.is_alive() or not self.mailbox.wait_gone(stream, _JOIN_TIMEOUT):
                    raise ValueError(f"{stream}: a stream of that id is still stopping")
            decoder = self._register(stream, source, resume)
            if self._running:
                decoder.start()
            self._retired = [d for d in self._retired if d.is_alive()]  # bounded under churn

    def remove(self, stream: str) -> None:
        """Stop captioning ``stream`` now: its queued frames are dropped and it ends with an
        ``ended`` status whose message is "removed"; the other streams go on.

        Raises:
            KeyError: no stream of that id is running (never added, or already ended).
        """
        with self._lock:
            decoder = self.decoders.get(stream)
            if decoder is None or not self.mailbox.running(stream):
                raise KeyError(f"{stream}: no such stream")
            self.mailbox.end(stream, StatusEvent(
                stream=stream, kind=ENDED, at=time.time(), message="removed",
                dropped=self.mailbox.dropped(stream), reconnects=decoder.reconnects))
            decoder.stop.set()
            self._retired.append(self.decoders.pop(stream))

    def decoded(self) -> dict[str, int]:
        """Frames decoded so far by each running stream's decoder (sampled or not)."""
        with self._lock:
            return {stream: d.decoded.decoded for stream, d in self.decoders.items()}

    def close(self) -> None:
        """Stop every thread and wait for them, at most a bounded time."""
        self._stop_all()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        with self._lock:
            threads: list[threading.Thread] = [*self.decoders.values(), *self._retired]
        for thread in [*threads, self.worker]:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("%s did not stop within %.0f s; leaving it", thread.name,
                                _JOIN_TIMEOUT)

    def _register(self, stream: str, source: Source, resume: Resume | None) -> Decoder:
        bundle = self.loaded.bundle
        self.mailbox.register(stream, live=bool(source.live))
        sample_fps = None if self.settings.caption_every_decoded_frame else bundle.sample_fps
        decoder = Decoder(stream, source, self.mailbox, sample_fps,
                          (bundle.input_size, bundle.input_size), self.settings.reconnect,
                          threading.Event(), resume, halt=self.stop,
                          signals=self._decoder_signals)
        self.decoders[stream] = decoder
        return decoder

    def _decoder_signals(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A frame's thumbnail and signature, computed in its decoder thread while several
        streams share the inference thread, which is then their bottleneck. A lone stream's
        decoder thread is its critical path instead (a 60 s still scene ran 12% slower with
        them there), so the core computes them with the batch: (None, None)."""
        if len(self.decoders) > 1:
            return self._signals(rgb)
        return None, None

    def _stop_all(self) -> None:
        """Tell every thread to stop (each decoder has its own stop, for :meth:`remove`)."""
        self.stop.set()
        with self._lock:
            for decoder in [*self.decoders.values(), *self._retired]:
                decoder.stop.set()

    def _raise_thread_error(self) -> None:
        with self._lock:
            decoders = [*self.decoders.values(), *self._retired]
        for error in [self.worker_error, *(d.error for d in decoders)]:
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
            frames = sum(isinstance(item, FrameItem) for item in batch)
            for listener in self.batch_listeners if frames else ():
                listener(frames)
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

    def _caption(self, batch: list[Item], last_text: dict[str, str]) -> list[StreamEvent]:
        frames = [item for item in batch if isinstance(item, FrameItem)]
        captions: Iterator[Caption] = iter(())
        if frames:
            rule = self._core.keyframes
            thumbs, signatures = _signals(frames)
            captions = iter(self._core.step(
                np.stack([f.rgb for f in frames]), [f.stream for f in frames],
                [f.reset for f in frames], [f.pts for f in frames],
                phases=[rule.phase(f.stream) for f in frames], thumbs=thumbs,
                signatures=signatures))
        events: list[StreamEvent] = []
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

    def _emit(self, event: StreamEvent | None) -> bool:
        """Hand an event to the consumer; False when the pipeline stopped first."""
        return put_unless_stopped(self.events, event, self.stop)


def _signals(frames: list[FrameItem]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The batch's thumbnails and signatures as its decoders computed them, or (None, None)
    when a frame came without them (queued by hand): the core then computes them all."""
    thumbs = [f.thumb for f in frames if f.thumb is not None]
    sigs = [f.signature for f in frames if f.signature is not None]
    if len(thumbs) < len(frames) or len(sigs) < len(frames):
        return None, None
    return np.stack(thumbs), np.stack(sigs)
