"""What both engines share: the pipeline's settings, the frame listeners' signature, and the
status of a stream whose source string could not be parsed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stream.engines.decoder import ReconnectPolicy
from stream.errors import MediaError
from stream.events import ENDED, StatusEvent
from stream.media.sources import SourceOptions

FrameListener = Callable[[str, np.ndarray, float], None]  # (stream, rgb, pts) of a frame


@dataclass(frozen=True)
class PipelineSettings:
    """How the pipeline batches, queues and reconnects.

    Attributes:
        max_batch: frames per encoder call at most.
        max_wait_ms: how long a batch waits for more frames after its first one arrived.
        queue_size: frames queued per stream at most (live sources drop beyond it).
        beam: 1 for greedy captions, more for beam search.
        reconnect: when live sources are reopened.
        source_options: how sources are opened (timeouts, RTSP transport, webcam settings).
        events_queue: events buffered for a slow consumer before the worker waits.
        caption_every_decoded_frame: caption every decoded frame instead of sampling at the bundle's
            ``sample_fps`` (for benchmarks: the model was trained at its sample rate).
        encode_every_frame: run the CNN on every captioned frame, not only on key frames
            (for comparison, and for models whose appearance changes fast).
    """

    max_batch: int = 8
    max_wait_ms: float = 20.0
    queue_size: int = 8
    beam: int = 1
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    source_options: SourceOptions = field(default_factory=SourceOptions)
    events_queue: int = 256
    caption_every_decoded_frame: bool = False
    encode_every_frame: bool = False

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max batch must be at least 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max wait must be 0 ms or more, got {self.max_wait_ms}")
        if self.queue_size < 1:
            raise ValueError(f"queue size must be at least 1, got {self.queue_size}")
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")


def unopened(stream: str, error: MediaError) -> StatusEvent:
    """The ``ended`` status of a stream whose source string could not be parsed."""
    return StatusEvent(stream=stream, kind=ENDED, at=time.time(), message=str(error),
                       error=str(error))
