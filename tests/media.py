"""Test media generated in code (no binary fixtures): small H.264 videos and PNG images."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: int, fps: int = 30, size: tuple[int, int] = (64, 48),
                seed: int = 0, container: str | None = None, keyframe_every: int | None = None,
                first_pts: int = 0, drift: int = 7) -> Path:
    """Encode ``frames`` frames of moving noise with libx264 at ``fps`` into ``path`` (its
    format from the suffix, or ``container``, e.g. "mpegts"); returns ``path``.

    ``keyframe_every`` sets the GOP length in frames; ``first_pts`` starts the timestamps
    there (a non-zero start time); the top half's grey level changes by ``drift`` a frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if keyframe_every:
            stream.options = {"g": str(keyframe_every), "keyint_min": str(keyframe_every)}
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            rgb[: height // 2, :, :] = (i * drift) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = first_pts + i
            frame.time_base = Fraction(1, fps)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def write_image(path: Path, size: tuple[int, int] = (40, 30), color: int = 128) -> Path:
    """Write a flat PNG image through PyAV's image2 muxer; returns ``path``."""
    width, height = size
    rgb = np.full((height, width, 3), color, dtype=np.uint8)
    av.VideoFrame.from_ndarray(rgb, format="rgb24").save(str(path))
    return path
