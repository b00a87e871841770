"""SRT and WebVTT subtitles, crash-safe: a file only ever receives complete cues, appended and
flushed as each one closes, so that the file on disk is valid at any moment; the last open cue
is written by ``close()``, which the CLI reaches on a normal end, Ctrl-C and SIGTERM.

Example:
    >>> with SubtitleSink("out.srt", frame_interval=0.1) as srt:
    ...     for event in caption_stream("clip.mp4"):
    ...         srt.write(event)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, Event, StatusEvent
from stream.sinks.base import Sink

SUBTITLE_FORMATS = ("srt", "vtt")

class SubtitleSink(Sink):
    """SRT or WebVTT (by ``fmt``, or the file suffix): a cue per settled caption (per run of
    equal captions when they were not settled: see :mod:`stream.settle`).

    A cue starts at the PTS of its first frame and ends at the PTS of the frame whose caption
    differs; the last cue, and a cue cut by a reconnect, end one frame interval after their last
    frame. Frames without a caption end the cue and start none.

    Args:
        path: the file to write.
        frame_interval: seconds between sampled frames (1 / the bundle's sample_fps).
        fmt: "srt" or "vtt"; None: from the suffix.
        keep_unopened: False: a stream that never opened (no ``opened`` status, no frame)
            leaves no file; the file is created at once all the same, so that a path that
            cannot be written is said before the run.
    """

    def __init__(self, path: str | Path, frame_interval: float, fmt: str | None = None,
                 keep_unopened: bool = True) -> None:
        self.path = Path(path)
        self.fmt = fmt or self.path.suffix.lstrip(".").lower()
        if self.fmt not in SUBTITLE_FORMATS:
            raise ValueError(f"{self.path}: subtitle format must be srt or vtt, got {self.fmt!r}")
        if not (frame_interval > 0 and math.isfinite(frame_interval)):
            raise ValueError(f"frame interval must be positive, got {frame_interval}")
        self.frame_interval = frame_interval
        self.keep_unopened = keep_unopened
        self.opened = False  # an ``opened`` status or a frame came
        self.cues = 0
        self._open: tuple[str, float, float] | None = None  # (text, start, last frame's pts)
        self._last_end = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        if self.fmt == "vtt":
            self._file.write("WEBVTT\n\n")
            self._file.flush()

    def write(self, event: Event) -> None:
        if isinstance(event, StatusEvent):
            self.opened |= event.kind == OPENED
            if event.kind in (RECONNECTING, ENDED):
                self._finish(None)
            return
        if not isinstance(event, CaptionEvent):
            return  # the settled events: the cues follow the frames' shown captions
        self.opened = True
        text = " ".join(event.on_screen.split())
        if self._open is not None and self._open[0] == text:
            self._open = (text, self._open[1], event.pts)
            return
        self._finish(event.pts)
        if text:
            self._open = (text, event.pts, event.pts)

    def close(self) -> None:
        if self._file is not None:
            self._finish(None)
            self._file.close()
            self._file = None
            if not (self.opened or self.keep_unopened):
                self.path.unlink(missing_ok=True)

    def _finish(self, end: float | None) -> None:
        """Write the open cue, ending at ``end`` (None: one frame after its last frame)."""
        if self._open is None or self._file is None:
            return
        text, start, last = self._open
        start = max(start, self._last_end)  # times that went backwards never overlap cues
        stop = last + self.frame_interval if end is None else end
        stop = max(stop, start + 0.001)
        if self.fmt == "srt":
            block = f"{self.cues + 1}\n{_timestamp(start, ',')} --> {_timestamp(stop, ',')}\n"
            block += text.replace("-->", "->") + "\n\n"
        else:
            body = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            block = f"{_timestamp(start, '.')} --> {_timestamp(stop, '.')}\n{body}\n\n"
        self._file.write(block)
        self._file.flush()
        # Only now is the cue done: a signal before this point leaves it open, to be written
        # by close().
        self._open = None
        self._last_end = stop
        self.cues += 1


def _timestamp(seconds: float, mark: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{mark}{millis:03d}"
