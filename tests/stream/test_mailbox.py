"""Per-stream bounded queues: drop-oldest for live, backpressure for files, micro-batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stream.engines.mailbox import FrameItem, Mailbox
from stream.events import ENDED, StatusEvent

PIXELS = np.zeros((2, 2, 3), np.uint8)


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


def test_a_file_waits_for_room_and_loses_nothing():
    stop = threading.Event()
    box = Mailbox(2, stop)
    box.register("file", live=False)
    box.put("file", frame("file", 0))
    box.put("file", frame("file", 1))
    done = threading.Event()
    threading.Thread(target=lambda: (box.put("file", frame("file", 2)), done.set())).start()
    assert not done.wait(0.3)  # full: the producer waits
    assert indexes(box.take(1, 0)) == [("file", 0)]
    assert done.wait(2)
    assert indexes(box.take(10, 0)) == [("file", 1), ("file", 2)]
    assert box.dropped("file") == 0


def test_a_waiting_producer_returns_when_stopped():
    stop = threading.Event()
    box = Mailbox(1, stop)
    box.register("file", live=False)
    box.put("file", frame("file", 0))
    threading.Timer(0.2, stop.set).start()
    assert box.put("file", frame("file", 1)) is False


def test_a_batch_goes_when_full_without_waiting():
    box = Mailbox(8, threading.Event())
    for name in ("a", "b"):
        box.register(name, live=True)
        for i in range(2):
            box.put(name, frame(name, i))
    start = time.monotonic()
    batch = box.take(4, max_wait=5.0)
    assert time.monotonic() - start < 1.0
    # round-robin across streams, each stream in order
    assert indexes(batch) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_a_partial_batch_waits_for_the_other_streams_until_max_wait():
    box = Mailbox(8, threading.Event())
    box.register("a", live=True)
    box.register("b", live=True)
    box.put("a", frame("a", 0))
    start = time.monotonic()
    assert indexes(box.take(4, max_wait=0.3)) == [("a", 0)]  # b sent nothing in time
    assert 0.25 <= time.monotonic() - start < 2.0


def test_a_batch_goes_at_once_when_every_stream_has_a_frame():
    """Waiting longer could only bring a stream's next frame, a frame interval later."""
    box = Mailbox(8, threading.Event())
    for name in ("a", "b"):
        box.register(name, live=True)
        box.put(name, frame(name, 0))
    start = time.monotonic()
    assert indexes(box.take(8, max_wait=5.0)) == [("a", 0), ("b", 0)]
    assert time.monotonic() - start < 1.0


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
