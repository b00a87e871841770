"""Stage limits: how fast each stage runs alone, for the pipeline to be compared against.

* decoding alone, and decoding plus conversion to the model's input (all frames, or only the
  frames sampled at ``sample_fps``: the runtime converts only those), in source frames/s;
* the encoder graph alone at several batch sizes, in frames/s;
* the whole captioning core (encoder + memory + caption decoding) at the pipeline's batch size.

Each figure is the best of ``repeats`` timed runs (the machine is shared: the best run is the
one least disturbed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.bundle import LoadedBundle
from stream.captioning import CaptionCore
from stream.frames import TimeSampler, frame_to_rgb, sampled_frames


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` calls of ``run`` (it returns its count)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def decode_limits(video: Path, size: tuple[int, int], sample_fps: float | None,
                  repeats: int) -> dict[str, Any]:
    """Source frames/s of PyAV decoding, and of decoding + conversion (all / sampled)."""
    return {
        "decode_fps": best_rate(lambda: _decode(video, size, False, None), repeats),
        "decode_convert_all_fps": best_rate(lambda: _decode(video, size, True, None), repeats),
        "decode_convert_sampled_fps": best_rate(lambda: _decode(video, size, True, sample_fps),
                                                repeats),
        "settings": {"thread_type": "FFmpeg default (slice)", "swscale_threads": 1,
                     "interpolation": "bilinear"},
    }


def _decode(video: Path, size: tuple[int, int], convert: bool, fps: float | None) -> int:
    """Decode every frame, converting those sampled at ``fps`` when ``convert``; frame count."""
    sampler = TimeSampler(fps)
    count = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for time_, frame in sampled_frames(container, stream, TimeSampler(None)):
            count += 1
            if convert and sampler.accept(time_):
                frame_to_rgb(frame, size)
    return count


def encoder_limits(loaded: LoadedBundle, batches: list[int], seconds: float) -> dict[int, float]:
    """Frames/s of the encoder graph alone at each batch size (random frames)."""
    size = loaded.bundle.input_size
    rng = np.random.default_rng(0)
    core = CaptionCore(loaded)
    out = {}
    for batch in batches:
        frames = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
        core.encode(frames)  # warm-up: first runs allocate
        out[batch] = _rate_for(lambda frames=frames: core.encode(frames), batch, seconds)
    return out


def core_limit(loaded: LoadedBundle, batch: int, streams: int, seconds: float) -> float:
    """Frames/s of the whole core (encode, step memory, decode captions), ``streams`` streams."""
    size = loaded.bundle.input_size
    rng = np.random.default_rng(0)
    core = CaptionCore(loaded)
    frames = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    ids = [i % streams for i in range(batch)]
    core.step(frames, ids)
    return _rate_for(lambda: core.step(frames, ids), batch, seconds)


def _rate_for(run: Callable[[], object], per_call: int, seconds: float) -> float:
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds:
        run()
        calls += 1
    return calls * per_call / (time.perf_counter() - start)
