"""Settled captions and caption events: what a stream shows, and when something starts and ends.

The model says a caption for every sampled frame; a person reading subtitles and a program on a
message bus want a caption that does not flicker, and an event when something starts, changes
and ends. :class:`Settler` turns a stream's per-frame captions into both, by one deterministic
rule that depends only on the captions and their reset flags (so every engine, and an archive
run in chunks, settles exactly as a whole local run):

* **Settled caption** (``CaptionEvent.shown``): a frame with the reset flag (a stream's first
  frame, a reconnect, a restarted actor) shows its caption at once, so a still image gets its one
  caption. Otherwise the shown caption changes only when a different caption has been said on
  ``settle`` consecutive sampled frames; a caption said on fewer never shows. ``settle=1`` shows
  every frame's caption (the per-frame behaviour).
* **Events** (:class:`~stream.events.SettledEvent`), one open at a time per stream, each with an id:

  - ``new``: a settled caption that does not continue the open event begins one (and ends the
    open one first);
  - ``update``: a settled caption that says the open event *more fully* continues it: the event's
    current caption is a proper word prefix of the new one (the appearance "a red circle"
    becoming "a red circle shrinks"). Anything else (another object, another motion, a shorter
    caption) ends the event and, when it is not empty, begins a new one;
  - ``end``: the event is over: another settled caption replaced it, the settled caption became
    empty, or the stream reconnected, was reset or ended. It carries the start and end times,
    the duration, the number of sampled frames, their mean log-probability and the index of
    the most confident frame (the highest log-probability among the frames that said the
    caption shown).

Times are presentation times in seconds. An event that ends with its stream (or a reconnect)
ends one frame interval after its last frame; one replaced by another ends where the next
begins.

Example:
    >>> settler = Settler("cam", settle=3, frame_interval=0.1)
    >>> for event in caption_stream("clip.mp4"):
    ...     for out in settler.push(event):
    ...         print(out)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from stream.events import (
    END,
    ENDED,
    NEW,
    RECONNECTING,
    UPDATE,
    CaptionEvent,
    Event,
    SettledEvent,
)

DEFAULT_SETTLE = 3  # sampled frames a new caption must hold to show (see the README's curve)


def check_settle(settle: int) -> int:
    """``settle`` when it is a whole number of frames, at least 1.

    Raises:
        ValueError: otherwise (one line naming the value).
    """
    if isinstance(settle, bool) or not isinstance(settle, int) or settle < 1:
        raise ValueError(f"settle must be a whole number of sampled frames, at least 1, got "
                         f"{settle!r}")
    return settle


def continues(current: str, new: str) -> bool:
    """Whether ``new`` says the event whose caption is ``current`` more fully: ``current``'s
    words are a proper prefix of ``new``'s.

    Example:
        >>> continues("a red circle", "a red circle shrinks"), continues("a red", "a redder")
        (True, False)
    """
    old_words, new_words = current.split(), new.split()
    return bool(old_words) and len(new_words) > len(old_words) and (
        new_words[:len(old_words)] == old_words)


@dataclass
class _Open:
    """The event being told: its id, start, the frames so far and the most confident one."""

    id: str
    caption: str
    start: float
    frames: int = 0
    logprob_sum: float = 0.0
    best_index: int = -1
    best_logprob: float = float("-inf")
    last_pts: float = 0.0
    last_index: int = -1


class Settler:
    """The settled caption and events of one stream; feed it that stream's events in order.

    Args:
        stream: the stream's id (event ids are ``STREAM/N``, N counting from 1).
        settle: sampled frames a new caption must hold before it shows (at least 1).
        frame_interval: seconds between sampled frames (1 / the bundle's ``sample_fps``).
    """

    def __init__(self, stream: str, settle: int = DEFAULT_SETTLE,
                 frame_interval: float = 0.1) -> None:
        self.stream = stream
        self.settle = check_settle(settle)
        self.frame_interval = frame_interval
        self.shown: str | None = None  # None: nothing shown yet (start, after a reset)
        self.events = 0  # events begun
        self._candidate: str | None = None
        self._held = 0  # consecutive frames the candidate was said
        self._open: _Open | None = None

    def push(self, event: Event) -> list[Event]:
        """What follows from ``event``: a caption comes back first, with ``shown`` set, then
        the events it settles (the ``end`` of the open event, then a ``new``; or an
        ``update``); a reconnect or the end of the stream ends the open event before the
        status."""
        if isinstance(event, CaptionEvent):
            return self._caption(event)
        if getattr(event, "kind", None) in (RECONNECTING, ENDED):
            return [*self._end(None), event]
        return [event]

    def finish(self) -> list[Event]:
        """The ``end`` of the open event, when the events stop without an ``ended`` status
        (a run stopped, an archive video whose captions are all written)."""
        return self._end(None)

    @property
    def open_id(self) -> str | None:
        """The id of the open event (the one the last frame was counted into), if any."""
        return None if self._open is None else self._open.id

    # ------------------------------------------------------------------ the rule

    def _caption(self, event: CaptionEvent) -> list[Event]:
        text = " ".join(event.caption.split())
        out: list[Event] = []
        if event.reset or self.shown is None:
            out += self._end(None)
            self._candidate, self._held = None, 0
            out += self._show(text, event)
        elif text == self.shown:
            self._candidate, self._held = None, 0
        else:
            self._held = self._held + 1 if text == self._candidate else 1
            self._candidate = text
            if self._held >= self.settle:
                self._candidate, self._held = None, 0
                out += self._show(text, event)
        self._count(text, event)
        return [replace(event, shown=self.shown or ""), *out]

    def _show(self, text: str, event: CaptionEvent) -> list[Event]:
        """``text`` becomes the shown caption at ``event``: the events that follow."""
        self.shown = text
        if self._open is not None and continues(self._open.caption, text):
            self._open.caption = text
            return [self._record(UPDATE, self._open, event.pts, event.index, event.logprob)]
        out = self._end(event.pts)
        if text:
            self.events += 1
            self._open = _Open(id=f"{self.stream}/{self.events}", caption=text, start=event.pts)
            out.append(self._record(NEW, self._open, event.pts, event.index, event.logprob))
        return out

    def _count(self, text: str, event: CaptionEvent) -> None:
        """Count ``event``'s frame into the open event."""
        open_ = self._open
        if open_ is None:
            return
        open_.frames += 1
        open_.logprob_sum += event.logprob
        open_.last_pts, open_.last_index = event.pts, event.index
        if text == open_.caption and event.logprob > open_.best_logprob:
            open_.best_index, open_.best_logprob = event.index, event.logprob

    def _end(self, at: float | None) -> list[Event]:
        """The ``end`` of the open event at ``at`` (None: one frame after its last frame)."""
        open_, self._open = self._open, None
        if at is None:
            self.shown = None  # the next caption shows at once (a reset follows)
        if open_ is None:
            return []
        end = open_.last_pts + self.frame_interval if at is None else at
        end = max(end, open_.start)
        mean = open_.logprob_sum / open_.frames if open_.frames else 0.0
        return [SettledEvent(
            stream=self.stream, type=END, id=open_.id, caption=open_.caption, pts=end,
            index=open_.last_index, logprob=mean, start=open_.start, emitted_at=time.time(),
            duration=round(end - open_.start, 6), frames=open_.frames,
            best_index=open_.best_index)]

    def _record(self, kind: str, open_: _Open, pts: float, index: int,
                logprob: float) -> SettledEvent:
        return SettledEvent(stream=self.stream, type=kind, id=open_.id, caption=open_.caption,
                            pts=pts, index=index, logprob=logprob, start=open_.start,
                            emitted_at=time.time())


class Settling:
    """One :class:`Settler` per stream over a run's mixed events.

    Args:
        settle: as for :class:`Settler`.
        frame_interval: as for :class:`Settler`.
        frames: pass the per-frame captions on (with ``shown`` set).
        events: pass the events (``new``, ``update``, ``end``) on.
    """

    def __init__(self, settle: int = DEFAULT_SETTLE, frame_interval: float = 0.1,
                 frames: bool = True, events: bool = True) -> None:
        self.settle = check_settle(settle)
        self.frame_interval = frame_interval
        self.frames, self.events = frames, events
        self.streams: dict[str, Settler] = {}

    def push(self, event: Event) -> list[Event]:
        settler = self.streams.get(event.stream)
        if settler is None:
            settler = self.streams[event.stream] = Settler(event.stream, self.settle,
                                                           self.frame_interval)
        return self._wanted(settler.push(event))

    def open_id(self, stream: str) -> str | None:
        """The id of ``stream``'s open event, if any."""
        settler = self.streams.get(stream)
        return None if settler is None else settler.open_id

    def finish(self) -> list[Event]:
        """The ``end`` of every stream's open event (a run that stopped)."""
        return self._wanted([e for s in self.streams.values() for e in s.finish()])

    def __call__(self, events: Iterable[Event]) -> Iterator[Event]:
        """``events`` settled, the open events ended when ``events`` runs out; a caller that
        stops early (``break``) closes ``events`` through this generator's close (a pipeline
        then stops)."""
        try:
            for event in events:
                yield from self.push(event)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        yield from self.finish()

    def _wanted(self, events: list[Event]) -> list[Event]:
        return [e for e in events
                if (self.frames or not isinstance(e, CaptionEvent))
                and (self.events or not isinstance(e, SettledEvent))]
