"""The summary table of a run: a sink that counts what each stream did, and prints one table
row per stream (and one line per failed source) on stderr at the end."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from stream.events import ENDED, NEW, CaptionEvent, Event, SettledEvent
from stream.sinks.base import Sink

LATENCY_BINS = 60_000  # 1 ms bins up to a minute


@dataclass
class StreamSummary:
    """What one stream did: frames, key frames, caption changes, latencies, drops, reconnects,
    and the error it ended with."""

    frames: int = 0
    encoded: int = 0  # frames the CNN ran on (key frames)
    events: int = 0  # settled events begun
    # Counts per whole millisecond (the last bin holds everything slower): percentiles in
    # constant memory, however many weeks a live run lasts.
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(LATENCY_BINS, np.int64))
    dropped: int = 0
    reconnects: int = 0
    error: str | None = None
    ended: bool = False  # its ``ended`` status came

    def add(self, event: Event) -> None:
        if isinstance(event, CaptionEvent):
            self.frames += 1
            self.encoded += event.encoded
            self.latency_ms[min(LATENCY_BINS - 1, max(0, int(event.latency_ms)))] += 1
        elif isinstance(event, SettledEvent):
            self.events += event.type == NEW
        else:
            self.dropped = max(self.dropped, event.dropped)
            self.reconnects = max(self.reconnects, event.reconnects)
            if event.kind == ENDED:
                self.ended = True
                self.error = event.error or self.error


def percentile(counts: np.ndarray, q: float) -> str:
    """The ``q`` quantile (whole ms) of a latency histogram, or "-" when it is empty."""
    total = int(counts.sum())
    if total == 0:
        return "-"
    return str(int(np.searchsorted(np.cumsum(counts), q * total, side="left")))


class SummarySink(Sink):
    """Counts every event per stream in constant memory; :meth:`report` prints the table."""

    def __init__(self, streams: list[str], out: IO[str] | None = None) -> None:
        self.streams = {stream: StreamSummary() for stream in streams}
        self.out = out

    def write(self, event: Event) -> None:
        self.streams.setdefault(event.stream, StreamSummary()).add(event)  # also ones added

    @property
    def failed(self) -> bool:
        """A stream ended with an error."""
        return any(s.error for s in self.streams.values())

    def report(self, stopped: str | None = None) -> None:
        """A table of what each stream did, and one line per failed source, on stderr."""
        out = self.out or sys.stderr
        lines = [f"{'stream':24} {'frames':>7} {'encoded':>8} {'events':>8} {'dropped':>8} "
                 f"{'reconnects':>10} {'p50 ms':>7} {'p99 ms':>7}"]
        for stream, s in self.streams.items():
            p50, p99 = (percentile(s.latency_ms, q) for q in (0.5, 0.99))
            lines.append(f"{stream[:24]:24} {s.frames:>7} {s.encoded:>8} {s.events:>8} "
                         f"{s.dropped:>8} {s.reconnects:>10} {p50:>7} {p99:>7}")
        if stopped:
            lines.append(f"({stopped}; outputs are complete up to the last caption)")
        print("\n".join(lines), file=out)
        for s in self.streams.values():
            if s.error:
                print(f"error: {s.error}", file=out)
