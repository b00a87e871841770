"""Benchmark the streaming runtime: stage limits, pipeline, naive baseline, latency, capacity.

    python -m bench [--quick] [--bundle models/shapes] [--device auto]     (make bench)

Everything is measured in one run, because this machine is shared and noisy: the ratios between
figures of one run are what count; absolute figures are recorded with the machine they came
from. Inputs are generated and cached under bench/cache/. Results go to bench/results/NAME.json
(everything, with the machine's description), NAME.md (tables) and NAME.png (chart).

Steps: (1) decode limits, (2) encoder limits per batch size and the whole captioning core,
(3) the real pipeline on files (every frame, and at the bundle's sample_fps), against
min(decode, encoder) and against the CPU bound (the cores divided by the CPU time per frame
of all stages together), (4) the naive PyTorch loop a user would write, (5) latency of paced live
30 fps cameras, (6) stream capacity (the most 640x480 30 fps live cameras with < 1% dropped frames
and p99 latency < 200 ms; near the answer every count runs three times and the majority
decides), (7) the archive realtime factor, (8) peak memory. Live runs each run in a fresh
process, so that their peak memory is their own.

Key frames: by default the CNN runs only on key frames, and the run measures the same sampled
pipeline (on the camera-like testsrc2 file and on a still scene), the core, one live stream's
latency and the capacity again with --encode-every-frame, for the ratios between the two.
With --encode-every-frame the whole run encodes every frame and compares nothing.

--quick finishes in a few minutes (a 10 s 640x480 input, fewer and shorter runs) for use while
developing; the full run takes about 25 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.baseline import naive_rate
from bench.inputs import CACHE, FPS, bench_video, still_video
from bench.machine import describe
from bench.report import EVERY, write_report
from bench.stages import DECODER_SETTINGS, core_limit, decode_limits, encoder_limits
from stream.api import caption_stream
from stream.cli.arguments import doc_parser, frame_size
from stream.engines.settings import PipelineSettings
from stream.errors import StreamError
from stream.events import CaptionEvent
from stream.media.frames import read_sampled_frames
from stream.media.hwaccel import HWACCELS, resolve
from stream.media.sources import SourceOptions
from stream.model.bundle import LoadedBundle, open_bundle
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS, SessionSettings
from stream.paths import DEFAULT_BUNDLE, ROOT

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINT = ROOT / "runs" / "shapes" / "best.pt"
CAPACITY_DROPS = 0.01  # a sustained stream drops fewer than 1% of its sampled frames
CAPACITY_P99_MS = 200.0


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or --quick."""

    sizes: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080))
    video_seconds: int = 60
    batches: tuple[int, ...] = (1, 4, 8, 16)
    repeats: int = 3
    encoder_calls: int = 20
    baseline_frames: int = 300
    live_seconds: float = 20.0
    live_streams: tuple[int, ...] = (1, 4)
    capacity_seconds: float = 15.0
    max_streams: int = 24
    first_streams: int = 1  # the capacity search's first count (then doubling)
    boundary_trials: int = 3  # capacity runs per stream count near the answer
    capacity_sizes: tuple[tuple[int, int], ...] = ((640, 480),)  # cameras of the capacity search


QUICK = Plan(sizes=((640, 480),), video_seconds=10, batches=(1, 8), repeats=1, encoder_calls=8,
             baseline_frames=60, live_seconds=6.0, live_streams=(1, 4), capacity_seconds=6.0,
             max_streams=8)
GPU_BATCHES = (32, 64, 128, 256)  # encoder batches a GPU adds to the plan's
GPU_MAX_BATCH = 32  # the pipeline's --max-batch on a GPU unless given (not yet tuned on one)


def for_gpu(plan: Plan) -> Plan:
    """The plan on a GPU: larger encoder batches, a capacity search up to hundreds of cameras,
    and (in the full run) 1080p cameras too."""
    quick = plan.max_streams < Plan.max_streams
    return replace(plan, batches=tuple(sorted({*plan.batches, *GPU_BATCHES})),
                   max_streams=64 if quick else 512,
                   capacity_sizes=plan.capacity_sizes if quick
                   else ((640, 480), (1920, 1080)))


