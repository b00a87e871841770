"""Per-stream bounded queues: drop-oldest for live, backpressure for files, micro-batches."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from stream.engines.mailbox import FrameItem, Mailbox
from stream.events import ENDED, StatusEvent

PIXELS = np.zeros((2, 2, 3), np.uint8)
SAFETY = 30.0  # seconds: only a broken mailbox makes a test wait this long
FOREVER = 3600.0  # a max_wait no test waits out


class Stop(threading.Event):
    """The pipeline's stop event, counting how often it is checked.

    Every wait in the mailbox is bounded and checks the stop event on each round (the module's
    contract), so a count that grows while a call has not returned shows the call waiting
    inside the mailbox: the tests wait on that, never on the clock.
    """

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.seen = threading.Condition()

    def is_set(self) -> bool:
        with self.seen:
            self.checks += 1
            self.seen.notify_all()
        return super().is_set()

    def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (checked at each stop check and each return)."""
        with self.seen:
            assert self.seen.wait_for(predicate, SAFETY), "nothing happened"


class Call:
    """``function(*args)`` in a thread of its own; its return is reported to ``stop.until``."""

    def __init__(self, stop: Stop, function: Callable[..., Any], *args: Any) -> None:
        self.stop = stop
        self.returned = False
        self.value: Any = None
        threading.Thread(target=self._run, args=(function, args), daemon=True).start()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        value = function(*args)
        with self.stop.seen:
            self.value, self.returned = value, True
            self.stop.seen.notify_all()

    def result(self) -> Any:
        with self.stop.seen:
            assert self.stop.seen.wait_for(lambda: self.returned, SAFETY), "still waiting"
        return self.value


@pytest.fixture
def stop() -> Iterator[Stop]:
    event = Stop()
    yield event
    event.set()  # a call left waiting by a failed test returns


def frame(stream: str, index: int) -> FrameItem:
    return FrameItem(stream=stream, index=index, pts=index / 10, decoded_at=0.0,
                     decoded_mono=0.0, rgb=PIXELS, reset=index == 0)


def indexes(batch):
    return [(item.stream, item.index) for item in batch if isinstance(item, FrameItem)]


def test_a_live_stream_drops_its_oldest_frames_and_counts_them():
    box = Mailbox(3, threading.Event())
    box.register("cam", live=True)
    for i in range(7):
        assert box.put("cam", frame("cam", i))
    assert box.dropped("cam") == 4
    assert indexes(box.take(10, 0)) == [("cam", 4), ("cam", 5), ("cam", 6)]


def test_a_file_waits_for_room_and_loses_nothing(stop):
    box = Mailbox(2, stop)
    box.register("file", live=False)
    box.put("file", frame("file", 0))
    box.put("file", frame("file", 1))
    producer = Call(stop, box.put, "file", frame("file", 2))
    # Two stop checks: the producer went round its wait once and found the box still full.
    stop.until(lambda: stop.checks >= 2 or producer.returned)
    assert not producer.returned  # full: the producer waits
    assert box.depths() == {"file": 2}
    assert indexes(box.take(1, 0)) == [("file", 0)]
    assert producer.result() is True  # room: the producer's frame goes in
    assert indexes(box.take(10, 0)) == [("file", 1), ("file", 2)]
    assert box.dropped("file") == 0


def test_a_waiting_producer_returns_when_stopped(stop):
    box = Mailbox(1, stop)
    box.register("file", live=False)
    box.put("file", frame("file", 0))
    producer = Call(stop, box.put, "file", frame("file", 1))
    stop.until(lambda: stop.checks >= 1 or producer.returned)
    assert not producer.returned  # waiting for room
    stop.set()
    assert producer.result() is False
    assert box.depths() == {"file": 1}


def test_a_batch_goes_when_full_without_waiting(stop):
    box = Mailbox(8, stop)
    box.register("c", live=True)  # expected, but nothing yet: only a full batch goes now
    for name in ("a", "b"):
        box.register(name, live=True)
        for i in range(2):
            box.put(name, frame(name, i))
    taker = Call(stop, box.take, 4, FOREVER)  # returns only if it does not wait out max_wait
    # round-robin across streams, each stream in order
    assert indexes(taker.result()) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_a_partial_batch_waits_while_another_stream_is_expected(stop):
    box = Mailbox(8, stop)
    box.register("a", live=True)
    box.register("b", live=True)
    box.put("a", frame("a", 0))
    taker = Call(stop, box.take, 4, FOREVER)
    # Two stop checks: the taker went round its wait once, with a's frame queued.
    stop.until(lambda: stop.checks >= 2 or taker.returned)
    assert not taker.returned  # b has sent nothing yet: a's frame waits for b's
    box.put("b", frame("b", 0))
    assert indexes(taker.result()) == [("a", 0), ("b", 0)]  # at once, not after max_wait


def test_a_partial_batch_goes_when_max_wait_expires(stop):
    box = Mailbox(8, stop)
    box.register("a", live=True)
    box.register("b", live=True)
    box.put("a", frame("a", 0))
    taker = Call(stop, box.take, 4, 0.01)
    assert indexes(taker.result()) == [("a", 0)]  # b sent nothing in time


