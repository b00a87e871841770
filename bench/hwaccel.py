"""``python -m bench.hwaccel``: how far the model's input from hardware decoding differs from
software decoding's, pixel by pixel.

    python -m bench.hwaccel --hwaccel cuda examples/shapes/videos data/shapes/test
    python -m bench.hwaccel --simulate nv12 examples/shapes/videos data/shapes/test

Each input's frames are sampled at the bundle's rate and converted to its input size twice:
once decoded in software, once decoded on the hardware decoder (``--hwaccel``), which hands
its frames back in its own pixel format (NV12 for 8-bit 4:2:0 on NVDEC) to the same swscale
conversion. Without a GPU, ``--simulate nv12`` measures the part that can differ there: the
software decoder's frames re-laid as NV12 (the same samples; H.264 decoding itself is exact,
so a conforming hardware decoder outputs the same samples), then converted the same way.

Prints a table (frames, identical frames, mean and max absolute difference in 0-255 levels,
share of values that differ) and writes it as JSON with ``--out``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream.archive.inputs import discover
from stream.cli.arguments import doc_parser
from stream.errors import StreamError
from stream.files import write_text_atomically
from stream.media.frames import (
    TimeSampler,
    frame_to_rgb,
    iter_sampled_frames,
    open_video,
    sampled_frames,
)
from stream.media.hwaccel import HWACCELS, resolve
from stream.model.bundle import read_bundle
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO


def simulated_frames(path: Path, fps: float, size: tuple[int, int],
                     layout: str) -> Iterator[np.ndarray]:
    """Software-decoded frames re-laid in ``layout`` (a hardware decoder's download format),
    then converted as every frame is."""
    with open_video(path) as (container, stream):
        for _, frame in sampled_frames(container, stream, TimeSampler(fps)):
            yield frame_to_rgb(frame.reformat(format=layout), size)


def compare(path: Path, fps: float, size: tuple[int, int], hwaccel: str | None,
            simulate: str | None) -> dict[str, Any]:
    """Pixel differences between software decoding and the other path, over one video."""
    software = (f.rgb for f in iter_sampled_frames(path, fps, size))
    other = (simulated_frames(path, fps, size, simulate) if simulate
             else (f.rgb for f in iter_sampled_frames(path, fps, size, hwaccel=hwaccel or "none")))
    frames = identical = differing = values = 0
    total, worst = 0.0, 0
    for a, b in zip(software, other, strict=True):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        frames += 1
        identical += int(not diff.any())
        differing += int(np.count_nonzero(diff))
        values += diff.size
        total += float(diff.sum())
        worst = max(worst, int(diff.max()))
    return {"video": str(path), "frames": frames, "identical_frames": identical,
            "mean_abs": total / max(1, values), "max_abs": worst,
            "differing_values": differing / max(1, values)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows together, weighted by their frames."""
    frames = sum(r["frames"] for r in rows)
    return {"videos": len(rows), "frames": frames,
            "identical_frames": sum(r["identical_frames"] for r in rows),
            "mean_abs": sum(r["mean_abs"] * r["frames"] for r in rows) / max(1, frames),
            "max_abs": max((r["max_abs"] for r in rows), default=0),
            "differing_values": sum(r["differing_values"] * r["frames"] for r in rows)
            / max(1, frames)}


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("python -m bench.hwaccel", __doc__)
    parser.add_argument("inputs", nargs="*", type=Path, default=[SAMPLE_VIDEO],
                        help="videos, or directories searched for them (default: the bundled "
                             "sample)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hwaccel", choices=[h for h in HWACCELS if h != "none"],
                      help="decode on this hardware decoder (fails where none works)")
    mode.add_argument("--simulate", choices=("nv12", "p010le"),
                      help="without a GPU: software frames re-laid in a hardware decoder's "
                           "download format")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="its input size and sample rate are used (default: models/shapes)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        bundle = read_bundle(args.bundle)
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.hwaccel and resolve(args.hwaccel) is None:
        print(f"error: hwaccel {args.hwaccel}: no hardware decoder works here (see the log "
              f"line above); --simulate nv12 measures the conversion alone", file=sys.stderr)
        return 1
    size = (bundle.input_size, bundle.input_size)
    try:
        videos, _ = discover(str(p) for p in args.inputs)
        rows = [compare(v, bundle.sample_fps, size, args.hwaccel, args.simulate) for v in videos]
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = summarize(rows)
    path = f"hwaccel {args.hwaccel}" if args.hwaccel else f"simulated {args.simulate} download"
    print(f"{path} against software decoding, {size[0]}x{size[1]} model input at "
          f"{bundle.sample_fps:g} fps:")
    print(f"  {summary['videos']} videos, {summary['frames']} frames: "
          f"{summary['identical_frames']} identical; mean |diff| {summary['mean_abs']:.4f}, "
          f"max {summary['max_abs']} levels; {100 * summary['differing_values']:.3f}% of "
          f"values differ")
    if args.out:
        write_text_atomically(args.out, json.dumps({"path": path, "summary": summary,
                                                    "videos": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