def get_args_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m bench", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a short run (under 2 minutes) for development")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="model bundle (default: the shipped models/shapes)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the model runs (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT,
                        help="the bundle's PyTorch checkpoint, for the naive baseline; without "
                             "it the baseline runs the same architecture with untrained heads "
                             "(default: runs/shapes/best.pt)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results directory (default: bench/results)")
    parser.add_argument("--name", default=None,
                        help="results file name without suffix (default: quick or full)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help=f"the pipeline's --max-batch (default: {PipelineSettings.max_batch}"
                             f", {GPU_MAX_BATCH} on a GPU)")
    parser.add_argument("--hwaccel", choices=HWACCELS, default="none",
                        help="decode on a hardware decoder (cuda: NVDEC): the decode limits, "
                             "the file runs, and live cameras played from files by the "
                             "runtime's decoder instead of lavfi cameras (default: none)")
    parser.add_argument("--max-wait-ms", type=float, default=PipelineSettings.max_wait_ms,
                        help="the pipeline's --max-wait-ms (default: %(default)s)")
    parser.add_argument("--encode-every-frame", action="store_true",
                        help="run the CNN on every sampled frame throughout, and compare "
                             "nothing (default: key frames, compared with every frame)")
    small = parser.add_argument_group("overrides of the plan (for tests and experiments)")
    small.add_argument("--video-seconds", type=int, help="length of the generated inputs")
    small.add_argument("--live-seconds", type=float, help="length of each latency run")
    small.add_argument("--capacity-seconds", type=float, help="length of each capacity run")
    small.add_argument("--max-streams", type=int, help="capacity search stops here")
    small.add_argument("--baseline-frames", type=int, help="frames the naive baseline runs")
    small.add_argument("--capacity-sizes", type=frame_size, nargs="+", metavar="WxH",
                       help="camera sizes of the capacity search, the first one's also in the "
                            "targets (default: 640x480; 640x480 1920x1080 on a GPU)")
    small.add_argument("--no-baseline", dest="baseline", action="store_false",
                       help="skip the naive PyTorch baseline (where torch or the backbone's "
                            "weights are not installed)")
    small.add_argument("--cache", type=Path, default=CACHE, help="where inputs are cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("stream").setLevel(logging.WARNING)  # no per-stream opened/ended lines
    plan = QUICK if args.quick else Plan()
    overrides = {k: getattr(args, k) for k in ("video_seconds", "live_seconds",
                                               "capacity_seconds", "max_streams",
                                               "baseline_frames", "capacity_sizes")
                 if getattr(args, k) is not None}
    name = args.name or ("quick" if args.quick else "full")
    started = time.monotonic()
    try:
        loaded = open_bundle(args.bundle, SessionSettings(device=args.device,
                                                          precision=args.precision))
    except StreamError as error:  # a bad bundle, or --device cuda without a usable GPU
        print(f"error: {error}", file=sys.stderr)
        return 3
    if args.hwaccel != "none" and resolve(args.hwaccel) is None:
        print(f"error: hwaccel {args.hwaccel}: no hardware decoder works here (see the line "
              f"above)", file=sys.stderr)
        return 3
    on_gpu = loaded.providers[0] != "CPUExecutionProvider"
    plan = replace(for_gpu(plan) if on_gpu else plan, **overrides)
    if args.max_batch is None:
        args.max_batch = GPU_MAX_BATCH if on_gpu else PipelineSettings.max_batch
    settings = PipelineSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                encode_every_frame=args.encode_every_frame,
                                source_options=SourceOptions(hwaccel=args.hwaccel))
    results = run(plan, loaded, args, settings)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    paths = write_report(results, args.out, name)
    log.info("done in %.0f s: %s", results["wall_seconds"], ", ".join(str(p) for p in paths))
    return 0


