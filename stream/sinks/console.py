"""The console: one line per caption that changed and per status, for a person watching."""

from __future__ import annotations

import sys
from typing import IO

from stream.events import DROPPED, RECONNECTING, CaptionEvent, Event
from stream.sinks.base import Sink


class ConsoleSink(Sink):
    """One readable line per caption change and per status, for people watching.

    ``12.30s  cam1  a red circle moves left`` (the stream id is shown when there are several).
    """

    def __init__(self, out: IO[str] | None = None, show_stream: bool = False) -> None:
        self.out = out if out is not None else sys.stdout
        self.show_stream = show_stream

    def write(self, event: Event) -> None:
        who = f"{event.stream}  " if self.show_stream else ""
        if isinstance(event, CaptionEvent):
            if event.changed:
                self._line(f"{event.pts:8.2f}s  {who}{event.caption or '(no caption)'}")
        elif event.kind in (RECONNECTING, DROPPED) or event.error:
            self._line(f"{'':9}   {who}[{event.kind}] {event.message}")

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
