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
