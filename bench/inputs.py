"""Benchmark inputs, generated once and cached: H.264 videos with natural-looking texture.

ShapesWorld's flat colours decode unrealistically fast, so the benchmark encodes FFmpeg's
``testsrc2`` pattern (moving gradients, text, a rotating wheel) with light temporal noise, which
gives a bit rate like a camera's (about 2.5 Mbit/s at 640x480 30 fps with libx264 at CRF 23).
Everything in it moves all the time: for key frames it is a hard case. The still scene (one
filled square on a grey ground, with the same sensor noise) is the easy one: a camera watching
an empty room.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av

from stream.files import write_atomically

log = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent / "cache"
FPS = 30
NOISE = 5  # FFmpeg noise filter strength: camera-like grain without exploding the bit rate


def bench_video(size: tuple[int, int], seconds: int, cache: Path = CACHE) -> Path:
    """The cached ``testsrc2`` video of ``size`` (width, height) and ``seconds`` at 30 fps."""
    width, height = size
    return _cached(cache / f"testsrc2_{width}x{height}_{seconds}s_{FPS}fps.mp4",
                   f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}", size)


def still_video(size: tuple[int, int], seconds: int, cache: Path = CACHE) -> Path:
    """The cached still scene of ``size`` and ``seconds``: a red square on grey, sensor noise."""
    width, height = size
    side = height // 4
    return _cached(cache / f"still_{width}x{height}_{seconds}s_{FPS}fps.mp4",
                   f"color=c=0x808080:size={width}x{height}:rate={FPS}:duration={seconds},"
                   f"drawbox=x={(width - side) // 2}:y={(height - side) // 2}:w={side}:h={side}:"
                   f"color=0xdc2828:t=fill", size)


def _cached(path: Path, graph: str, size: tuple[int, int]) -> Path:
    if not path.exists():
        log.info("generating %s (once; cached)", path.name)
        write_atomically(path, lambda tmp: _encode(tmp, f"{graph},noise=alls={NOISE}:allf=t",
                                                   size))
    return path


def _encode(path: Path, graph: str, size: tuple[int, int]) -> None:
    width, height = size
    with av.open(graph, format="lavfi") as source, av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for frame in source.decode(video=0):
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())


def paced_source(video: Path, start: float = 0.0) -> str:
    """A live-camera source string that plays ``video`` in real time from ``start`` seconds,
    looped, decoding it.

    The ``movie`` filter decodes the H.264 file inside the lavfi graph (so each stream pays for
    decoding, as a camera's does), ``setpts`` keeps time running across loops and ``realtime``
    paces it at 30 fps. Copies of one video started at different points show different things
    at any moment, as independent cameras do.
    """
    escaped = str(video).replace("\\", "/").replace(":", "\\:").replace(",", "\\,")
    seek = f":seek_point={start:g}" if start > 0 else ""
    return f"lavfi:movie={escaped}{seek}:loop=0,setpts=N/{FPS}/TB,realtime"
