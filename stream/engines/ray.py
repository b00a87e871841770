"""Live captioning on Ray: the sources spread over actors, each owning a Pipeline for its streams.

::

    driver (run_stream.py --engine ray)                 Ray actors (LiveWorker), one per worker
    sinks ◄── RayPipeline ◄── one poll at a time ◄───── bounded queue ◄── Pipeline (its streams)

A stream's recurrent state lives in the one actor that captions it. The driver keeps one poll
in flight per actor and hands each batch of events to its caller before it asks again, so a
slow consumer fills the actors' bounded queues and then their pipelines' mailboxes: files wait,
live sources drop their oldest frames at the source, and memory does not grow. For the live
view, each actor also sends the newest frame of each stream at a reduced rate
(:attr:`RaySettings.frames_every`).

Faults. A call that Ray answers with ``ActorUnavailableError`` says only that the actor cannot
be reached for the moment: its process died and Ray is restarting it, or it is alive behind a
network blip. Its streams get a ``reconnecting`` status and the driver calls
:meth:`LiveWorker.start` again, which is idempotent: each actor process has an incarnation id,
so the answer says which case it was. The same incarnation (a blip): its streams get ``opened``
and polling goes on where it was; a poll whose answer was lost is asked for again by number and
the actor sends the same batch, so nothing it handed out is lost or emitted twice. A new
incarnation (a restart, up to :attr:`RaySettings.max_restarts` times): its streams reopen in
the new actor with a reset, indexes going on after the last one the driver received (none is
emitted twice), files from the frame after the last caption received, live sources at their
present. An actor that stays unreachable is asked again every :data:`_RECONNECT_DELAY` s until
Ray answers or declares it dead. Other actors are not touched. When its restarts are used up,
its streams move to the other actors (each to the one with the fewest streams), carrying on as
after a restart; with no actor left, they end with an error. :meth:`RayPipeline.close` stops
the actors within a bounded time.

The bundle travels to the actors through Ray's object store, so the nodes of a cluster need the
package (``pip install 'lrcn-stream[ray]'``) but not the model; video files must be readable at
the same path on every node (cameras and network streams are reached from wherever the actor is).

Example:
    >>> for event in caption_stream(["rtsp://cam1/live", "rtsp://cam2/live"], engine="ray"):
    ...     print(event)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stream.engines.decoder import Resume
from stream.engines.local import Pipeline
from stream.engines.ray_cluster import connect, import_ray
from stream.engines.settings import FrameListener, PipelineSettings, unopened
from stream.errors import MediaError, StreamError, reason
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent, StreamEvent
from stream.media.sources import Source, redact
from stream.model.bundle import BUNDLE_FILE, Bundle, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings
from stream.stopping import put_unless_stopped

log = logging.getLogger(__name__)

_POLL_WAIT = 0.1  # seconds an actor's poll waits for its first event (bounds a stop's wait)
_POLL_EVENTS = 256  # events per poll at most
_RECONNECT_DELAY = 0.5  # seconds between attempts to reach an actor that stays unavailable
_STOP_TIMEOUT = 15.0  # longest wait for the actors to stop before they are killed


@dataclass(frozen=True)
class RaySettings:
    """Where and how the actors run.

    Attributes:
        workers: actors (None: as many as the cluster's CPUs allow at ``cpus_per_worker``
            each, at most one per source).
        cpus_per_worker: CPUs each actor asks for; its ONNX Runtime uses as many threads.
        gpus_per_worker: GPUs each actor asks for (its encoder runs there with --device cuda).
        address: the Ray cluster to join (None: $RAY_ADDRESS, else a Ray started here).
        max_restarts: restarts of a dead actor before its streams end with an error.
        frames_every: seconds between the frames of one stream sent for the live view (only
            when the pipeline has frame listeners).
    """

    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    address: str | None = None
    max_restarts: int = 3
    frames_every: float = 0.5

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker < 1:
            raise ValueError(f"CPUs per worker must be at least 1, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0 or self.max_restarts < 0 or self.frames_every < 0:
            raise ValueError("GPUs per worker, restarts and the frame interval must be >= 0")


@dataclass
class Polled:
    """What one poll of an actor returns: its events in order, frames for the live view, and
    whether its pipeline is over (then ``error`` says why it failed, if it did)."""

    events: list[StreamEvent]
    frames: list[tuple[str, np.ndarray, float]]
    done: bool
    error: str | None = None


class LiveWorker:
    """The actor: one Pipeline for the streams it is given.

    Ray restarts a dead actor by constructing it anew, so the constructor takes nothing and
    :meth:`start` brings everything (the bundle travels as an argument of a call, which Ray
    keeps no longer than the call, rather than of the constructor, which it would keep for
    restarts). The driver calls :meth:`start` again after an outage, without knowing whether
    the process is the same; the incarnation id in its answer tells it.
    """

    def __init__(self) -> None:
        self._events: queue.Queue[StreamEvent] = queue.Queue(_POLL_EVENTS)
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._stopping = threading.Event()
        self._error: str | None = None
        self._newest: dict[str, tuple[np.ndarray, float]] = {}
        self._sent: dict[str, float] = {}
        self._frames_every = 0.0
        self._incarnation = uuid.uuid4().hex  # this process's: a restart is a new one
        self._streams: frozenset[str] = frozenset()
        self._batch: tuple[int, Polled] | None = None  # the last batch sent, and its number

    def start(self, bundle_files: dict[str, bytes], session: SessionSettings,
              sources: dict[str, Source], settings: PipelineSettings,
              resume: dict[str, Resume], frames_every: float) -> dict[str, Any]:
        """Open the bundle (its file names and contents) and start captioning ``sources``;
        returns where this actor runs (for the driver's log), its incarnation id, and whether
        this call started it (``fresh``). Idempotent: once started, a call for some of the
        same streams (the driver reconnecting after an outage) changes nothing.

        Raises:
            BundleError, DeviceError: the bundle or the device cannot be used here.
            RuntimeError: started already, with other streams.
        """
        if self._thread is not None:
            for stream in set(sources) - self._streams:  # added while the driver was away
                self.add(stream, sources[stream])
            return self._where(fresh=False)
        unpacked = Path(tempfile.mkdtemp(prefix="lrcn-bundle-"))
        try:
            for name, data in bundle_files.items():
                (unpacked / name).write_bytes(data)
            # The sessions hold the graphs in memory: the files are not needed after this.
            loaded = open_bundle(unpacked, session)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
        self._frames_every = frames_every
        listeners = [self._keep_frame] if frames_every > 0 else []
        # Held open: streams may be added later; the driver says when the actor is done.
        self._pipeline = Pipeline(dict(sources), loaded, settings, resume, listeners,
                                  keep_open=True)
        self._streams = frozenset(sources)
        self._thread = threading.Thread(target=self._pump, name="events", daemon=True)
        self._thread.start()
        return self._where(fresh=True)

    def add(self, stream: str, source: Source, resume: Resume | None = None) -> None:
        """Caption ``source`` as ``stream`` too, next to this actor's streams (``resume``: where
        it carries on, for a stream that moves here from an actor that died).

        Raises:
            RuntimeError: not started.
            ValueError: a stream of that id runs here, or is still stopping.
        """
        if self._pipeline is None:
            raise RuntimeError("the worker has not started")
        self._pipeline.add(stream, source, resume)
        self._streams = self._streams | {stream}

    def remove(self, stream: str) -> bool:
        """Stop captioning ``stream`` (its ended status follows in the events); False when it
        is not running here (it ended already)."""
        if self._pipeline is None:
            raise RuntimeError("the worker has not started")
        try:
            self._pipeline.remove(stream)
        except KeyError:
            return False
        return True

    def _where(self, fresh: bool) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "incarnation": self._incarnation, "fresh": fresh}

    def poll(self, batch: int = 0, max_events: int = _POLL_EVENTS,
             wait: float = _POLL_WAIT) -> Polled:
        """Batch number ``batch``: the events ready (waiting up to ``wait`` s for the first),
        and the frames due. The same number again is the same batch again: its answer was lost
        on the way (the call "may or may not have been executed", says Ray), and its events
        have left the queue."""
        if self._batch is not None and self._batch[0] == batch:
            return self._batch[1]
        finished = self._done.is_set()  # before draining: every event was queued by then
        events: list[StreamEvent] = []
        with contextlib.suppress(queue.Empty):
            events.append(self._events.get(timeout=wait))
            while len(events) < max_events:
                events.append(self._events.get_nowait())
        done = finished and self._events.empty()
        polled = Polled(events, self._frames_due(), done, self._error if done else None)
        self._batch = (batch, polled)
        return polled

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the pipeline and wait for it (at most ``timeout`` s)."""
        self._stopping.set()
        if self._pipeline is not None:
            self._pipeline.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _pump(self) -> None:
        assert self._pipeline is not None
        try:
            with contextlib.closing(iter(self._pipeline)) as events:
                for event in events:  # a full queue: the driver is behind, so is this pipeline
                    if not put_unless_stopped(self._events, event, self._stopping):
                        break
        except BaseException as error:  # noqa: BLE001 - handed to the driver, which raises it
            self._error = f"{type(error).__name__}: {redact(reason(error))}"
        finally:
            self._done.set()

    def _keep_frame(self, stream: str, rgb: np.ndarray, pts: float) -> None:
        self._newest[stream] = (rgb, pts)

    def _frames_due(self) -> list[tuple[str, np.ndarray, float]]:
        now = time.monotonic()
        due = []
        for stream, (rgb, pts) in list(self._newest.items()):
            if now - self._sent.get(stream, -1e9) >= self._frames_every:
                due.append((stream, rgb, pts))
                self._sent[stream] = now
                del self._newest[stream]
        return due


