"""The Ray engine against the local one, on this machine: the latency the Ray hop adds, and the
live cameras each engine sustains.

    python -m bench.engines [--quick] [--workers 2] [--out bench/results]

(1) The hop: one paced 30 fps camera captioned for ``--seconds`` by each engine (a fresh process
each, ``bench.live``); per caption, the time from its frame's decoding to the receipt of its event
by the consumer (the driver, for Ray: through the actor's queue, a poll and Ray's object
transfer), and from the event's making to its receipt (the handoff: for Ray, the hop itself;
locally, the events queue). What the hop adds is the difference of the two engines' handoff
percentiles; the actor-side latency (decode to caption event) is reported too.
(2) Capacity: the same search as ``python -m bench`` (the most 640x480 30 fps cameras with < 1%
dropped frames and p99 latency < 200 ms, the majority of three runs near the answer), with the
Ray engine's latency taken to the driver's receipt.

Writes NAME.json (every figure, with the machine) and prints a summary. Absolute figures belong
to the machine they were measured on; compare the engines within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import QUICK, RESULTS, Plan, capacity_search, live_run
from bench.inputs import CACHE, bench_video
from bench.machine import describe
from stream.cli.arguments import doc_parser
from stream.engines.settings import PipelineSettings
from stream.files import write_text_atomically
from stream.model.sessions import PRECISION_HELP, PRECISIONS
from stream.paths import DEFAULT_BUNDLE

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m bench.engines", __doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default: 2)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of each hop run (default: 30)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and a smaller capacity search (a few minutes)")
    parser.add_argument("--no-capacity", action="store_true", help="measure the hop only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="engines")
    parser.add_argument("--cache", type=Path, default=CACHE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s", stream=sys.stderr)
    plan = QUICK if args.quick else Plan()
    seconds = min(args.seconds, 10.0) if args.quick else args.seconds
    video = bench_video((640, 480), plan.video_seconds, args.cache)
    settings = PipelineSettings()
    results: dict[str, Any] = {"machine": describe(["CPUExecutionProvider"]),
                               "workers": args.workers, "seconds": seconds, "hop": {},
                               "capacity": {}}
    for engine in ("local", "ray"):
        log.info("hop: 1 camera on the %s engine, %.0f s", engine, seconds)
        run = _args(args, engine)
        result = live_run(run, video, 1, seconds, settings)
        for key in ("latency_samples", "delivered_samples"):
            result.pop(key)
        results["hop"][engine] = result
    local, ray = (results["hop"][e]["handoff_latency_ms"] for e in ("local", "ray"))
    results["hop"]["added_ms"] = {q: round(ray[q] - local[q], 1) for q in ("p50", "p99")}
    if not args.no_capacity:
        for engine in ("local", "ray"):
            log.info("capacity on the %s engine", engine)
            results["capacity"][engine] = capacity_search(_args(args, engine), video, plan,
                                                          settings)
    path = args.out / f"{args.name}.json"
    write_text_atomically(path, json.dumps(results, indent=1) + "\n")
    print(summary(results))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _args(args: argparse.Namespace, engine: str) -> argparse.Namespace:
    """The namespace ``bench``'s live runs read, for one engine."""
    return argparse.Namespace(bundle=args.bundle, device=args.device, hwaccel="none",
                              precision=args.precision,
                              engine=engine, workers=args.workers if engine == "ray" else None)


def summary(results: dict[str, Any]) -> str:
    cpu = results["machine"].get("cpu", "?")
    lines = [f"engines on {cpu} ({results['machine'].get('cores', '?')} cores), "
             f"{results['workers']} Ray workers"]
    for engine in ("local", "ray"):
        r = results["hop"][engine]
        d, e, h = (r[f"{k}_latency_ms"] for k in ("delivered", "emitted", "handoff"))
        lines.append(f"  {engine:5} 1 camera: decode->received p50 {d['p50']} ms, p99 {d['p99']}"
                     f" ms; decode->event p50 {e['p50']}, p99 {e['p99']}; event->received p50 "
                     f"{h['p50']}, p99 {h['p99']}; dropped {r['dropped']}")
    added = results["hop"]["added_ms"]
    lines.append(f"  the Ray hop adds p50 {added['p50']} ms, p99 {added['p99']} ms")
    for engine, capacity in results["capacity"].items():
        lines.append(f"  {engine:5} capacity: {capacity['streams']} cameras")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