def test_a_batch_goes_at_once_when_every_stream_has_a_frame(stop):
    """Waiting longer could only bring a stream's next frame, a frame interval later."""
    box = Mailbox(8, stop)
    for name in ("a", "b"):
        box.register(name, live=True)
        box.put(name, frame(name, 0))
    taker = Call(stop, box.take, 8, FOREVER)  # returns only if it does not wait out max_wait
    assert indexes(taker.result()) == [("a", 0), ("b", 0)]


def test_statuses_keep_their_place_and_are_never_dropped():
    box = Mailbox(1, threading.Event())
    box.register("cam", live=True)
    box.put("cam", frame("cam", 0))
    box.put("cam", StatusEvent("cam", ENDED, 0.0))
    box.put("cam", frame("cam", 1))  # drops frame 0, not the status
    box.close("cam")
    batch = box.take(5, 0)
    assert [type(item).__name__ for item in batch] == ["StatusEvent", "FrameItem"]
    assert box.take(5, 0) is None  # closed and drained


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(ValueError, match="queue size"):
        Mailbox(capacity, threading.Event())


def test_a_dropped_reset_frame_passes_its_reset_on():
    """A discontinuity survives drops: the next frame kept takes the dropped frame's reset."""
    box = Mailbox(2, threading.Event())
    box.register("cam", live=True)
    for i in (5, 6):
        box.put("cam", frame("cam", i))
    box.put("cam", FrameItem("cam", 7, 0.7, 0.0, 0.0, PIXELS, reset=True))  # after a reconnect
    box.put("cam", frame("cam", 8))  # drops 6
    box.put("cam", frame("cam", 9))  # drops 7, the reset frame: 8 takes its flag
    box.put("cam", frame("cam", 10))  # drops 8 (now the reset): 9 takes it
    assert [(item.index, item.reset) for item in box.take(5, 0)] == [(9, True), (10, False)]
    box.put("cam", FrameItem("cam", 11, 1.1, 0.0, 0.0, PIXELS, reset=True))
    box.put("cam", frame("cam", 12))
    box.put("cam", frame("cam", 13))  # drops 11 with nothing queued after it but 12
    assert [(item.index, item.reset) for item in box.take(5, 0)] == [(12, True), (13, False)]


def test_more_streams_than_a_batch_are_all_served():
    box = Mailbox(4, threading.Event())
    names = ["a", "b", "c"]
    for name in names:
        box.register(name, live=True)
    served = dict.fromkeys(names, 0)
    for round_ in range(30):
        for name in names:
            box.put(name, frame(name, round_))
        for stream, _ in indexes(box.take(2, 0)):
            served[stream] += 1
    assert min(served.values()) >= 15  # each stream gets its share of 60 batch slots


def test_a_stream_ended_from_outside_drops_its_frames_and_refuses_a_waiting_producer(stop):
    """A removed camera: its queued frames go, its ended status is its last item, and a file
    producer waiting for room is refused rather than let in by the room the drop made."""
    box = Mailbox(1, stop)
    box.register("file", live=False)
    box.register("other", live=False)
    box.put("file", frame("file", 0))
    box.put("other", frame("other", 0))
    producer = Call(stop, box.put, "file", frame("file", 1))
    stop.until(lambda: stop.checks >= 2 or producer.returned)
    assert not producer.returned  # full: waiting for room
    box.end("file", StatusEvent("file", ENDED, 0.0, message="removed"))
    assert producer.result() is False
    assert not box.put("file", frame("file", 2))  # and any later put
    batch = box.take(8, 0)
    assert indexes(batch) == [("other", 0)]
    assert [(e.stream, e.message) for e in batch if isinstance(e, StatusEvent)] == [
        ("file", "removed")]
    with pytest.raises(KeyError, match="file: no such stream"):
        box.end("file", StatusEvent("file", ENDED, 0.0))
    box.register("file", live=False)  # its last item is out: the id is free again
    assert box.put("file", frame("file", 0))


def test_a_mailbox_held_open_waits_for_new_streams_when_every_stream_is_done(stop):
    box = Mailbox(1, stop)
    box.hold_open()
    box.register("a", live=False)
    box.finish("a", StatusEvent("a", ENDED, 0.0))
    assert [e.kind for e in box.take(1, 0)] == [ENDED]
    taker = Call(stop, box.take, 1, FOREVER)
    stop.until(lambda: stop.checks >= 2 or taker.returned)
    assert not taker.returned  # every stream is done, yet it waits: held open
    box.register("b", live=False)
    box.put("b", frame("b", 0))
    assert indexes(taker.result()) == [("b", 0)]
    box.hold_open(False)
    box.finish("b", StatusEvent("b", ENDED, 0.0))
    assert [e.kind for e in box.take(1, 0)] == [ENDED]
    assert box.take(1, 0) is None  # no longer held: done
