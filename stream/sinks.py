"""Where events go: console, JSON Lines, SRT and WebVTT files, a Python callback, and the
per-stream routing of a stream's own files (``PerStream``).

Every sink has ``write(event)`` and ``close()`` and is a context manager. Files are crash-safe:
JSON Lines are flushed line by line, and a subtitle file only ever receives complete cues,
appended and flushed as each one closes, so that a file on disk is valid at any moment; the last
open cue is written by ``close()``, which the CLI reaches on a normal end, Ctrl-C and SIGTERM.

Example:
    >>> with SubtitleSink("out.srt", frame_interval=0.1) as srt:
    ...     for event in caption_stream("clip.mp4"):
    ...         srt.write(event)
"""

from __future__ import annotations

import json
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from stream.events import DROPPED, ENDED, RECONNECTING, CaptionEvent, Event, StatusEvent

SUBTITLE_FORMATS = ("srt", "vtt")
STDOUT = "-"  # the path of JSON Lines written to standard output


class Sink(ABC):
    """Base of the sinks: ``write`` each event, ``close`` once (also on leaving a ``with``)."""

    @abstractmethod
    def write(self, event: Event) -> None:
        """Take one event (a caption or a status)."""

    def close(self) -> None:  # noqa: B027 - a sink that holds nothing has nothing to close
        """Flush and release what the sink holds; calling it again does nothing."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class PerStream(Sink):
    """Hands each event to the sinks of its own stream (a file per stream); closes them all."""

    def __init__(self, sinks: dict[str, list[Sink]]) -> None:
        self.sinks = sinks

    def write(self, event: Event) -> None:
        for sink in self.sinks.get(event.stream, ()):
            sink.write(event)

    def close(self) -> None:
        """Close every sink, even after one failed to (the first failure is raised)."""
        first: BaseException | None = None
        for sinks in self.sinks.values():
            for sink in sinks:
                try:
                    sink.close()
                except Exception as error:  # noqa: BLE001 - raised below, after the rest
                    first = first or error
        if first is not None:
            raise first


class CallbackSink(Sink):
    """Calls ``callback(event)`` for every event (the embedding API)."""

    def __init__(self, callback: Callable[[Event], Any]) -> None:
        self.callback = callback

    def write(self, event: Event) -> None:
        self.callback(event)


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


class SubtitleSink(Sink):
    """SRT or WebVTT (by ``fmt``, or the file suffix): a cue per run of equal captions.

    A cue starts at the PTS of its first frame and ends at the PTS of the frame whose caption
    differs; the last cue, and a cue cut by a reconnect, end one frame interval after their last
    frame. Frames without a caption end the cue and start none.

    Args:
        path: the file to write.
        frame_interval: seconds between sampled frames (1 / the bundle's sample_fps).
        fmt: "srt" or "vtt"; None: from the suffix.
    """

    def __init__(self, path: str | Path, frame_interval: float, fmt: str | None = None) -> None:
        self.path = Path(path)
        self.fmt = fmt or self.path.suffix.lstrip(".").lower()
        if self.fmt not in SUBTITLE_FORMATS:
            raise ValueError(f"{self.path}: subtitle format must be srt or vtt, got {self.fmt!r}")
        if not (frame_interval > 0 and math.isfinite(frame_interval)):
            raise ValueError(f"frame interval must be positive, got {frame_interval}")
        self.frame_interval = frame_interval
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
            if event.kind in (RECONNECTING, ENDED):
                self._finish(None)
            return
        text = " ".join(event.caption.split())
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
