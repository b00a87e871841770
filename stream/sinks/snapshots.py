"""Snapshots: the most confident frame of each event as a JPEG (``--snapshots DIR``), its path
attached to the event's ``end``.

A stream's frames reach it through the engines' frame listeners (every captioned frame on the
local engine, one every :attr:`RaySettings.frames_every` on Ray), at the model's input size; of
the frames of an event that said its caption, the most confident one it received is kept (one
frame per open event, nothing else), and written when the event ends, as
``DIR/STREAM/N.jpg`` (the event's id, ``STREAM/N``, plus ``.jpg``), under a temporary name
until complete.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream.events import END, CaptionEvent, Event, SettledEvent
from stream.files import write_atomically
from stream.settle import Settling

_RECENT = 64  # frames kept per stream until their captions arrive (the events queue's reach)
_QUALITY = 90


class Snapshots:
    """Keep each open event's most confident frame; write it when the event ends.

    Args:
        folder: where the JPEGs go (created as needed).

    Raises:
        ImportError: Pillow is not installed (the ``web`` extra).
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from PIL import Image
        except ImportError as error:
            raise ImportError(f"--snapshots needs Pillow (pip install 'lrcn-stream[web]'): "
                              f"{error}") from error
        self._image = Image
        self.folder = Path(folder)
        self.written = 0
        self._lock = threading.Lock()
        self._recent: dict[str, deque[tuple[float, np.ndarray]]] = {}
        self._best: dict[str, tuple[float, np.ndarray]] = {}  # event id -> (logprob, frame)

    def frame(self, stream: str, rgb: np.ndarray, pts: float) -> None:
        """The engines' frame listener (called from their threads)."""
        with self._lock:
            self._recent.setdefault(stream, deque(maxlen=_RECENT)).append((pts, rgb))

    def take(self, events: list[Event], settling: Settling) -> list[Event]:
        """``events`` (what ``settling`` just gave) with a snapshot on each ``end``."""
        out: list[Event] = []
        for event in events:
            if isinstance(event, CaptionEvent):
                self._consider(event, settling.open_id(event.stream))
            elif isinstance(event, SettledEvent) and event.type == END:
                event = self._write(event)
            out.append(event)
        return out

    def _consider(self, event: CaptionEvent, open_id: str | None) -> None:
        said = event.caption.split()
        if open_id is None or not said or said != (event.shown or "").split():
            return
        best = self._best.get(open_id)
        if best is not None and event.logprob <= best[0]:
            return
        with self._lock:
            frame = next((rgb for pts, rgb in reversed(self._recent.get(event.stream, ()))
                          if pts == event.pts), None)
        if frame is not None:
            self._best[open_id] = (event.logprob, frame)

    def _write(self, end: SettledEvent) -> SettledEvent:
        best = self._best.pop(end.id, None)
        if best is None:  # no frame of it came (Ray sends a few a second)
            return end
        path = self.folder.joinpath(*end.id.split("/")).with_suffix(".jpg")
        buffer = io.BytesIO()
        self._image.fromarray(best[1]).save(buffer, format="JPEG", quality=_QUALITY)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        self.written += 1
        return replace(end, snapshot=str(path))