def run(plan: Plan, loaded: LoadedBundle, args: argparse.Namespace,
        settings: PipelineSettings) -> dict[str, Any]:
    bundle = loaded.bundle
    size = (bundle.input_size, bundle.input_size)
    per_caption = FPS / bundle.sample_fps  # source frames per sampled frame
    compare = not settings.encode_every_frame
    every = replace(settings, encode_every_frame=True)
    results: dict[str, Any] = {
        "machine": describe(loaded.providers), "plan": asdict(plan), "bundle": str(args.bundle),
        "encoder_precision": loaded.precision,
        "sample_fps": bundle.sample_fps, "source_fps": FPS,
        "encoding": "every frame" if settings.encode_every_frame else "key frames",
        "keyframes": bundle.keyframes.to_json(),
        "pipeline_settings": {"max_batch": settings.max_batch,
                              "max_wait_ms": settings.max_wait_ms,
                              "queue_size": settings.queue_size,
                              "encode_every_frame": settings.encode_every_frame},
        "decoder_settings": DECODER_SETTINGS,
        "decoding": "on the CPU" if args.hwaccel == "none" else f"hwaccel {args.hwaccel}",
        "cameras": "lavfi (FFmpeg's movie filter decodes)" if args.hwaccel == "none"
        else "files played in real time by the runtime's decoder"}
    videos = {f"{w}x{h}": bench_video((w, h), plan.video_seconds, args.cache)
              for w, h in plan.sizes}
    first = next(iter(videos))

    log.info("encoder limits, batches %s", list(plan.batches))
    encoder = encoder_limits(loaded, list(plan.batches), plan.repeats, plan.encoder_calls)
    results["encoder"] = {str(b): r.to_json() for b, r in encoder.items()}
    frames, times = read_sampled_frames(videos[first], bundle.sample_fps, size)
    results["core"] = {"batch": settings.max_batch, "frames": f"{first} testsrc2, sampled"}
    for suffix, encode_all in (("", settings.encode_every_frame),) + ((EVERY, True),) * compare:
        log.info("whole core%s", suffix.replace("_", " "))
        for key, streams in (("one_stream", 1), ("many_streams", settings.max_batch)):
            rate = core_limit(loaded, frames, times, settings.max_batch, streams, plan.repeats,
                              encode_all)
            results["core"][key + suffix] = rate.to_json()
    del frames
    core_cpu_ms = results["core"]["one_stream"]["cpu_ms"]
    encoder_at_batch = encoder.get(settings.max_batch) or max(encoder.values(),
                                                              key=lambda r: r.per_second)
    results["files"] = {}
    for label, video in videos.items():
        log.info("%s: decode limits", label)
        decode = decode_limits(video, size, bundle.sample_fps, plan.repeats, args.hwaccel)
        entry: dict[str, Any] = {"decode": {k: r.to_json() for k, r in decode.items()}}
        for mode, every_frame in (("every_frame", True), ("sampled", False)):
            log.info("%s: pipeline, %s", label, mode.replace("_", " "))
            measured = file_run(loaded, video, plan.video_seconds, replace(settings,
                                                                           caption_every_decoded_frame=every_frame))
            share = 1.0 if every_frame else 1.0 / per_caption  # captions per source frame
            stage = decode["decode_convert_all" if every_frame else "decode_convert_sampled"]
            encoded = share * measured["encoder_calls_per_frame"]  # encodes per source frame
            limit = min(stage.per_second, encoder_at_batch.per_second / max(encoded, 1e-9))
            cpu_per_frame = stage.cpu_ms + share * core_cpu_ms
            cpu_bound = 1000 * results["machine"]["cores"] / cpu_per_frame
            measured |= {"limit_fps": round(limit, 1),
                         "ratio_to_limit": round(measured["source_fps"] / limit, 3),
                         "cpu_bound_fps": round(cpu_bound, 1),
                         "ratio_to_cpu_bound": round(measured["source_fps"] / cpu_bound, 3),
                         "ratio_to_decode": round(measured["source_fps"]
                                                  / decode["decode"].per_second, 3),
                         "cpu_ms_per_frame": {"decode_convert": round(stage.cpu_ms, 3),
                                              "core": round(share * core_cpu_ms, 3)}}
            entry[mode] = measured
        if compare and label == first:
            log.info("%s: pipeline, sampled, every frame encoded", label)
            entry["sampled" + EVERY] = _sampled_run(loaded, video, plan, every, decode)
        results["files"][label] = entry

    still = still_video(plan.sizes[0], plan.video_seconds, args.cache)
    log.info("still scene: decode limits, pipeline")
    decode = decode_limits(still, size, bundle.sample_fps, plan.repeats, args.hwaccel)
    results["still"] = {"decode": {k: r.to_json() for k, r in decode.items()},
                        "sampled": _sampled_run(loaded, still, plan, settings, decode)}
    if compare:
        results["still"]["sampled" + EVERY] = _sampled_run(loaded, still, plan, every, decode)

    steps = round(results["files"][first]["sampled"]["mean_words"]) + 1
    results["baseline"] = {}
    modes = (("every_frame", None), ("sampled", bundle.sample_fps)) if args.baseline else ()
    for mode, fps in modes:
        log.info("naive baseline, %s", mode.replace("_", " "))
        base = naive_rate(bundle, videos[first], fps, plan.baseline_frames, args.checkpoint,
                          caption_steps=steps)
        base["pipeline_ratio"] = round(
            results["files"][first][mode]["source_fps"] / base["source_fps"], 2)
        results["baseline"][mode] = base

    results["live"] = {}
    for streams in plan.live_streams:
        log.info("live latency, %d stream(s), %.0f s", streams, plan.live_seconds)
        results["live"][str(streams)] = live_run(args, videos[first], streams, plan.live_seconds,
                                                 settings)
    if compare:
        log.info("live latency, 1 stream, every frame encoded, %.0f s", plan.live_seconds)
        results["live" + EVERY] = {"1": live_run(args, videos[first], 1, plan.live_seconds,
                                                 every)}
    results["capacity"] = capacity_search(args, videos[first], plan, settings)
    if compare:
        log.info("capacity, every frame encoded")
        results["capacity" + EVERY] = capacity_search(args, videos[first], plan, every)
    results["capacity_by_size"] = {}
    for w, h in plan.capacity_sizes:
        if f"{w}x{h}" == first:
            continue  # measured above
        log.info("capacity, %dx%d cameras", w, h)
        video = videos.get(f"{w}x{h}") or bench_video((w, h), plan.video_seconds, args.cache)
        results["capacity_by_size"][f"{w}x{h}"] = capacity_search(args, video, plan, settings)
    results["targets"] = targets(results, first)
    return results


