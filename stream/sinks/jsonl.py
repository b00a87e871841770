"""JSON Lines: every event as one JSON object per line, flushed line by line (a file or stdout)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

from stream.events import Event
from stream.sinks.base import Sink

STDOUT = "-"  # the path of JSON Lines written to standard output

_TIMING = ("decoded_at", "emitted_at", "latency_ms")


def event_json(event: Event, timing: bool = True, **extra: Any) -> str:
    """The event as one line of JSON (JSON Lines, message payloads), with ``extra`` fields; NaN
    and infinity, which JSON lacks, become null. ``timing=False`` leaves out the wall-clock
    fields."""
    data = event.to_json() | extra
    if not timing:
        for key in _TIMING:
            data.pop(key, None)
    for key, value in data.items():
        if isinstance(value, float) and not math.isfinite(value):
            data[key] = None
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


class JsonlSink(Sink):
    """One JSON object per event and line, flushed as written: a crash loses nothing emitted.

    ``timing=False`` leaves out the wall-clock fields (decoded_at, emitted_at, latency_ms), so
    that captioning the same file twice writes the same bytes (archives). The path ``-`` is
    standard output (the events of every stream, for a pipe into another program).
    """

    def __init__(self, path: str | Path, timing: bool = True) -> None:
        self.path = Path(path)
        self.timing = timing
        self._file: IO[str] | None
        if str(path) == STDOUT:  # standard output, left open at close
            self._file, self._owned = sys.stdout, False
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file, self._owned = self.path.open("w", encoding="utf-8"), True

    def write(self, event: Event) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: sink is closed")
        self._file.write(event_json(event, self.timing) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            if self._owned:
                self._file.close()
            else:
                self._file.flush()
            self._file = None
