"""Soak test: stream paced live sources for a long time and check that nothing grows or drifts.

    python -m bench.soak --seconds 600 --streams 2        (make soak: 10 minutes)

Every ``--every`` seconds it records the process's RSS, open file descriptors, threads, the
mailbox's queue depths, the events queue and the latency of the captions of that interval.
It passes when, after the warm-up, RSS and descriptors grow by less than 5% (last sample
against the first one after warm-up) and latency does not drift (the p50 of the last third of
the run within 1.5x of the first third's, plus 5 ms). Writes the samples and the verdict as
JSON; exit code 0 when it passes, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.inputs import bench_video, paced_source
from bench.machine import proc_status
from stream.cli.arguments import Parser
from stream.engines.local import Pipeline
from stream.engines.settings import PipelineSettings
from stream.events import CaptionEvent
from stream.files import write_text_atomically
from stream.media.sources import parse_sources
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE

GROWTH_LIMIT = 0.05


def sample_process() -> dict[str, Any]:
    """RSS (MB), open descriptors and threads of this process (Linux /proc)."""
    return {"rss_mb": round((proc_status("VmRSS") or 0) / 1024, 1),
            "fds": len(os.listdir("/proc/self/fd")),
            "threads": proc_status("Threads") or threading.active_count()}


def soak(bundle: Path, seconds: float, streams: int, every: float, warmup: float,
         source: str | None = None) -> dict[str, Any]:
    loaded = open_bundle(bundle, SessionSettings())
    spec = source or paced_source(bench_video((640, 480), 60))
    pipeline = Pipeline(parse_sources([spec] * streams), loaded, PipelineSettings())
    samples: list[dict[str, Any]] = []
    latencies: list[float] = []
    start = next_sample = time.monotonic()
    events = iter(pipeline)
    for event in events:
        now = time.monotonic()
        if isinstance(event, CaptionEvent):
            latencies.append(event.latency_ms)
        if now >= next_sample:
            lat = np.array(latencies or [0.0])  # no caption yet: 0, and "captions" says so
            samples.append({"t": round(now - start, 1), **sample_process(),
                            "queued_frames": sum(pipeline.mailbox.depths().values()),
                            "queued_events": pipeline.events.qsize(), "captions": len(latencies),
                            "p50_ms": round(float(np.percentile(lat, 50)), 1),
                            "p99_ms": round(float(np.percentile(lat, 99)), 1)})
            latencies = []
            next_sample += every
        if now - start >= seconds:
            break
    dropped = sum(pipeline.mailbox.dropped(d.stream) for d in pipeline.decoders.values())
    events.close()
    return {"seconds": seconds, "streams": streams, "every": every, "warmup": warmup,
            "dropped": dropped, "samples": samples, "verdict": verdict(samples, warmup)}


def verdict(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Growth of RSS and descriptors after warm-up, and latency drift; ``passed``."""
    steady = [s for s in samples if s["t"] >= warmup and s["captions"]]
    if len(steady) < 3:
        return {"passed": False, "reason": "too few samples after warm-up"}
    first, last = steady[0], steady[-1]
    third = max(1, len(steady) // 3)
    early = float(np.median([s["p50_ms"] for s in steady[:third]]))
    late = float(np.median([s["p50_ms"] for s in steady[-third:]]))
    growth = {key: round((last[key] - first[key]) / max(1, first[key]), 4)
              for key in ("rss_mb", "fds")}
    passed = (all(g < GROWTH_LIMIT for g in growth.values())
              and late <= 1.5 * early + 5 and last["threads"] <= first["threads"])
    return {"passed": passed, "growth": growth, "latency_p50_early_ms": early,
            "latency_p50_late_ms": late, "threads": [first["threads"], last["threads"]]}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.soak",
                    description=__doc__.split("\n\n")[0],
                    epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--seconds", type=float, default=600.0, help="run time (default 600)")
    parser.add_argument("--streams", type=int, default=2, help="paced 30 fps cameras (2)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds before growth is measured (default 30)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--source", default=None,
                        help="source string (default: a paced 640x480 H.264 camera)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)
    result = soak(args.bundle, args.seconds, args.streams, args.every, args.warmup,
                  args.source)
    write_text_atomically(args.out, json.dumps(result, indent=1) + "\n")
    v = result["verdict"]
    print(json.dumps(v), file=sys.stderr)
    return 0 if v["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
