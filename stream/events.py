"""What the pipeline emits: a caption event per sampled frame, and status events per stream;
and what settling them gives (:mod:`stream.settle`): events that begin, are said more fully and end.

Both are plain frozen dataclasses with a ``to_json`` for JSON Lines. Times: ``pts`` is the
frame's presentation time in seconds from the start of the stream (it keeps increasing across
reconnects); ``decoded_at`` and ``emitted_at`` are wall-clock Unix times; ``latency_ms`` is
measured on the monotonic clock from decode to emission.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Status kinds, in the order a stream may go through them.
OPENED = "opened"  # the source is open and decoding (again, after a reconnect)
RECONNECTING = "reconnecting"  # the source ended or failed; it is reopened after a delay
DROPPED = "dropped"  # frames were dropped to keep latency bounded (count in ``dropped``)
ENDED = "ended"  # the stream is over: its end, or reconnecting gave up (then ``error`` is set)

# Settled event types, as camera analytics tools type theirs.
NEW = "new"  # a settled caption begins an event
UPDATE = "update"  # the open event, said more fully
END = "end"  # the event is over


@dataclass(frozen=True)
class CaptionEvent:
    """The caption of one sampled frame of one stream.

    Attributes:
        stream: the stream's id (unique in a run, free of credentials).
        index: the frame's position among the stream's sampled frames (gaps are dropped frames).
        pts: presentation time in seconds.
        decoded_at: wall-clock time the frame was decoded.
        emitted_at: wall-clock time the caption was emitted.
        caption: the caption text ("" when the model says nothing).
        logprob: the caption's log-probability under the model.
        latency_ms: decode to emission, in milliseconds.
        changed: the caption differs from the stream's previous one (or is its first).
        reset: the stream's memory was cleared before this frame (start, reconnect).
        encoded: the CNN ran on this frame (a key frame); otherwise the appearance features of
            the stream's last key frame were held for it.
        shown: the stream's settled caption at this frame (what a person is shown; see
            :mod:`stream.settle`); None when the captions were not settled.
    """

    stream: str
    index: int
    pts: float
    decoded_at: float
    emitted_at: float
    caption: str
    logprob: float
    latency_ms: float
    changed: bool
    reset: bool
    encoded: bool = True
    shown: str | None = None

    @property
    def on_screen(self) -> str:
        """What a person sees at this frame: the settled caption, or the frame's own caption
        when the captions were not settled."""
        return self.caption if self.shown is None else self.shown

    def to_json(self) -> dict[str, Any]:
        return {"type": "caption", **asdict(self)}


@dataclass(frozen=True)
class StatusEvent:
    """A change in a stream's condition (see the status kinds above).

    Attributes:
        stream: the stream's id.
        kind: one of OPENED, RECONNECTING, DROPPED, ENDED (above).
        at: wall-clock time.
        message: a one-line explanation for people (no credentials).
        dropped: frames dropped so far by this stream.
        reconnects: reconnects so far by this stream.
        error: for ``ended``: the reason it ended in failure, else None.
    """

    stream: str
    kind: str
    at: float
    message: str = ""
    dropped: int = 0
    reconnects: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "status", **asdict(self)}


@dataclass(frozen=True)
class SettledEvent:
    """An event of a stream's settled captions (see :mod:`stream.settle` for the rule).

    Attributes:
        stream: the stream's id.
        type: NEW, UPDATE or END.
        id: the event's id, ``STREAM/N`` (the same on its new, updates and end).
        caption: the settled caption (for ``end``: the last one the event had).
        pts: when it happened, in seconds (new, update: the frame that settled it; end: its end).
        index: that frame's index (end: the event's last frame).
        logprob: that frame's log-probability (end: the mean over the event's frames).
        start: when the event began (its ``new``'s ``pts``).
        emitted_at: wall-clock time it was settled.
        duration: end only: ``pts - start``.
        frames: end only: sampled frames in the event.
        best_index: end only: the frame that said the caption most confidently.
        snapshot: end only, with ``--snapshots``: the path of that frame's JPEG.
    """

    stream: str
    type: str
    id: str
    caption: str
    pts: float
    index: int
    logprob: float
    start: float
    emitted_at: float
    duration: float | None = None
    frames: int | None = None
    best_index: int | None = None
    snapshot: str | None = None

    def to_json(self) -> dict[str, Any]:
        record = {"type": self.type, **asdict(self)}  # the type first, as in the other records
        if self.type != END:
            for name in ("duration", "frames", "best_index"):
                del record[name]
        if self.snapshot is None:
            del record["snapshot"]
        return record


StreamEvent = CaptionEvent | StatusEvent  # what an engine emits
Event = CaptionEvent | StatusEvent | SettledEvent  # what a sink takes
