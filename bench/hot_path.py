"""The decoders' hot path, before and after, in one run: swscale contexts and intra-only skips.

    python -m bench.hot_path [--seconds 10] [--repeats 3]

1. Conversion of sampled frames to the model's input (224x224 RGB) with a new swscale context
   per frame (``frame.to_ndarray``, the path before) against one reformatter per thread (the
   path now), on 320x240 and 1920x1080 testsrc2 videos: CPU ms per sampled frame.
2. An MJPEG camera (1280x720, 30 fps, every frame a key frame) sampled at 10 fps: decoding
   every frame (before) against decoding only the sampled ones (now): CPU ms per second of
   video. Rounds alternate, and the median of ``--repeats`` is reported.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from bench.inputs import CACHE, bench_video
from stream.cli.arguments import Parser
from stream.media.frames import FrameCounter, TimeSampler, frame_to_rgb, sampled_frames

SIZE = (224, 224)
FPS = 10


def _sampled(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame for _, frame in sampled_frames(container, stream, TimeSampler(FPS))]


def conversion_ms(frames: list[av.VideoFrame], shared: bool) -> float:
    reformatter = VideoReformatter() if shared else None
    start = time.process_time()
    for frame in frames:
        if shared:
            frame_to_rgb(frame, SIZE, reformatter)
        else:
            frame.to_ndarray(width=SIZE[0], height=SIZE[1], format="rgb24",
                             interpolation="BILINEAR", threads=1)
    return 1000 * (time.process_time() - start) / len(frames)


def mjpeg_video(seconds: int, cache: Path = CACHE) -> Path:
    path = cache / f"mjpeg_1280x720_{seconds}s.avi"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.avi")
    graph = av.open(f"testsrc2=size=1280x720:rate=30:duration={seconds}", format="lavfi")
    with graph, av.open(str(partial), "w") as output:
        stream = output.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuvj420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for frame in graph.decode(video=0):  # lavfi's frames are timed at 1/30 s already
            output.mux(stream.encode(frame.reformat(format="yuvj420p")))
        output.mux(stream.encode())
    partial.replace(path)
    return path


def decode_ms_per_second(path: Path, skip: bool, seconds: float) -> tuple[float, int]:
    counter = FrameCounter()
    start = time.process_time()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if skip:
            sampled = [t for t, _ in sampled_frames(container, stream, TimeSampler(FPS),
                                                    counter)]
        else:  # every frame decoded, the sampler applied afterwards (the path before)
            grid = TimeSampler(FPS)
            sampled = [t for t, _ in sampled_frames(container, stream, TimeSampler(None),
                                                    counter) if grid.accept(t)]
    return 1000 * (time.process_time() - start) / seconds, len(sampled)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.hot_path",
                    description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for size in ((320, 240), (1920, 1080)):
        frames = _sampled(bench_video(size, args.seconds))
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for shared in (False, True):
                runs[shared].append(conversion_ms(frames, shared))
        before, after = (statistics.median(runs[k]) for k in (False, True))
        results[f"convert {size[0]}x{size[1]}"] = {
            "cpu_ms_per_sampled_frame_before": round(before, 3),
            "cpu_ms_per_sampled_frame_after": round(after, 3),
            "change": round(after / before - 1, 3)}
    path = mjpeg_video(args.seconds)
    decoded: dict[bool, list[float]] = {False: [], True: []}
    counts = {}
    for _ in range(args.repeats):
        for skip in (False, True):
            ms, counts[skip] = decode_ms_per_second(path, skip, args.seconds)
            decoded[skip].append(ms)
    assert counts[False] == counts[True]  # the same frames sampled either way
    before, after = (statistics.median(decoded[k]) for k in (False, True))
    results["mjpeg 1280x720 30 fps sampled at 10"] = {
        "cpu_ms_per_video_second_before": round(before, 1),
        "cpu_ms_per_video_second_after": round(after, 1), "change": round(after / before - 1, 3),
        "sampled_frames": counts[True]}
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
