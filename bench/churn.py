"""Cameras added and removed every few seconds while two others caption: does the process stay
bounded? Resident memory, threads and open files, sampled as the churn goes on.

    python -m bench.churn [--minutes 10] [--every 2] [--engine local|ray] [--out runs/churn.json]

Two live test-pattern cameras run throughout; every ``--every`` seconds a third one is added
under a new id, and the one added before it removed (each camera lives for two periods). The
events go through the settling and a JSON Lines sink per camera, as in run_stream.py. Printed:
the figures at the start of the churn (after a warm-up), at the end, and their growth.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from stream.cli.arguments import doc_parser
from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import PipelineSettings
from stream.media.sources import SourceOptions, parse_source
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from stream.settle import Settling
from stream.sinks.base import PerStream
from stream.sinks.jsonl import JsonlSink

CAMERA = "lavfi:testsrc2=size=160x120:rate=10,realtime"


def usage() -> dict[str, float]:
    """This process's resident memory (MiB), threads and open files (Linux /proc)."""
    status = Path("/proc/self/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"rss_mib": round(rss / 1024, 1), "threads": len(os.listdir("/proc/self/task")),
            "open_files": len(os.listdir("/proc/self/fd"))}


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("python -m bench.churn", __doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between changes")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    options = SourceOptions()
    settings = PipelineSettings(source_options=options, queue_size=32)
    sources = {name: parse_source(CAMERA, options) for name in ("steady-1", "steady-2")}
    engine: Pipeline | RayPipeline
    if args.engine == "local":
        loaded = open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu"))
        engine = Pipeline(dict(sources), loaded, settings, keep_open=True)
    else:
        engine = RayPipeline(dict(sources), DEFAULT_BUNDLE, "cpu", settings,
                             RaySettings(workers=2, max_restarts=0), keep_open=True)
    folder = Path(tempfile.mkdtemp(prefix="lrcn-churn-"))
    outputs = PerStream({}, lambda stream: [JsonlSink(folder / f"{stream}.jsonl")])
    settling = Settling(3, 0.1)
    counts = {"events": 0, "added": 0, "removed": 0}
    done = threading.Event()

    def consume() -> None:
        for event in engine:
            for settled in settling.push(event):
                outputs.write(settled)
                if getattr(settled, "kind", None) == "ended":
                    outputs.close_stream(settled.stream)
            counts["events"] += 1
            if done.is_set():
                break

    consumer = threading.Thread(target=consume, name="consumer", daemon=True)
    consumer.start()
    time.sleep(args.warmup)
    start, samples = usage(), []
    began = time.monotonic()
    previous = None
    n = 0
    while time.monotonic() - began < args.minutes * 60:
        n += 1
        name = f"churn-{n}"
        engine.add(name, parse_source(CAMERA, options))
        counts["added"] += 1
        if previous is not None:
            engine.remove(previous)
            counts["removed"] += 1
        previous = name
        time.sleep(args.every)
        if n % 10 == 0:
            samples.append({"t": round(time.monotonic() - began), **usage()})
    end = usage()
    done.set()
    engine.close()
    growth = {k: round(end[k] - start[k], 1) for k in start}
    result = {"engine": args.engine, "minutes": args.minutes, "every_s": args.every, **counts,
              "start": start, "end": end, "growth": growth, "samples": samples}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
