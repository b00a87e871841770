"""Stage limits: how fast each stage runs alone, for the pipeline to be compared against.

* decoding alone, and decoding plus conversion to the model's input (all frames, or only the
  frames sampled at ``sample_fps``: the runtime converts only those), in source frames/s;
* the encoder graph alone at several batch sizes, in frames/s;
* the whole captioning core (encoder + memory + caption decoding) at the pipeline's batch size.

Each figure is the best of ``repeats`` timed runs (the machine is shared: the best run is the
one least disturbed), with the CPU time it took per item: a stage that needs 7 ms of CPU per
frame can never run faster than 2 x 1000 / 7 frames/s on 2 cores, whatever the threading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from stream.media.frames import (
    TimeSampler,
    frame_to_rgb,
    open_video,
    sampled_frames,
    use_file_threading,
)
from stream.model.bundle import LoadedBundle
from stream.model.captioning import CaptionCore


@dataclass(frozen=True)
class Rate:
    """A measured rate: items per second (wall clock) and CPU milliseconds per item (all
    threads of the process), which tells how much of the machine a stage needs."""

    per_second: float
    cpu_ms: float

    def to_json(self) -> dict[str, float]:
        return {"per_second": round(self.per_second, 1), "cpu_ms": round(self.cpu_ms, 3)}


def best_rate(run: Callable[[], int], repeats: int) -> Rate:
    """The fastest of ``repeats`` calls of ``run`` (which returns how many items it did)."""
    best = Rate(0.0, 0.0)
    for _ in range(repeats):
        cpu, start = time.process_time(), time.perf_counter()
        count = run()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if count / wall > best.per_second:
            best = Rate(count / wall, 1000 * cpu / count)
    return best


DECODER_SETTINGS = {"thread_type": "AUTO (frame + slice) for files of 1280x720 and more, "
                                   "else FFmpeg's default (slice)",
                    "swscale_threads": 1, "interpolation": "bilinear"}


def decode_limits(video: Path, size: tuple[int, int], sample_fps: float | None,
                  repeats: int, hwaccel: str = "none") -> dict[str, Rate]:
    """Source frames/s of PyAV decoding, and of decoding + conversion (all / sampled), on the
    CPU or on a hardware decoder (``hwaccel``, see stream.media.hwaccel)."""
    def rate(convert: bool, fps: float | None) -> Rate:
        return best_rate(lambda: _decode(video, size, convert, fps, hwaccel), repeats)

    return {"decode": rate(False, None), "decode_convert_all": rate(True, None),
            "decode_convert_sampled": rate(True, sample_fps)}


def _decode(video: Path, size: tuple[int, int], convert: bool, fps: float | None,
            hwaccel: str) -> int:
    """Decode every frame, converting those sampled at ``fps`` when ``convert``; frame count."""
    sampler = TimeSampler(fps)
    count = 0
    with open_video(video, hwaccel) as (container, stream):
        use_file_threading(stream)  # as the runtime's decoder does for files
        for time_, frame in sampled_frames(container, stream, TimeSampler(None)):
            count += 1
            if convert and sampler.accept(time_):
                frame_to_rgb(frame, size)
    return count


def encoder_limits(loaded: LoadedBundle, batches: list[int], repeats: int,
                   calls: int) -> dict[int, Rate]:
    """Frames/s of the encoder graph alone at each batch size (random frames)."""
    size = loaded.bundle.input_size
    rng = np.random.default_rng(0)
    core = CaptionCore(loaded)
    out = {}
    for batch in batches:
        frames = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
        core.encode(frames)  # warm-up: first runs allocate
        out[batch] = best_rate(partial(_encode_calls, core, frames, calls), repeats)
    return out


def core_limit(loaded: LoadedBundle, frames: np.ndarray, times: np.ndarray, batch: int,
               streams: int, repeats: int, encode_every_frame: bool = False) -> Rate:
    """Frames/s of the whole core over a video's sampled ``frames`` (with their ``times``),
    ``batch`` frames of ``streams`` streams per step (1 stream: a file's frames, stepped in
    order; several: each stream steps its next frames). Every repeat starts the streams fresh."""
    core = CaptionCore(loaded, encode_every_frame=encode_every_frame)
    per = max(1, batch // streams)
    steps = len(frames) // per
    runs = iter(range(1 << 30))

    def run() -> int:
        run_id = next(runs)
        ids = [(run_id, k) for k in range(streams) for _ in range(per)]
        for step in range(steps):
            rows = np.tile(np.arange(step * per, (step + 1) * per), streams)
            core.step(frames[rows], ids, times=times[rows].tolist())
        for sid in set(ids):
            core.forget(sid)
        return steps * per * streams

    run()  # warm-up: first runs allocate
    return best_rate(run, repeats)


def _encode_calls(core: CaptionCore, frames: np.ndarray, calls: int) -> int:
    return _repeat(core.encode, frames, calls) * len(frames)


def _repeat(run: Callable[[np.ndarray], object], frames: np.ndarray, calls: int) -> int:
    for _ in range(calls):
        run(frames)
    return calls