@dataclass
class _Worker:
    """The driver's view of one actor."""

    number: int
    handle: Any
    sources: dict[str, Source]
    open: set[str] = field(default_factory=set)  # its streams that have not ended
    restarts: int = 0
    pid: int | None = None  # its process, once started (again)
    host: str | None = None
    incarnation: str | None = None  # its process's id, once started (a restart changes it)
    batch: int = 0  # the number of the next batch of events to ask it for
    lost: bool = False  # unavailable: its streams were told ``reconnecting``
    removing: set[str] = field(default_factory=set)  # asked to stop, not ended yet
    dead: bool = False  # its restarts are used up


@dataclass
class _Received:
    """What the driver has received of one stream: where it resumes, and the counts that go on
    across actors."""

    last: CaptionEvent | None = None
    dropped_before: int = 0  # drops and reconnects of earlier actors
    reconnects_before: int = 0
    dropped: int = 0
    reconnects: int = 0


class RayPipeline:
    """The Ray counterpart of :class:`~stream.engines.local.Pipeline`: iterate for the events.

    It has the same ``frame_listeners``, ``join_on_exit`` and ``close()``, so the CLI runs the
    same sinks over either. Ray is started (or joined) here, in the constructor, so that signal
    handlers installed afterwards by the caller stay in force.

    Args:
        sources: stream id -> parsed source, or the :class:`MediaError` its string raised.
        bundle: the bundle directory (read and checked here, sent to the actors).
        device: where the actors run the model.
        precision: the encoder's precision there (auto, fp32, int8: see
            :class:`~stream.model.sessions.SessionSettings`).
        settings: batching, queues, reconnects (as for the local pipeline).
        ray_settings: workers, their resources, the cluster, restarts.
        frame_listeners, join_on_exit, keep_open: as for the local pipeline (frames arrive
            at ``ray_settings.frames_every``).

    Streams may be added (:meth:`add`: to the actor with the fewest streams) and removed
    (:meth:`remove`) while it runs, from any thread; the driver's loop carries them out.

    Raises:
        BundleError: the bundle is missing or damaged.
        ImportError: Ray is not installed.
        StreamError: the cluster cannot be reached.
    """

    def __init__(self, sources: dict[str, Source | MediaError], bundle: str | Path | Bundle,
                 device: str = "auto", settings: PipelineSettings | None = None,
                 ray_settings: RaySettings | None = None,
                 frame_listeners: Sequence[FrameListener] = (),
                 join_on_exit: bool = True, keep_open: bool = False,
                 precision: str = "auto") -> None:
        self.settings = settings or PipelineSettings()
        self.ray_settings = ray_settings or RaySettings()
        self.device = device
        self.precision = precision
        self.sources = sources
        if isinstance(bundle, Bundle):  # read and checked by the caller (caption_stream)
            self.bundle = bundle
        else:
            self.bundle = read_bundle(bundle)
            check_files(self.bundle)
        self.frame_listeners = list(frame_listeners)
        self.join_on_exit = join_on_exit
        self.received = {stream: _Received() for stream in sources}
        self.keep_open = keep_open
        self._lock = threading.Lock()
        self._running = {s for s, src in sources.items() if isinstance(src, Source)}
        self._requests: queue.Queue[tuple[str, str, Source | None]] = queue.Queue()
        self._calls: dict[Any, tuple[_Worker, str, str]] = {}  # add and remove calls in flight
        self._workers: list[_Worker] = []
        self._later: list[tuple[float, _Worker]] = []  # reconnections due at a monotonic time
        self._bundle_ref: Any = None
        self._started = False
        self._closed = False
        self._ray = import_ray()
        cpus = os.cpu_count() or 1
        if self.ray_settings.workers:
            cpus = max(cpus, self.ray_settings.workers * self.ray_settings.cpus_per_worker)
        self._started_ray = connect(self.ray_settings.address, cpus)

    # ------------------------------------------------------------------ the driver's loop

    def __iter__(self) -> Generator[StreamEvent, None, None]:
        if self._started:
            raise RuntimeError("a pipeline runs once")
        self._started = True
        ray = self._ray
        for stream, source in self.sources.items():
            if isinstance(source, MediaError):
                yield unopened(stream, source)
        try:
            pending = self._start_workers()
            while True:
                yield from self._carry_out_requests(pending)
                with self._lock:
                    if not self.keep_open and not self._running and self._requests.empty():
                        break  # every stream has ended
                self._reconnect_due(pending)
                if not pending and not self._calls:  # nothing to wait on (every actor left
                    time.sleep(_POLL_WAIT)             # is unavailable, or none is needed yet)
                    continue
                with _signal_exceptions():
                    ready, _ = ray.wait([*pending, *self._calls], num_returns=1,
                                        timeout=_POLL_WAIT)
                for ref in ready:
                    if ref in self._calls:
                        yield from self._call_done(ref, *self._calls.pop(ref))
                        continue
                    worker, call = pending.pop(ref)
                    yield from self._handle(ref, worker, call, pending)
        finally:
            if self.join_on_exit:
                self.close()
            else:
                self._ask_to_stop()

    def _start_workers(self) -> dict[Any, tuple[_Worker, str]]:
        live = {s: src for s, src in self.sources.items() if isinstance(src, Source)}
        if not live:
            return {}
        count = self.ray_settings.workers or self._default_workers(len(live))
        count = min(count, len(live))
        assigned: list[dict[str, Source]] = [{} for _ in range(count)]
        for k, (stream, source) in enumerate(live.items()):
            assigned[k % count][stream] = source
        pending: dict[Any, tuple[_Worker, str]] = {}
        for streams in assigned:
            self._new_worker(streams, pending)
        return pending

    def _new_worker(self, streams: dict[str, Source],
                    pending: dict[Any, tuple[_Worker, str]]) -> _Worker:
        """An actor for ``streams``, being started."""
        ray = self._ray
        if self._bundle_ref is None:
            files = {BUNDLE_FILE: (self.bundle.path / BUNDLE_FILE).read_bytes()}
            files |= {name: (self.bundle.path / name).read_bytes()
                      for name in self.bundle.checksums}
            self._bundle_ref = ray.put(files)  # once, however many actors and restarts
        actor = ray.remote(LiveWorker).options(
            num_cpus=self.ray_settings.cpus_per_worker,
            num_gpus=self.ray_settings.gpus_per_worker,
            max_restarts=self.ray_settings.max_restarts, max_task_retries=0)
        worker = _Worker(len(self._workers) + 1, actor.remote(), dict(streams),
                         open=set(streams))
        self._workers.append(worker)
        pending[self._start(worker)] = (worker, "start")
        return worker

    # ------------------------------------------------------------------ streams come and go

    def add(self, stream: str, source: Source) -> None:
        """Caption ``source`` as ``stream`` from now on, on the actor with the fewest streams
        (a new actor when there is none); its events follow in the iteration.

        Raises:
            ValueError: a stream of that id is running (or still stopping).
        """
        with self._lock:
            if stream in self._running:
                raise ValueError(f"{stream}: a stream of that id is running")
            self._running.add(stream)
            self._requests.put(("add", stream, source))

    def remove(self, stream: str) -> None:
        """Stop captioning ``stream``; it ends with an ``ended`` status ("removed").

        Raises:
            KeyError: no stream of that id is running.
        """
        with self._lock:
            if stream not in self._running:
                raise KeyError(f"{stream}: no such stream")
            self._requests.put(("remove", stream, None))

    def _carry_out_requests(
            self, pending: dict[Any, tuple[_Worker, str]]) -> Generator[StreamEvent, None, None]:
        """Hand the added streams to actors, and the removals to theirs (the driver's thread)."""
        while True:
            try:
                request, stream, source = self._requests.get_nowait()
            except queue.Empty:
                return
            if request == "add" and source is not None:
                self.received[stream] = _Received()
                alive = [w for w in self._workers if not w.dead]
                if not alive:
                    self._new_worker({stream: source}, pending)
                    continue
                worker = min(alive, key=lambda w: (len(w.open), w.number))
                worker.sources[stream] = source
                worker.open.add(stream)
                self._calls[worker.handle.add.remote(stream, source)] = (worker, "add", stream)
                continue
            owner = next((w for w in self._workers if stream in w.open), None)
            if owner is not None and stream not in owner.removing:
                owner.removing.add(stream)
                if owner.incarnation is not None and not owner.lost:  # else: once it answers
                    self._calls[owner.handle.remove.remote(stream)] = (owner, "remove", stream)
            yield from ()

    def _move_or_end(self, dead: _Worker, message: str) -> Generator[StreamEvent, None, None]:
        """The streams of an actor that died for good move to the others (each to the one with
        the fewest streams), carrying on after the last caption received, with a reset; with
        no actor left, they end with ``message``."""
        for stream in sorted(dead.open):
            alive = [w for w in self._workers if not w.dead]
            if not alive or stream in dead.removing:
                if alive:  # it was being removed: that is how it ends
                    yield self._status(stream, ENDED, "removed")
                else:
                    yield self._ended(stream, message)
                with self._lock:
                    self._running.discard(stream)
                continue
            target = min(alive, key=lambda w: (len(w.open), w.number))
            source = dead.sources[stream]
            received = self.received[stream]
            yield self._lost(stream, f"{message}; moving to worker {target.number}")
            received.dropped_before, received.reconnects_before = (received.dropped,
                                                                   received.reconnects)
            last = received.last
            resume = None if last is None else Resume(last.index + 1, last.pts, last.decoded_at)
            target.sources[stream] = source
            target.open.add(stream)
            self._calls[target.handle.add.remote(stream, source, resume)] = (target, "add",
                                                                              stream)
        dead.open.clear()

    def _call_done(self, ref: Any, worker: _Worker, call: str,
                   stream: str) -> Generator[StreamEvent, None, None]:
        """An add or a remove answered. A stream the actor refused ends with the error. An
        actor that could not be reached needs nothing here: the poll that fails alike
        reconnects it, and its next start brings the stream added (or, for a new process,
        leaves out the one removed: :meth:`_started_on`); an actor dead for good moves or ends
        its streams (:meth:`_move_or_end`)."""
        ray = self._ray
        try:
            with _signal_exceptions():
                ray.get(ref)
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError):
            return
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None) or error
        if call == "add" and stream in worker.open:
            worker.open.discard(stream)
            worker.sources.pop(stream, None)
            with self._lock:
                self._running.discard(stream)
            yield self._ended(stream, f"{stream}: cannot be added: {redact(reason(cause))}")

    def _start(self, worker: _Worker) -> Any:
        resume = {}
        for stream in worker.open:
            last = self.received[stream].last
            if last is not None:
                resume[stream] = Resume(last.index + 1, last.pts, last.decoded_at)
        sources = {s: src for s, src in worker.sources.items()
                   if s in worker.open and s not in worker.removing}
        every = self.ray_settings.frames_every if self.frame_listeners else 0.0
        session = SessionSettings(device=self.device, threads=self.ray_settings.cpus_per_worker,
                                  precision=self.precision)
        return worker.handle.start.remote(self._bundle_ref, session, sources, self.settings,
                                          resume, every)

    def _reconnect_due(self, pending: dict[Any, tuple[_Worker, str]]) -> None:
        now = time.monotonic()
        for due, worker in [item for item in self._later if item[0] <= now]:
            self._later.remove((due, worker))
            pending[self._start(worker)] = (worker, "start")

    def _handle(self, ref: Any, worker: _Worker, call: str,
                pending: dict[Any, tuple[_Worker, str]]) -> Generator[StreamEvent, None, None]:
        ray = self._ray
        try:
            with _signal_exceptions():
                result = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the call raised in the actor
            cause = getattr(error, "cause", None)
            if isinstance(cause, StreamError):  # the bundle or the device cannot be used there
                raise cause from None
            raise StreamError(f"worker {worker.number} failed: {type(cause).__name__}: "
                              f"{redact(reason(cause or error))}") from error
        except ray.exceptions.ActorUnavailableError:
            # Restarting, or alive behind a blip: which one, start's answer says (it is
            # idempotent). Still unavailable when asked again: ask later, without a new status.
            if worker.lost:
                self._later.append((time.monotonic() + _RECONNECT_DELAY, worker))
                return
            worker.lost = True
            why = "its process died or cannot be reached"
            log.warning("worker %d lost (%s); reconnecting", worker.number, why)
            for stream in sorted(worker.open):
                yield self._lost(stream, f"worker {worker.number} lost ({why}); reconnecting")
            pending[self._start(worker)] = (worker, "start")
            return
        except ray.exceptions.RayActorError as error:  # dead for good
            why = _ray_reason(error)
            message = (f"worker {worker.number} died and cannot be restarted "
                       f"({worker.restarts} restart(s) used): {why}")
            log.error("%s", message)
            worker.dead = True
            yield from self._move_or_end(worker, message)
            return
        if call == "start":
            yield from self._started_on(worker, result)
            pending[worker.handle.poll.remote(worker.batch)] = (worker, "poll")
            return
        worker.batch += 1
        polled: Polled = result
        for received in polled.events:
            event = self._account(received, worker)
            if event is not None:
                yield event
        for stream, rgb, pts in polled.frames:
            for listener in self.frame_listeners:
                listener(stream, rgb, pts)
        if polled.error is not None:
            raise StreamError(f"the pipeline of worker {worker.number} stopped: {polled.error}")
        if not polled.done:
            pending[worker.handle.poll.remote(worker.batch)] = (worker, "poll")

    def _started_on(self, worker: _Worker,
                    result: dict[str, Any]) -> Generator[StreamEvent, None, None]:
        """Take in start's answer: a first start, a restart, or the same process again."""
        lost, worker.lost = worker.lost, False
        same = result["incarnation"] == worker.incarnation
        # Removals asked for while it was starting or away: a new process was started without
        # those streams (they end here); the same process is asked (again).
        for stream in sorted(worker.removing & worker.open):
            if worker.incarnation is not None and not same:
                worker.open.discard(stream)
                worker.removing.discard(stream)
                with self._lock:
                    self._running.discard(stream)
                yield self._status(stream, ENDED, "removed")
            else:
                self._calls[worker.handle.remove.remote(stream)] = (worker, "remove", stream)
        if lost and same:  # alive all along: its pipeline went on, and so does its polling
            log.warning("worker %d reachable again", worker.number)
            for stream in sorted(worker.open):
                yield self._status(stream, OPENED, f"worker {worker.number} reachable again")
            return
        if worker.incarnation is not None and not same:  # a new process: its counts start at 0
            worker.restarts += 1
            worker.batch = 0
            for stream in worker.open:
                received = self.received[stream]
                received.dropped_before = received.dropped
                received.reconnects_before = received.reconnects
            log.warning("worker %d restarted (%d/%d)", worker.number, worker.restarts,
                        self.ray_settings.max_restarts)
        worker.incarnation = result["incarnation"]
        worker.pid, worker.host = result["pid"], result["host"]
        log.info("worker %d (pid %s on %s): %s", worker.number, result["pid"],
                 result["host"], ", ".join(sorted(worker.open)))

    def _account(self, event: StreamEvent, worker: _Worker) -> StreamEvent | None:
        """The event as the driver emits it: counts carried over restarts, repeats dropped."""
        received = self.received[event.stream]
        if isinstance(event, CaptionEvent):
            if received.last is not None and event.index <= received.last.index:
                return None  # never emitted twice
            received.last = event
            return event
        event = replace(event, dropped=received.dropped_before + event.dropped,
                        reconnects=received.reconnects_before + event.reconnects)
        received.dropped, received.reconnects = event.dropped, event.reconnects
        if event.kind == ENDED:
            worker.open.discard(event.stream)
            worker.removing.discard(event.stream)
            with self._lock:
                self._running.discard(event.stream)
        return event

    def _lost(self, stream: str, message: str) -> StatusEvent:
        received = self.received[stream]
        # Counted on top of the actor's own reconnects, whether it goes on or restarts.
        received.reconnects += 1
        received.reconnects_before += 1
        return self._status(stream, RECONNECTING, message)

    def _status(self, stream: str, kind: str, message: str) -> StatusEvent:
        received = self.received[stream]
        return StatusEvent(stream=stream, kind=kind, at=time.time(), message=message,
                           dropped=received.dropped, reconnects=received.reconnects)

    def _ended(self, stream: str, message: str) -> StatusEvent:
        received = self.received[stream]
        return StatusEvent(stream=stream, kind=ENDED, at=time.time(), message=message,
                           dropped=received.dropped, reconnects=received.reconnects,
                           error=message)

    def placement(self) -> dict[str, tuple[int, int | None, str | None]]:
        """stream id -> (worker number, its process id, its host) as last started."""
        return {stream: (w.number, w.pid, w.host) for w in self._workers for stream in w.sources}

    # ------------------------------------------------------------------ Ray itself

    def _default_workers(self, sources: int) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(1, min(sources, cpus // self.ray_settings.cpus_per_worker))

    def _ask_to_stop(self) -> list[Any]:
        refs = []
        for worker in self._workers:
            with contextlib.suppress(Exception):  # a dead actor has nothing to stop
                refs.append(worker.handle.stop.remote())
        return refs

    def close(self) -> None:
        """Stop every actor (within a bounded time, then killed) and a Ray started here."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        refs = self._ask_to_stop()
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=_STOP_TIMEOUT)
        for worker in self._workers:
            with contextlib.suppress(Exception):
                ray.kill(worker.handle)
        if self._started_ray:
            ray.shutdown()


@contextlib.contextmanager
def _signal_exceptions() -> Generator[None, None, None]:
    """Let an exception that a signal handler raised during a Ray call come out as itself.

    Ray checks for signals inside its C code and hands the handler's exception (the CLI's
    SIGTERM exception, KeyboardInterrupt) back wrapped in a SystemError ("returned a result with
    an exception set") whose cause it is; seen once in CI as a traceback and exit code 1 where a
    SIGTERM must stop the run with 143."""
    try:
        yield
    except SystemError as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise


def _ray_reason(error: BaseException) -> str:
    """One line of why Ray says an actor failed (its messages run over many lines)."""
    text = str(error)
    for line in text.splitlines():
        if "exit detail:" in line.lower():
            detail = line.split("detail:", 1)[1].split(" Some common causes", 1)[0]
            return redact(detail.strip())[:200]
    return redact(reason(error))[:200]