def _sampled_run(loaded: LoadedBundle, video: Path, plan: Plan, settings: PipelineSettings,
                 decode: dict[str, Any]) -> dict[str, Any]:
    """The sampled pipeline over a file, with its speed against decoding alone."""
    measured = file_run(loaded, video, plan.video_seconds, settings)
    measured["ratio_to_decode"] = round(measured["source_fps"] / decode["decode"].per_second, 3)
    return measured


def file_run(loaded: LoadedBundle, video: Path, seconds: float,
             settings: PipelineSettings) -> dict[str, Any]:
    """The real pipeline over a file: source frames/s, captions/s, realtime factor, CPU use."""
    cpu, start = time.process_time(), time.perf_counter()
    captions = words = encoded = 0
    for event in caption_stream(str(video), loaded, settings=settings):
        if isinstance(event, CaptionEvent):
            captions += 1
            encoded += event.encoded
            words += len(event.caption.split())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"source_fps": round(seconds * FPS / wall, 1),
            "captions_per_s": round(captions / wall, 1), "captions": captions,
            "encoder_calls_per_frame": round(encoded / max(1, captions), 4),
            "realtime_factor": round(seconds / wall, 2), "cpu_percent": round(100 * cpu / wall),
            "cpu_ms_per_source_frame": round(1000 * cpu / (seconds * FPS), 3),
            "mean_words": words / max(1, captions)}


