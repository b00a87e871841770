"""A producer that writes live H.264 MPEG-TS into a named pipe, pausing in the middle.

    python -m tests.tools.pipe_writer FIFO --before 24 --pause 2.5 --after 26 --gop 10

The stream is encoded first, then written in real time (``--fps``), each frame's bytes as they
would leave a camera's muxer; after ``--before`` frames and 100 bytes more (inside a packet and,
with ``--gop`` frames between keyframes, inside a group of pictures) the writer stops sending
for ``--pause`` seconds with the pipe open, then carries on. Prints "ready" before opening the
pipe (which waits for a reader) and exits 1 if the reader goes away (a broken pipe).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from fractions import Fraction

import av
import numpy as np


def encode(frames: int, fps: int, gop: int) -> tuple[bytes, list[int]]:
    """The stream's bytes, and the offset at which each frame's bytes end."""
    buffer = io.BytesIO()
    ends = []
    with av.open(buffer, "w", format="mpegts", options={"flush_packets": "1"}) as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": str(gop), "tune": "zerolatency"}  # no lookahead: live
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            rgb = np.full((48, 64, 3), (i * 9) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            output.mux(stream.encode(frame))
            ends.append(buffer.tell())
        output.mux(stream.encode())
    return buffer.getvalue(), ends


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--before", type=int, default=20)
    parser.add_argument("--pause", type=float, default=2.5)
    parser.add_argument("--after", type=int, default=20)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--gop", type=int, default=5, help="frames from keyframe to keyframe")
    args = parser.parse_args()
    data, ends = encode(args.before + args.after, args.fps, args.gop)
    print("ready", flush=True)
    try:
        with open(args.path, "wb", buffering=0) as pipe:
            sent = 0
            for i, end in enumerate(ends):
                if i == args.before:
                    pipe.write(data[sent:sent + 100])
                    sent += 100
                    time.sleep(args.pause)
                pipe.write(data[sent:max(sent, end)])
                sent = max(sent, end)
                time.sleep(1 / args.fps)
            pipe.write(data[sent:])
    except BrokenPipeError:
        print("the reader closed the pipe", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
