"""The archive's worker side: :func:`caption_task` captions one task (a video or a chunk of it)
with a worker's :class:`~stream.model.captioning.CaptionCore` and returns its events, or its error,
as a :class:`TaskResult`.

Key frames: every chunk of a video takes the video's phase of the key-frame windows
(:func:`video_phase`: the phase of the stream id ``run_stream`` gives the file, its stem), not
one of its own, so that chunks rebuild the whole video's key frames exactly and a video gets the
key frames that the live engines give it. Frames are decoded on the task's own thread, so the
core computes their thumbnails and signatures.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import numpy as np

from stream.archive.inputs import Task, printable
from stream.errors import MediaError, reason
from stream.media.frames import TIME_EPS, decode_sampled, open_video
from stream.media.sources import stream_ids
from stream.model.captioning import CaptionCore
from stream.model.keyframes import KeyFrameRule

_STEP_BATCH = 8  # frames encoded per call within a chunk


@dataclass
class TaskResult:
    """What a worker returns for a task: its captions as JSON-ready dicts, or its error."""

    path: str
    chunk: int
    chunks: int
    events: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # wall time taken
    duration: float = 0.0  # video seconds covered
    error: str | None = None

    def to_row(self) -> dict[str, Any]:
        """A flat row (events as one JSON string), for engines that move tables around."""
        row = asdict(self)
        row["events"] = json.dumps(self.events)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskResult:
        data = dict(row)
        data["events"] = json.loads(data["events"])
        data["error"] = data.get("error") or None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def caption_task(core: CaptionCore, task: Task, decoder_threads: int = 1) -> TaskResult:
    """Caption one task: decode from ``start - warmup``, step every sampled frame, keep the
    captions of frames in [start, end). Failures become the result's error, never an
    exception (one bad file must not stop a batch)."""
    started = time.perf_counter()
    result = TaskResult(task.path, task.chunk, task.chunks)
    try:
        result.events, result.duration = _caption_frames(core, task, decoder_threads)
    except MediaError as error:
        result.error = printable(str(error))
    except Exception as error:  # noqa: BLE001 - anything else is still this file's failure
        result.error = printable(f"{task.path}: {type(error).__name__}: {reason(error)}")
    finally:
        core.forget(_stream_id(task))
    result.seconds = time.perf_counter() - started
    return result


def _stream_id(task: Task) -> str:
    return f"{task.path}#{task.chunk}"


def video_phase(rule: KeyFrameRule, path: str) -> int:
    """The key-frame phase of the video at ``path``, the same for each of its chunks: that of
    the stream id the live engines give the file (``stream_ids([path])``: its stem)."""
    return rule.phase(stream_ids([path])[0])


def _caption_frames(core: CaptionCore, task: Task,
                    decoder_threads: int) -> tuple[list[dict[str, Any]], float]:
    bundle = core.bundle
    size = (bundle.input_size, bundle.input_size)
    fps = bundle.sample_fps
    # The warm-up starts on the sampling grid, so that the chunk's sampler keeps the same
    # frames as the whole video's does, and spans the key-frame rule's window, so that the
    # chunk's key frames are the whole video's from its start on.
    warmup = max(task.warmup, core.keyframes.window(fps)) if task.start > 0 else 0.0
    first = max(0.0, math.floor((task.start - warmup) * fps + TIME_EPS) / fps)
    events: list[dict[str, Any]] = []
    pending: list[tuple[float, np.ndarray]] = []
    last_pts = task.start  # the last sampled frame's time
    phase = video_phase(core.keyframes, task.path)

    def flush() -> None:
        # The task's stream id is new to the core: its first frame starts from a clear state.
        frames = np.stack([rgb for _, rgb in pending])
        captions = core.step(frames, [_stream_id(task)] * len(pending),
                             times=[pts for pts, _ in pending], phases=[phase] * len(pending))
        for (pts, _), caption in zip(pending, captions, strict=True):
            if pts >= task.start - TIME_EPS:
                events.append({"pts": round(pts, 6), "caption": caption.text,
                               "logprob": round(caption.logprob, 4),
                               "encoded": caption.encoded})
        pending.clear()

    def opened(_container: av.container.InputContainer, video: av.VideoStream) -> None:
        video.codec_context.thread_count = decoder_threads

    for frame in decode_sampled(lambda: open_video(task.path, task.hwaccel), task.path, fps,
                                size, first, opened):
        if task.end is not None and frame.time >= task.end - TIME_EPS:
            break
        pending.append((frame.time, frame.rgb))
        last_pts = frame.time
        if len(pending) == _STEP_BATCH:
            flush()
    if pending:
        flush()
    end = task.end if task.end is not None else last_pts + 1 / bundle.sample_fps
    return events, max(0.0, end - task.start)
