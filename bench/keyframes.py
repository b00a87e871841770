"""Choose a key-frame rule by measurement: key-frame rate and stale frames per setting.

    python -m bench.keyframes --data data/shapes/val --every 8 16 --threshold 0.1 0.15 0.2

For each (K, threshold) over a captioned split, sampled at ``--sample-fps``: the fraction of
sampled frames that are key frames (the CNN's share of the work), and the fraction of frames
whose held features come from a key frame of an earlier caption segment (the rule missed a
change of what is shown, so the memory sees the previous object's appearance). Also the
distribution of the frame-to-frame change at segment boundaries and inside segments, which
brackets the threshold. Videos without annotations (``--video``) give the key-frame rate only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from stream.cli.arguments import doc_parser
from stream.media.frames import read_sampled_frames
from stream.model.keyframes import KeyFrameRule, key_frames, sample_slot, signature, thumbnails


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("python -m bench.keyframes", __doc__)
    parser.add_argument("--data", type=Path, help="a captioned split (folder or annotation JSON)")
    parser.add_argument("--video", type=Path, nargs="*", default=[],
                        help="videos without annotations (key-frame rate only)")
    parser.add_argument("--every", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--cells", type=int, default=7)
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--pool", type=int, default=4, help="thumbnail pixels per side")
    parser.add_argument("--sample-fps", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.data is None and not args.video:
        parser.error("give --data or --video")
    probe = KeyFrameRule(cells=args.cells)
    clips: list[tuple[np.ndarray, list[int], list[Any] | None]] = []  # segment per frame
    if args.data is not None:
        from lrcn.data import frame_targets, load_dataset

        for item in load_dataset(args.data).items:
            frames, times = read_sampled_frames(item.path, args.sample_fps, (args.size,) * 2)
            clips.append((signature(probe, thumbnails(frames, args.pool)),
                          [sample_slot(t, args.sample_fps) for t in times],
                          frame_targets(item, times)))
    for video in args.video:
        frames, times = read_sampled_frames(video, args.sample_fps, (args.size,) * 2)
        clips.append((signature(probe, thumbnails(frames, args.pool)),
                      [sample_slot(t, args.sample_fps) for t in times], None))
    annotated = [c for c in clips if c[2] is not None]
    if annotated:
        boundary: list[float] = []
        inside: list[float] = []
        for sigs, _, segments in annotated:
            assert segments is not None
            for t in range(1, len(sigs)):
                change = float(np.abs(sigs[t] - sigs[t - 1]).max())
                (boundary if segments[t] is not segments[t - 1] else inside).append(change)
        print(f"frame-to-frame change, {len(boundary)} segment boundaries: min "
              f"{min(boundary, default=np.nan):.3f}, 5% {_pct(boundary, 5)}, median "
              f"{_pct(boundary, 50)}; inside segments: median {_pct(inside, 50)}, 99% "
              f"{_pct(inside, 99)}, max {max(inside, default=np.nan):.3f}")
    print("| K | threshold | key frames / frame | stale frames / frame |")
    print("| --- | --- | --- | --- |")
    for every in args.every:
        for threshold in args.threshold:
            rule = KeyFrameRule(every, threshold, args.cells)
            keys = frames_total = stale = 0
            for sigs, slots, segments in clips:
                flags = key_frames(rule, sigs, slots)
                keys += int(flags.sum())
                frames_total += len(flags)
                if segments is not None:
                    last = 0
                    for t, key in enumerate(flags):
                        last = t if key else last
                        stale += segments[t] is not None and segments[t] is not segments[last]
            stale_text = f"{stale / max(frames_total, 1):.4f}" if annotated else "-"
            print(f"| {every} | {threshold:g} | {keys / max(frames_total, 1):.3f} | "
                  f"{stale_text} |")
    return 0


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.3f}" if values else "-"


if __name__ == "__main__":
    sys.exit(main())
