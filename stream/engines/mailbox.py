"""Bounded per-stream queues between the decoder threads and the one inference worker.

Each stream has its own queue of at most ``capacity`` frames. When a file's queue is full its
decoder waits (backpressure: every sampled frame is captioned); when a live stream's queue is
full its oldest queued frame is dropped and counted (latency stays bounded). Status events
travel in the same queue, so that a stream's frames and statuses reach the worker in order; they
are few and never dropped.

The worker takes micro-batches across streams, like a stream muxer: :meth:`Mailbox.take`
returns as soon as ``max_batch`` frames are queued, or every open stream has a frame queued
(waiting longer could only bring a second frame of a stream, a whole frame interval later), or
``max_wait`` seconds after the oldest queued frame arrived, whichever comes first. Nothing here
blocks forever: every wait is bounded and watches the stop event.

Streams come and go: :meth:`Mailbox.register` adds one at any time, :meth:`Mailbox.finish`
queues a stream's last status and closes it in one step, and :meth:`Mailbox.end` ends one at
once (its queued frames dropped, later puts refused: a removed camera). A closed stream's queue
is forgotten once drained, so that its id can be used again and the mailbox stays bounded
however many streams come and go. Without :meth:`Mailbox.hold_open`, :meth:`Mailbox.take`
returns None once every stream is closed and drained.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from stream.events import StatusEvent
from stream.stopping import POLL


@dataclass(frozen=True)
class FrameItem:
    """A sampled frame on its way to the worker.

    Attributes:
        stream: the stream's id.
        index: position among the stream's sampled frames.
        pts: presentation time in seconds.
        decoded_at: wall-clock time of decoding.
        decoded_mono: the same moment on the monotonic clock (for latency).
        rgb: (S, S, 3) uint8 RGB at the bundle's input size.
        reset: clear the stream's memory before this frame.
        thumb: (3, m, m) float32 motion thumbnail, when the decoder computed it (37 KB at
            m = 56, a quarter of ``rgb``); None: the worker computes it.
        signature: (3, cells, cells) float32 key-frame signature, likewise.
    """

    stream: str
    index: int
    pts: float
    decoded_at: float
    decoded_mono: float
    rgb: np.ndarray = field(repr=False)
    reset: bool
    thumb: np.ndarray | None = field(default=None, repr=False)
    signature: np.ndarray | None = field(default=None, repr=False)


Item = FrameItem | StatusEvent


@dataclass
class _Queue:
    live: bool
    items: deque[tuple[float, Item]] = field(default_factory=deque)  # (arrival, item)
    frames: int = 0
    dropped: int = 0
    closed: bool = False
    ended: bool = False  # ended from outside (removed): its decoder's puts are refused
    carry_reset: bool = False  # a dropped frame had the reset flag: the next frame takes it


class Mailbox:
    """Per-stream bounded queues with one consumer (see the module docstring).

    Args:
        capacity: frames queued per stream at most.
        stop: set to make every waiting call return promptly.
    """

    def __init__(self, capacity: int, stop: threading.Event) -> None:
        if capacity < 1:
            raise ValueError(f"queue size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.stop = stop
        self._queues: dict[str, _Queue] = {}
        self._turn = 0  # which stream a batch starts with
        self._held = False  # streams may still be added: take() does not end when all are done
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def register(self, stream: str, live: bool) -> None:
        """Add a stream (before its decoder starts); ``live`` picks drop-oldest over waiting.

        Raises:
            ValueError: a stream of that id is still open, or its last items are still queued.
        """
        with self._changed:
            queue = self._queues.get(stream)
            if queue is not None and not (queue.closed and not queue.items):
                raise ValueError(f"{stream}: a stream of that id is running")
            self._queues[stream] = _Queue(live=live)
            self._changed.notify_all()

    def wait_gone(self, stream: str, timeout: float) -> bool:
        """Wait until ``stream`` is closed and its last items taken (its id free again); False
        when it is still there after ``timeout`` seconds or the pipeline stopped."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                queue = self._queues.get(stream)
                if queue is None or (queue.closed and not queue.items):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stop.is_set():
                    return False
                self._changed.wait(min(remaining, POLL))

    def hold_open(self, held: bool = True) -> None:
        """While held, :meth:`take` waits for new streams when every stream is done."""
        with self._changed:
            self._held = held
            self._changed.notify_all()

    def running(self, stream: str) -> bool:
        """Whether ``stream`` is registered and not closed."""
        with self._lock:
            queue = self._queues.get(stream)
            return queue is not None and not queue.closed

    def set_live(self, stream: str, live: bool) -> None:
        """Change a stream's policy once its source is open (a network input's duration)."""
        with self._lock:
            if stream in self._queues:
                self._queues[stream].live = live

    def put(self, stream: str, item: Item) -> bool:
        """Queue ``item``; False when the pipeline stopped before there was room, or the stream
        was ended from outside."""
        with self._changed:
            queue = self._queues.get(stream)
            if queue is None or queue.ended:
                return False
            if isinstance(item, FrameItem):
                while queue.frames >= self.capacity:
                    if queue.live:
                        self._drop_oldest_frame(queue)
                    elif self.stop.is_set():
                        return False
                    else:
                        self._changed.wait(POLL)
                if queue.ended:  # ended (its frames dropped) while this put waited for room
                    return False
                queue.frames += 1
                if queue.carry_reset:
                    item = replace(item, reset=True)
                    queue.carry_reset = False
            queue.items.append((time.monotonic(), item))
            self._changed.notify_all()
            return True

    def close(self, stream: str) -> None:
        """The stream's decoder is done; once its queue is empty the stream is gone."""
        with self._changed:
            if stream in self._queues:
                self._queues[stream].closed = True
            self._changed.notify_all()

    def finish(self, stream: str, status: StatusEvent) -> None:
        """Queue ``status`` as the stream's last item and close it, in one step (so that once
        the status is out, the id can be registered again)."""
        with self._changed:
            queue = self._queues.get(stream)
            if queue is not None and not queue.ended:
                queue.items.append((time.monotonic(), status))
                queue.closed = True
            self._changed.notify_all()

    def end(self, stream: str, status: StatusEvent) -> None:
        """End ``stream`` now: its queued frames are dropped, ``status`` is its last item, and
        its decoder's puts are refused from here on.

        Raises:
            KeyError: no such stream is open.
        """
        with self._changed:
            queue = self._queues.get(stream)
            if queue is None or queue.closed:
                raise KeyError(f"{stream}: no such stream")
            queue.items = deque(entry for entry in queue.items
                                if not isinstance(entry[1], FrameItem))
            queue.frames = 0
            queue.items.append((time.monotonic(), status))
            queue.closed = queue.ended = True
            self._changed.notify_all()

    def dropped(self, stream: str) -> int:
        """Frames of ``stream`` dropped so far (0 for a stream no longer here)."""
        with self._lock:
            queue = self._queues.get(stream)
            return 0 if queue is None else queue.dropped

    def depths(self) -> dict[str, int]:
        """Frames queued per stream now."""
        with self._lock:
            return {name: q.frames for name, q in self._queues.items()}

    def take(self, max_batch: int, max_wait: float) -> list[Item] | None:
        """The next micro-batch: up to ``max_batch`` frames and any statuses queued among them.

        Streams are served round-robin, each stream's items in order. Returns None when every
        stream is closed and drained, or the pipeline stopped.
        """
        with self._changed:
            while not self._pending():
                if self.stop.is_set() or self._finished():
                    return None
                self._changed.wait(POLL)
            oldest = min(q.items[0][0] for q in self._queues.values() if q.items)
            deadline = oldest + max_wait
            while (self._frame_count() < max_batch and not self._cannot_grow()
                   and not self.stop.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._status_waiting():
                    break
                self._changed.wait(min(remaining, POLL))
            batch = self._collect(max_batch)
            self._changed.notify_all()  # room for decoders waiting on backpressure
            return batch

    def _collect(self, max_batch: int) -> list[Item]:
        # Each batch starts with the next stream in turn, so that with more streams than
        # max_batch every stream is served (no starvation), not only the first ones.
        queues = list(self._queues.values())
        turn = self._turn % len(queues)
        self._turn = turn + 1
        queues = queues[turn:] + queues[:turn]
        batch: list[Item] = []
        frames = 0
        progress = True
        while progress and frames < max_batch:
            progress = False
            for queue in queues:
                # Statuses at the head go along for free; then at most one frame per round.
                while queue.items and not isinstance(queue.items[0][1], FrameItem):
                    batch.append(queue.items.popleft()[1])
                    progress = True
                if queue.items and frames < max_batch:
                    batch.append(queue.items.popleft()[1])
                    queue.frames -= 1
                    frames += 1
                    progress = True
        for name in [n for n, q in self._queues.items() if q.closed and not q.items]:
            del self._queues[name]  # its last status is in this batch: the id is free again
        return batch

    def _drop_oldest_frame(self, queue: _Queue) -> None:
        for i, (_, item) in enumerate(queue.items):
            if isinstance(item, FrameItem):
                del queue.items[i]
                queue.frames -= 1
                queue.dropped += 1
                if item.reset:  # the discontinuity must not be dropped with its frame
                    self._pass_reset_on(queue, i)
                return

    def _pass_reset_on(self, queue: _Queue, start: int) -> None:
        for j in range(start, len(queue.items)):
            arrival, item = queue.items[j]
            if isinstance(item, FrameItem):
                queue.items[j] = (arrival, replace(item, reset=True))
                return
        queue.carry_reset = True

    def _pending(self) -> bool:
        return any(q.items for q in self._queues.values())

    def _frame_count(self) -> int:
        return sum(q.frames for q in self._queues.values())

    def _status_waiting(self) -> bool:
        return any(q.items and not isinstance(q.items[0][1], FrameItem)
                   for q in self._queues.values())

    def _finished(self) -> bool:
        return not self._held and all(q.closed and not q.items for q in self._queues.values())

    def _cannot_grow(self) -> bool:
        """Every stream is closed, or has a frame queued: waiting would only add latency."""
        return all(q.closed or q.frames > 0 for q in self._queues.values())
