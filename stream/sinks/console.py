"""The console: one line per event (a caption that settled, said more fully, ended) and per
status that matters, for a person watching."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import IO

from stream.events import DROPPED, END, RECONNECTING, CaptionEvent, Event, SettledEvent
from stream.sinks.base import Sink

log = logging.getLogger(__name__)


class ConsoleSink(Sink):
    """One readable line per event and per status that matters, for people watching::

        12.30s  cam1  a red circle
        13.10s  cam1  a red circle shrinks
        15.00s  cam1  [end 2.7 s] a red circle shrinks

    (the stream id is shown when there are several). With ``frames``, a line per change of the
    per-frame caption instead (for captions that were not settled).
    """

    def __init__(self, out: IO[str] | None = None, show_stream: bool = False,
                 frames: bool = False) -> None:
        self.out: IO[str] | None = out if out is not None else sys.stdout
        self.show_stream = show_stream
        self.frames = frames

    def write(self, event: Event) -> None:
        who = f"{event.stream}  " if self.show_stream else ""
        if isinstance(event, CaptionEvent):
            if self.frames and event.changed:
                self._line(f"{event.pts:8.2f}s  {who}{event.caption or '(no caption)'}")
        elif isinstance(event, SettledEvent):
            if self.frames:
                return
            ended = f"[end {event.duration:.1f} s] " if event.type == END else ""
            self._line(f"{event.pts:8.2f}s  {who}{ended}{event.caption}")
        elif event.kind in (RECONNECTING, DROPPED):
            # A source's failure is said once, on stderr: by the log as it happens and by the
            # run's summary at the end, not here too.
            self._line(f"{'':9}   {who}[{event.kind}] {event.message}")

    def _line(self, text: str) -> None:
        if self.out is None:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:  # `run-stream | head`: the reader is gone, the files go on
            log.info("console: its reader went away; captioning goes on")
            with contextlib.suppress(OSError, ValueError):  # no flush error at exit either
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            self.out = None
