"""What a sink is: an object with ``write(event)`` and ``close()`` that is a context manager;
a Python callback as a sink, and the routing of each stream's events to that stream's own sinks.

Every output (console, JSON Lines, subtitles, summary, overlay, web view, MQTT) is a sink; the
engines do not know which ones run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Any

from stream.events import Event


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
    """Hands each event to the sinks of its own stream (a file per stream); closes them all.

    Args:
        sinks: each stream's sinks.
        factory: the sinks of a stream first seen later (a camera added while running), or
            None for none.
    """

    def __init__(self, sinks: dict[str, list[Sink]],
                 factory: Callable[[str], list[Sink]] | None = None) -> None:
        self.sinks = sinks
        self.factory = factory

    def write(self, event: Event) -> None:
        sinks = self.sinks.get(event.stream)
        if sinks is None:
            sinks = self.sinks[event.stream] = (self.factory(event.stream)
                                                if self.factory is not None else [])
        for sink in sinks:
            sink.write(event)

    def close_stream(self, stream: str) -> None:
        """Close ``stream``'s sinks now (a camera removed); its next events open new ones."""
        for sink in self.sinks.pop(stream, []):
            sink.close()

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
