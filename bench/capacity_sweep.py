"""Live cameras at chosen counts: p99 latency and dropped frames at each, one run per count.

    python -m bench.capacity_sweep --size 1920x1080 --counts 16 32 64 128 --device cuda
                                   [--hwaccel cuda] [--seconds 6] [--out X.json]

Where ``python -m bench`` searches for the largest sustained count (doubling, then bisecting
with three trials near the answer), this measures given counts once each, smallest first,
and stops after the first count that is not sustained (>= 1% dropped, p99 over --p99-ms, or
decoders that delivered under 90% of the sampled frames the run's length holds):
the few runs a lent GPU's minutes allow. Each count is one ``bench.live`` run in a fresh
process; the cameras are a testsrc2 video of --size played in real time by the runtime's own
decoder (so that --hwaccel cuda decodes on NVDEC, and software runs decode the same way).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.__main__ import CAPACITY_DROPS, GPU_MAX_BATCH, live_run
from bench.inputs import CACHE, bench_video
from stream.cli.arguments import Parser, frame_size
from stream.engines.settings import PipelineSettings
from stream.files import write_text_atomically
from stream.media.hwaccel import HWACCELS
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS
from stream.paths import DEFAULT_BUNDLE

log = logging.getLogger(__name__)
# A count is sustained only if its decoders kept up too: at least this share of the sampled
# frames the run's length holds reached the pipeline (the rest of the drops' 1% is start-up).
MIN_OFFERED = 0.9


def sweep(args: argparse.Namespace, video: Path, settings: PipelineSettings,
          deadline: float) -> dict[str, Any]:
    """Each count once, smallest first, until one is not sustained; the JSON is rewritten
    after every run, so that a sweep stopped from outside keeps the counts it finished."""
    runs: dict[str, Any] = {}
    for n in sorted(set(args.counts)):
        if args.out:
            write_text_atomically(args.out, json.dumps(_summary(args, settings, runs)) + "\n")
        if time.monotonic() + args.seconds + 20 > deadline:
            runs[str(n)] = {"skipped": "out of time"}
            break
        log.info("%s, %s decoding: %d camera(s), %.0f s", args.size_label, args.hwaccel, n,
                 args.seconds)
        try:
            result = live_run(args, video, n, args.seconds, settings)
        except (RuntimeError, OSError, ValueError) as error:  # a run that could not finish
            runs[str(n)] = {"failed": str(error)}
            break
        result.pop("latency_samples", None)
        result.pop("delivered_samples", None)
        result["sustained"] = (result["dropped_fraction"] < CAPACITY_DROPS
                               and result["latency_ms"]["p99"] < args.p99_ms
                               and result.get("offered_fraction", 1.0) >= MIN_OFFERED)
        runs[str(n)] = result
        if not result["sustained"]:
            break
    return _summary(args, settings, runs)


def _summary(args: argparse.Namespace, settings: PipelineSettings,
             runs: dict[str, Any]) -> dict[str, Any]:
    sustained = [int(n) for n, r in runs.items() if r.get("sustained")]
    return {"size": args.size_label, "decoding": args.hwaccel, "device": args.device,
            "precision": args.precision,
            "seconds": args.seconds, "max_batch": settings.max_batch,
            "criteria": {"dropped_fraction_below": CAPACITY_DROPS,
                         "p99_latency_ms_below": args.p99_ms,
                         "offered_fraction_at_least": MIN_OFFERED},
            "most_sustained": max(sustained, default=0), "runs": runs}


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench.capacity_sweep",
                    description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--size", type=frame_size, default=(640, 480), metavar="WxH")
    parser.add_argument("--counts", type=int, nargs="+", required=True, metavar="N")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--hwaccel", choices=HWACCELS, default="none")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--max-batch", type=int, default=GPU_MAX_BATCH)
    parser.add_argument("--p99-ms", type=float, default=500.0,
                        help="a count is sustained below this p99 latency (default: 500)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole sweep; counts that would not fit are "
                             "skipped")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the video is cached")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if min(args.counts) < 1:
        print("error: --counts must be positive", file=sys.stderr)
        return 2
    started = time.monotonic()
    deadline = started + (args.budget if args.budget is not None else 1e9)
    # live_run's view of the arguments: cameras played from files by the runtime's decoder
    args.size_label = f"{args.size[0]}x{args.size[1]}"
    args.engine = "local"
    args.cameras = "files"
    video = bench_video(args.size, int(args.seconds + 14), args.cache)
    settings = PipelineSettings(max_batch=args.max_batch)
    result = sweep(args, video, settings, deadline)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_text_atomically(args.out, text + "\n")
    return 1 if any("failed" in r for r in result["runs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
