"""A producer that writes live H.264 MPEG-TS into a named pipe, pausing in the middle.

    python -m tests.tools.pipe_writer FIFO --before 20 --pause 2.5 --after 20 --fps 10

Frames go out in real time (``--fps``), flushed packet by packet, so that the reader sees a
live source that stops sending for ``--pause`` seconds and then carries on.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import av
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--before", type=int, default=20)
    parser.add_argument("--pause", type=float, default=2.5)
    parser.add_argument("--after", type=int, default=20)
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args()
    print("ready", flush=True)  # imports done: opening the pipe waits for its reader
    with av.open(args.path, "w", format="mpegts", options={"flush_packets": "1"}) as output:
        stream = output.add_stream("libx264", rate=args.fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        # Frequent keyframes and no lookahead: a reader that reopens mid-stream decodes again
        # within a few frames.
        stream.options = {"g": "5", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, args.fps)
        for i in range(args.before + args.after):
            if i == args.before:
                time.sleep(args.pause)
            rgb = np.full((48, 64, 3), (i * 9) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, args.fps)
            output.mux(stream.encode(frame))
            time.sleep(1 / args.fps)
        output.mux(stream.encode())


if __name__ == "__main__":
    main()