def live_run(args: argparse.Namespace, video: Path, streams: int, seconds: float,
             settings: PipelineSettings, tree: Path | None = None) -> dict[str, Any]:
    """One ``bench.live`` measurement in a fresh process: this checkout's, or with ``tree``
    that tree's own (run there, its code first on the path; ``args.bundle`` should be its)."""
    command = [sys.executable, "-m", "bench.live", "--bundle", str(args.bundle), "--video",
               str(video), "--streams", str(streams), "--seconds", str(seconds), "--device",
               args.device, "--max-batch", str(settings.max_batch), "--max-wait-ms",
               str(settings.max_wait_ms)] + ["--encode-every-frame"] * settings.encode_every_frame
    if getattr(args, "precision", None) is not None:  # None: the tree's own default
        command += ["--precision", args.precision]
    if args.hwaccel != "none":  # NVDEC decodes in the runtime's decoder, not inside lavfi
        command += ["--cameras", "files", "--hwaccel", args.hwaccel]
    elif getattr(args, "cameras", "lavfi") == "files":  # software decoding, the same way
        command += ["--cameras", "files"]
    if getattr(args, "engine", "local") == "ray":
        command += ["--engine", "ray"] + (["--workers", str(args.workers)] if args.workers else [])
    env = None if tree is None else dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree or ROOT, env=env,
                          timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"bench.live failed: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def capacity_search(args: argparse.Namespace, video: Path, plan: Plan,
                    settings: PipelineSettings, tree: Path | None = None) -> dict[str, Any]:
    """The most live 30 fps streams sustained (:func:`capacity_steps`), each count run by
    :func:`live_run` (in ``tree`` when given)."""
    def measure(streams: int) -> dict[str, Any]:
        log.info("capacity: %d stream(s), %.0f s", streams, plan.capacity_seconds)
        return live_run(args, video, streams, plan.capacity_seconds, settings, tree=tree)

    return drive(capacity_steps(plan), measure)


Search = Generator[int, dict[str, Any], dict[str, Any]]


