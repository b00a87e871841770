"""``python -m export.agreement``: do two bundles, or one bundle on two devices or with two
encoder precisions, caption alike?

    python -m export.agreement models/shapes models/shapes-fp16 data/shapes/test
    python -m export.agreement models/shapes models/shapes data/shapes/test --devices cpu cuda
    python -m export.agreement models/shapes models/shapes data/shapes/test --precisions fp32 int8

Every video (or still image) is sampled once, at the first bundle's rate and input size, and
captioned by both, frame by frame, through the torch-free ONNX core (key frames as the runtime
chooses them). Reported: the share of frames whose captions are token-identical, the videos
captioned identically throughout, and the largest difference of a caption's log-probability.
The two bundles must share their input size, sample rate and vocabulary.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.archive.inputs import discover
from stream.cli.arguments import doc_parser
from stream.errors import StreamError
from stream.files import write_text_atomically
from stream.media.frames import read_sampled_frames
from stream.model.bundle import LoadedBundle, open_bundle
from stream.model.captioning import Caption, CaptionCore, caption_sequences
from stream.model.sessions import DEVICES, PRECISIONS, SessionSettings

GROUP = 16  # videos held in memory at once


def _compatible(a: LoadedBundle, b: LoadedBundle) -> None:
    for what in ("input_size", "sample_fps", "tokens"):
        if getattr(a.bundle, what) != getattr(b.bundle, what):
            raise StreamError(f"{b.bundle.path}: its {what} differs from {a.bundle.path}'s; "
                              f"their captions cannot be compared frame by frame")


def caption_agreement(a: LoadedBundle, b: LoadedBundle, videos: Sequence[Path]) -> dict[str, Any]:
    """Frame-by-frame agreement of ``a``'s and ``b``'s captions on ``videos``."""
    _compatible(a, b)
    cores = (CaptionCore(a), CaptionCore(b))
    size = (a.bundle.input_size, a.bundle.input_size)
    frames = same = same_videos = 0
    worst_logprob = 0.0
    disagreements: list[dict[str, Any]] = []
    seconds = [0.0, 0.0]  # captioning time of each side
    for start in range(0, len(videos), GROUP):
        group = videos[start:start + GROUP]
        sampled = [read_sampled_frames(v, a.bundle.sample_fps, size) for v in group]
        pixels, times = [s[0] for s in sampled], [s[1] for s in sampled]
        captions = []
        for k, core in enumerate(cores):
            started = time.perf_counter()
            captions.append(caption_sequences(core, pixels, times=times))
            seconds[k] += time.perf_counter() - started
        first, second = captions
        for video, one, two, at in zip(group, first, second, times, strict=True):
            matches = [x.text == y.text for x, y in zip(one, two, strict=True)]
            frames += len(matches)
            same += sum(matches)
            same_videos += all(matches)
            worst_logprob = max([worst_logprob, *(_logprob_gap(x, y)
                                                  for x, y in zip(one, two, strict=True))])
            for t, match, x, y in zip(at, matches, one, two, strict=True):
                if not match and len(disagreements) < 20:
                    disagreements.append({"video": video.name, "time": round(float(t), 3),
                                          "a": x.text, "b": y.text})
    return {"videos": len(videos), "frames": frames, "identical_frames": same,
            "identical_share": round(same / max(1, frames), 5), "identical_videos": same_videos,
            "max_logprob_difference": round(worst_logprob, 5),
            "captioning_seconds": [round(t, 2) for t in seconds],
            "first_disagreements": disagreements}


def _logprob_gap(x: Caption, y: Caption) -> float:
    return abs(x.logprob - y.logprob) if x.text == y.text else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("python -m export.agreement", __doc__)
    parser.add_argument("first", type=Path, help="a bundle directory")
    parser.add_argument("second", type=Path, help="the bundle to compare with (may be the same)")
    parser.add_argument("inputs", nargs="+",
                        help="videos or images, or directories searched for them")
    parser.add_argument("--devices", nargs=2, choices=DEVICES, default=["cpu", "cpu"],
                        metavar=("FIRST", "SECOND"),
                        help="where each bundle runs (default: cpu cpu)")
    parser.add_argument("--precisions", nargs=2, choices=PRECISIONS, default=["fp32", "fp32"],
                        metavar=("FIRST", "SECOND"),
                        help="each bundle's encoder: fp32, int8 (the bundle's int8 encoder) or "
                             "auto (default: fp32 fp32)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        videos, _ = discover(args.inputs)
        a, b = (open_bundle(path, SessionSettings(device=device, precision=precision))
                for path, device, precision in zip((args.first, args.second), args.devices,
                                                   args.precisions, strict=True))
        result = caption_agreement(a, b, videos)
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result |= {"first": {"bundle": str(args.first), "device": args.devices[0],
                         "providers": a.providers, "precision": a.precision},
               "second": {"bundle": str(args.second), "device": args.devices[1],
                          "providers": b.providers, "precision": b.precision}}
    print(f"{args.first} ({a.providers[0]}, {a.precision}) against {args.second} "
          f"({b.providers[0]}, {b.precision}): "
          f"{result['identical_frames']}/{result['frames']} frames token-identical "
          f"({100 * result['identical_share']:.2f}%), {result['identical_videos']}/"
          f"{result['videos']} videos identical throughout; largest log-probability "
          f"difference of an identical caption {result['max_logprob_difference']:.5f}")
    for d in result["first_disagreements"][:5]:
        print(f"  {d['video']} at {d['time']:.2f} s: {d['a']!r} / {d['b']!r}")
    if args.out:
        write_text_atomically(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
