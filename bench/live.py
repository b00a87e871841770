"""One live-streaming measurement, run in a fresh process so that its peak memory is its own.

    python -m bench.live --bundle models/shapes --video V.mp4 --streams 4 --seconds 15

N copies of a paced 30 fps camera are captioned at the bundle's sample_fps for the given time:
lavfi cameras (``bench.inputs.paced_source``: FFmpeg's movie filter decodes, on the CPU), or
with ``--cameras files`` the video file played in real time by the runtime's own decoder
(``--realtime``), which can decode on a hardware decoder (``--hwaccel cuda``: NVDEC).

With ``--engine ray`` the cameras run on Ray actors of a local Ray (``--workers``), and the
latency is measured from decode to this process's receipt of the event, so that the Ray hop
is in it; ``delivered_latency_ms`` is that measure for either engine, and
``handoff_latency_ms`` the time from an event's making to its receipt (for Ray: the hop).

Prints one JSON object: frames captioned, frames dropped, the latency from decode to caption
event (percentiles over the frames after a warm-up, counted from the first caption), peak RSS
and CPU use.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from bench.inputs import paced_source
from bench.machine import proc_status
from stream.cli.arguments import Parser
from stream.engines.local import Pipeline
from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import PipelineSettings
from stream.errors import MediaError
from stream.events import CaptionEvent
from stream.media.hwaccel import HWACCELS
from stream.media.sources import Source, SourceOptions, parse_source, parse_sources
from stream.model.bundle import open_bundle, read_bundle
from stream.model.sessions import PRECISION_HELP, PRECISIONS, SessionSettings

WARM_UP = 2.0  # seconds of events left out of the latency figures (start-up, first batches)


def cameras(video: Path, streams: int, seconds: float, kind: str,
            options: SourceOptions) -> dict[str, Source | MediaError]:
    """``streams`` paced copies of ``video``, each starting at another point of it: independent
    cameras, whose key frames (scene changes) do not all fall on the same moment. Played files
    end with the video, so their starts leave ``seconds`` (and a margin) to play."""
    with av.open(str(video)) as container:
        length = float(container.duration or 0) / av.time_base
    if kind == "lavfi":
        starts = [round(k * length / streams, 3) for k in range(streams)]
        return parse_sources([paced_source(video, s) for s in starts], options)
    span = max(0.0, length - seconds - WARM_UP - 1.0)
    played = replace(options, realtime=True)
    source = parse_source(str(video), played)
    return {f"cam{k}": replace(source, start=round(k * span / streams, 3))
            for k in range(streams)}


def measure(bundle: Path, video: Path, streams: int, seconds: float, device: str,
            settings: PipelineSettings, kind: str = "lavfi", engine: str = "local",
            workers: int | None = None, precision: str = "auto") -> dict[str, object]:
    """Caption ``streams`` cameras for ``seconds`` from the first caption on; the figures."""
    sources = cameras(video, streams, seconds, kind, settings.source_options)
    pipeline: Pipeline | RayPipeline
    if engine == "ray":
        pipeline = RayPipeline(sources, bundle, device, settings, RaySettings(workers=workers),
                               precision=precision)
    else:
        pipeline = Pipeline(sources, open_bundle(bundle, SessionSettings(device=device,
                                                                         precision=precision)),
                            settings)
    latencies: list[float] = []  # decode to caption event, where the event was made
    delivered: list[float] = []  # decode to this process's receipt (the Ray hop included)
    handoff: list[float] = []  # the event's making to its receipt here: the hop itself
    dropped: dict[str, int] = {}
    captioned = encoded = 0
    cpu0, start = time.process_time(), None
    events = iter(pipeline)
    for event in events:
        received = time.time()
        start = start or time.monotonic()
        now = time.monotonic() - start
        if isinstance(event, CaptionEvent):
            captioned += 1
            encoded += event.encoded
            if now >= WARM_UP:
                latencies.append(event.latency_ms)
                delivered.append((received - event.decoded_at) * 1000)
                handoff.append((received - event.emitted_at) * 1000)
        else:
            dropped[event.stream] = max(dropped.get(event.stream, 0), event.dropped)
        if now >= seconds:
            break
    if isinstance(pipeline, Pipeline):  # the counts not yet reported in a status
        dropped = {d.stream: pipeline.mailbox.dropped(d.stream) for d in pipeline.decoders.values()}
    elapsed = time.monotonic() - (start or time.monotonic())
    cpu = time.process_time() - cpu0
    events.close()
    return {
        "engine": engine, "streams": streams, "seconds": round(elapsed, 2),
        "captioned": captioned,
        "encoder_calls_per_frame": round(encoded / max(1, captioned), 4),
        "dropped": sum(dropped.values()),
        "dropped_fraction": sum(dropped.values()) / max(1, captioned + sum(dropped.values())),
        # sampled frames the sources delivered (captioned or dropped) against what the run's
        # length holds: a decoder that falls behind its camera shows here, not in the drops
        "offered_fraction": round((captioned + sum(dropped.values()))
                                  / max(1e-9, streams * elapsed * read_bundle(bundle).sample_fps),
                                  3),
        "latency_ms": percentiles(delivered if engine == "ray" else latencies),
        "emitted_latency_ms": percentiles(latencies),
        "delivered_latency_ms": percentiles(delivered),
        "handoff_latency_ms": percentiles(handoff),
        "latency_samples": [round(v, 1) for v in latencies],
        "delivered_samples": [round(v, 1) for v in delivered],
        "cpu_percent": round(100 * cpu / max(elapsed, 1e-9), 1),  # this process: the driver
        "peak_rss_mb": peak_rss_mb(),
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max (NaN when there are none)."""
    values = np.array(samples) if samples else np.array([np.nan])
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)} | {
        "max": round(float(values.max()), 1)}


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ru_maxrss survives exec (a child started
    from a big parent reports the parent's peak), so VmHWM from /proc is read where it exists."""
    peak = proc_status("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--encode-every-frame", action="store_true",
                        help="the CNN on every sampled frame, not only on key frames")
    parser.add_argument("--cameras", choices=("lavfi", "files"), default="lavfi",
                        help="lavfi cameras (decoded by FFmpeg's movie filter) or the file "
                             "played in real time by the runtime's decoder (default: lavfi)")
    parser.add_argument("--hwaccel", choices=HWACCELS, default="none",
                        help="decoding of played files (--cameras files)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="this process, or Ray actors on a local Ray (their latency is "
                             "then measured to this process's receipt: the hop included)")
    parser.add_argument("--workers", type=int, default=None, help="Ray actors")
    args = parser.parse_args(argv)
    if args.hwaccel != "none" and args.cameras == "lavfi":
        parser.error("--hwaccel needs --cameras files (lavfi cameras decode inside FFmpeg)")
    settings = PipelineSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                encode_every_frame=args.encode_every_frame,
                                source_options=SourceOptions(hwaccel=args.hwaccel))
    result = measure(args.bundle, args.video, args.streams, args.seconds, args.device, settings,
                     args.cameras, args.engine, args.workers, args.precision)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