def drive(search: Search, measure: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run a search to its answer, measuring every count it asks for."""
    try:
        streams = next(search)
        while True:
            streams = search.send(measure(streams))
    except StopIteration as answer:
        result: dict[str, Any] = answer.value
        return result


def capacity_steps(plan: Plan) -> Search:
    """The capacity search: yields the camera count of the next live run, is sent that run's
    figures (:func:`live_run`'s), and returns the answer. A generator, so that two searches
    (two trees, in bench.speed) can take turns run by run.

    A coarse search with one run per count (doubling from ``plan.first_streams``: 1, 2, 4, ...,
    so that hundreds of GPU streams are reached in a few steps) brackets the answer; near
    it (the first count that failed, the bisection, and the answer itself, walking down while
    it fails) every count runs ``plan.boundary_trials`` times and the majority decides, so
    that one disturbed run cannot move the answer. Each count's record is its median run (by
    p99), with every trial's figures.
    """
    runs: dict[int, dict[str, Any]] = {}

    def sustained(n: int, trials: int = 1) -> Generator[int, dict[str, Any], bool]:
        done = runs.get(n, {}).get("trials", [])
        for _ in range(trials - len(done)):
            result = dict((yield n))
            result.pop("latency_samples", None)
            result.pop("delivered_samples", None)
            result["sustained"] = (result["dropped_fraction"] < CAPACITY_DROPS
                                   and result["latency_ms"]["p99"] < CAPACITY_P99_MS)
            done = [*done, result]
        by_p99 = sorted(done, key=lambda r: _p99_key(r["latency_ms"]["p99"]))
        record = {k: v for k, v in by_p99[(len(by_p99) - 1) // 2].items()}
        ok = sum(r["sustained"] for r in done)
        record |= {"trials": done, "sustained_trials": ok, "sustained": 2 * ok > len(done),
                   "p99_spread_ms": [by_p99[0]["latency_ms"]["p99"],
                                     by_p99[-1]["latency_ms"]["p99"]]}
        runs[n] = record
        return bool(record["sustained"])

    best, n = 0, max(1, plan.first_streams)
    while n <= plan.max_streams and (yield from sustained(n)):
        best = n
        n *= 2
    trials = plan.boundary_trials
    low, high = best, min(n, plan.max_streams + 1)
    if high <= plan.max_streams and (yield from sustained(high, trials)):  # a disturbed run
        low, high = high, plan.max_streams + 1
    while high - low > 1:
        middle = (low + high) // 2
        if (yield from sustained(middle, trials)):
            low = middle
        else:
            high = middle
    while low > 0 and not (yield from sustained(low, trials)):  # the majority holds it too
        low -= 1
    return {"streams": low, "limit_reached": low >= plan.max_streams,
            "criteria": {"dropped_fraction_below": CAPACITY_DROPS,
                         "p99_latency_ms_below": CAPACITY_P99_MS,
                         "boundary_trials": trials},
            "runs": {str(k): v for k, v in sorted(runs.items())}}


def _p99_key(p99: float) -> float:
    return float("inf") if p99 != p99 else p99  # NaN (no caption after warm-up) sorts last


def targets(results: dict[str, Any], first: str) -> list[dict[str, Any]]:
    """The issues' targets on this machine, each with what was measured."""
    files = results["files"][first]
    one = results["live"].get("1")
    rows: list[tuple[str, Any, str, float]] = [
        ("file mode, every frame: pipeline / min(decode, encoder)",
         files["every_frame"]["ratio_to_limit"], ">=", 0.9),
        ("file mode, sampled: pipeline / min(decode, encoder)",
         files["sampled"]["ratio_to_limit"], ">=", 0.9),
        ("pipeline / naive baseline, every frame",
         results["baseline"].get("every_frame", {}).get("pipeline_ratio"), ">=", 5.0),
        ("pipeline / naive baseline, sampled",
         results["baseline"].get("sampled", {}).get("pipeline_ratio"), ">=", 5.0),
        ("one live 30 fps stream: p99 latency (ms)", one["latency_ms"]["p99"] if one else None,
         "<=", 50.0),
        ("one live 30 fps stream: dropped frames", one["dropped"] if one else None, "<=", 0),
        ("stream capacity (640x480 30 fps cameras)", results["capacity"]["streams"], ">=", 8),
        (f"archive realtime factor, {first}", files["sampled"]["realtime_factor"], ">=", 25.0),
        (f"sampled pipeline / decode only, {first} testsrc2", files["sampled"]["ratio_to_decode"],
         ">=", 0.5),
    ]
    if "capacity" + EVERY in results:
        every_one = results["live" + EVERY]["1"]
        rows += [
            (f"key frames / every frame encoded: sampled pipeline, {first} testsrc2",
             _ratio(files["sampled"]["source_fps"], files["sampled" + EVERY]["source_fps"]),
             ">=", 2.0),
            ("key frames / every frame encoded: sampled pipeline, still scene",
             _ratio(results["still"]["sampled"]["source_fps"],
                    results["still"]["sampled" + EVERY]["source_fps"]), ">=", 4.0),
            ("key frames / every frame encoded: live capacity",
             _ratio(results["capacity"]["streams"], results["capacity" + EVERY]["streams"]),
             ">=", 2.0),
            ("key frames / every frame encoded: one live stream's p99 latency",
             _ratio(one["latency_ms"]["p99"], every_one["latency_ms"]["p99"]) if one else None,
             "<=", 1.0),
        ]
    out = []
    for what, value, op, goal in rows:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out.append({"target": what, "measured": value, "goal": f"{op} {goal}", "met": met})
    return out


def _ratio(a: float, b: float) -> float | None:
    ratio = a / b if b else math.nan
    return round(ratio, 2) if math.isfinite(ratio) else None  # NaN: no figure, not a number


if __name__ == "__main__":
    # The chart comes last: without the bench extra, stop now (bench/__init__.py says which),
    # not after the measurements.
    import matplotlib  # noqa: F401

    sys.exit(main())
