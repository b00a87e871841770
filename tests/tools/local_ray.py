"""What the Ray engine's test modules share: one local Ray of 2 CPUs per module, their
captions in a comparable form, and killing the actor of a stream."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest
import ray

from stream.events import CaptionEvent


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray of 2 CPUs for the module: each RayPipeline joins it (and leaves it up).
    A module that imports this fixture gets it for all its tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


def captions(events):
    """(stream, index, pts, caption) of every caption event, sorted: engine-independent."""
    return sorted((e.stream, e.index, e.pts, e.caption) for e in events
                  if isinstance(e, CaptionEvent))


def kill_actor(engine: Any, stream: str) -> int:
    """SIGKILL the process of the actor that captions ``stream`` in the RayPipeline ``engine``
    (as a crash would); returns its pid."""
    _, pid, _ = engine.placement()[stream]
    assert pid is not None and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid
