"""Waits that honour a stop event: how often they look, and a put into a bounded queue that
gives up when told to stop (the rule that lets every thread's shutdown finish)."""

from __future__ import annotations

import queue
import threading
from typing import TypeVar

T = TypeVar("T")

POLL = 0.1  # seconds between stop checks in waits that would otherwise be unbounded


def put_unless_stopped(into: queue.Queue[T], item: T, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded queue ``into``, waiting while it is full; False when
    ``stop`` was set first (the wait never outlasts a stop by more than a poll interval)."""
    while not stop.is_set():
        try:
            into.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False
