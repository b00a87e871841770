"""run_archive.py: caption a video archive; resumable, on worker processes or a Ray cluster.

    run_archive.py VIDEOS_DIR --out captions/                 every video under VIDEOS_DIR
    run_archive.py "clips/**/*.mkv" @more.txt --out captions/ a glob and a list of paths
    run_archive.py archive/ --out captions/ --engine ray      the same work on Ray
    run_archive.py                                            the bundled sample, to captions/

Per video it writes OUT/<path under the inputs' common folder>.jsonl, .srt and .vtt, and
records every input in OUT/manifest.jsonl (path, size, mtime, content fingerprint, status,
frames, video duration, seconds taken, error, each output's size and sha256). Rerunning skips
videos already done, unchanged and with their outputs as recorded, so a killed run (even by
SIGKILL) just continues. One run at a time per OUT: a run holds OUT/.run_archive.lock while it
works. Exit codes: 0 all videos captioned; 1 some failed (listed at the end, recorded in the
manifest); 2 bad command line or inputs; 3 the bundle or device cannot be used; 4 the run
stopped because OUT or the manifest cannot be written (the workers are stopped; what was
recorded stays valid); 5 another run is using OUT (one line naming OUT and that run's pid;
nothing in OUT touched); 130 interrupted (Ctrl-C: the workers are stopped, finished videos
stay recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.archive.engines import run_local, run_ray
from stream.archive.inputs import (
    ArchiveError,
    VideoInput,
    describe_inputs,
    discover,
    plan_tasks,
    printable,
    probe_duration,
    seekable_by_time,
)
from stream.archive.outputs import (
    Manifest,
    ManifestError,
    OutputBusyError,
    group_results,
    output_lock,
    remove_temporaries,
    stitch,
    video_record,
    write_outputs,
)
from stream.archive.worker import TaskResult
from stream.cli import exits
from stream.cli.arguments import add_log_level, doc_parser, positive_int, run_command
from stream.errors import BundleError, DeviceError, StreamError, reason
from stream.media.hwaccel import HWACCELS
from stream.model.bundle import open_bundle
from stream.model.sessions import (
    DEVICES,
    PRECISION_HELP,
    PRECISIONS,
    SessionSettings,
    default_threads,
)
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO, shown
from stream.settle import DEFAULT_SETTLE


def get_args_parser() -> argparse.ArgumentParser:
    parser = doc_parser("run_archive.py", __doc__)
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help=f"a directory (searched recursively for videos), a glob pattern "
                             f"(quote it), a video file, or @FILE: a text file of paths, one "
                             f"per line (default: the bundled sample, {shown(SAMPLE_VIDEO)})")
    parser.add_argument("--out", type=Path, default=Path("captions"), metavar="DIR",
                        help="output directory, mirroring the inputs' folders (default: "
                             "captions, in the current directory)")
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE, metavar="DIR",
                        help=f"model bundle directory (default: the bundled model, "
                             f"{shown(DEFAULT_BUNDLE)})")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the model runs (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=PRECISION_HELP + "; chosen once here, every worker runs that one")
    parser.add_argument("--hwaccel", choices=HWACCELS, default="none",
                        help="decode on the GPU (cuda: NVDEC) or the first hardware decoder "
                             "that works (auto); software where none works (default: none)")
    parser.add_argument("--beam", type=int, default=1, help="beam width; 1 = greedy (default)")
    parser.add_argument("--settle", type=positive_int, default=DEFAULT_SETTLE, metavar="N",
                        help=f"sampled frames a new caption must hold before the subtitles "
                             f"show it and an event says it; 1 = every frame's caption "
                             f"(default: {DEFAULT_SETTLE})")
    parser.add_argument("--encode-every-frame", action="store_true",
                        help="run the CNN on every sampled frame, not only on key frames "
                             "(slower, for comparison)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, or Ray actors (default: cores / threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime and decoder threads per worker (default: 2, or "
                             "cores / --workers when that is given)")
    parser.add_argument("--chunk-seconds", type=float, default=300.0,
                        help="split videos longer than this into chunks of this length, "
                             "captioned in parallel; 0 = never split (default: 300)")
    parser.add_argument("--warmup-seconds", type=float, default=10.0,
                        help="each chunk after the first starts decoding this much earlier to "
                             "rebuild the model's memory (default: 10)")
    parser.add_argument("--force", action="store_true",
                        help="redo every video, even those done and unchanged")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local worker processes, or Ray Data (default: local)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--ray-gpus-per-worker", type=float, default=0.0,
                        help="GPUs each Ray actor asks for (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_level(parser, "warning")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(get_args_parser(), _main, argv)


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cores = default_threads()
    # Two threads per worker: on 2 cores, 1 worker x 2 threads captioned 19.0x realtime
    # against 16.8x for 2 workers x 1 thread (ONNX Runtime and the decoder share them well).
    threads = args.threads or (max(1, cores // args.workers) if args.workers else min(2, cores))
    workers = args.workers or max(1, cores // threads)
    for name, value in (("--workers", workers), ("--threads", threads), ("--beam", args.beam)):
        if value < 1:
            parser.error(f"{name} must be at least 1, got {value}")
    if args.chunk_seconds < 0 or args.warmup_seconds < 0:
        parser.error("--chunk-seconds and --warmup-seconds must be 0 or more")
    try:
        paths, root = discover(args.inputs or [str(SAMPLE_VIDEO)])
    except ArchiveError as error:
        print(f"error: {error}", file=sys.stderr)
        return exits.USAGE
    # One run at a time on OUT, from before its manifest is read to the end; taken before the
    # bundle loads, so that a second run stops at once.
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(output_lock(args.out))
        except OutputBusyError as error:
            print(f"error: {error}", file=sys.stderr)
            return exits.BUSY
        except OSError as error:  # not a folder, no permission, no locks on its file system
            print(printable(f"error: {args.out}: cannot use as the output folder "
                            f"({reason(error)})"), file=sys.stderr)
            return exits.OUTPUT
        return _run(args, paths, root, workers, threads)


def _run(args: argparse.Namespace, paths: list[Path], root: Path, workers: int,
         threads: int) -> int:
    """The run proper, under OUT's lock."""
    try:  # refuse a bad bundle before any work starts
        loaded = open_bundle(args.model, SessionSettings(device=args.device, threads=1,
                                                         precision=args.precision))
    except (BundleError, DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exits.BUNDLE
    sample_fps = loaded.bundle.sample_fps
    # What shapes the outputs besides the video: a change redoes every video (recording an
    # evaluation in bundle.json does not).
    settings = {"model": loaded.bundle.fingerprint(), "beam": args.beam,
                "encode_every_frame": args.encode_every_frame, "settle": args.settle,
                "chunk_seconds": args.chunk_seconds, "warmup_seconds": args.warmup_seconds,
                "precision": loaded.precision}
    precision = loaded.precision  # the workers run the encoder chosen here, not their own
    del loaded

    videos = describe_inputs(paths, root)
    manifest = Manifest(args.out)
    # Left by a run that was killed (under the lock, no other run is writing OUT).
    remove_temporaries(args.out, [v.output for v in videos]
                       + [r.get("output") for r in manifest.records.values()])
    todo = [v for v in videos if args.force or not manifest.done(v, args.out, settings)]
    summary = _Summary(total=len(videos), skipped=len(videos) - len(todo))
    by_path = {v.path: v for v in todo}
    results: Iterator[TaskResult] = iter(())  # nothing to do: no pool, no Ray
    try:
        durations = {v.path: probe_duration(v.path) for v in todo}
        tasks = [t for v in todo for t in plan_tasks(v, _chunkable(v.path, durations[v.path],
                                                                   args.chunk_seconds),
                                                     args.chunk_seconds, args.warmup_seconds,
                                                     args.hwaccel)]
        if tasks and args.engine == "ray":
            results = run_ray(tasks, args.model, args.device, workers, threads, args.beam,
                              args.ray_address, args.ray_gpus_per_worker,
                              cpus=workers * threads,
                              encode_every_frame=args.encode_every_frame, precision=precision)
        elif tasks:
            results = run_local(tasks, args.model, args.device, workers, threads, args.beam,
                                args.encode_every_frame, precision)
        with _ProgressBar(list(durations.values()), not args.no_progress) as progress:
            for parts in group_results(_counting(results, progress, summary)):
                video = by_path[parts[0].path]
                _finish(video, parts, args.out, manifest, sample_fps, summary, settings)
                progress.video_done(summary)
            manifest.compact()
    except ManifestError as error:  # the run cannot record its work (disk full, ...)
        print(f"error: {error}; stopped", file=sys.stderr)
        return exits.OUTPUT
    except StreamError as error:  # Ray cannot be reached or started
        print(f"error: {error}", file=sys.stderr)
        return exits.FAILED
    except KeyboardInterrupt:
        print(f"interrupted: {summary.done + summary.failed} video(s) recorded in "
              f"{manifest.path}; run again to continue", file=sys.stderr)
        return exits.INTERRUPTED
    finally:
        _close(results)  # stops the workers (pending tasks cancelled) when the loop broke off
    summary.report(args.out)
    return exits.FAILED if summary.failed else exits.OK


def _chunkable(path: str, duration: float | None, chunk_seconds: float) -> float | None:
    """The duration to plan chunks by: None (one whole task) for a video that would be split
    but cannot be seeked by time."""
    if duration is None or not chunk_seconds or duration <= chunk_seconds:
        return duration
    return duration if seekable_by_time(path) else None


def _close(results: Iterator[TaskResult]) -> None:
    close = getattr(results, "close", None)
    if close is not None:
        close()


def _finish(video: VideoInput, parts: list[TaskResult], out: Path, manifest: Manifest,
            sample_fps: float, summary: _Summary, settings: dict[str, Any]) -> None:
    """Write a finished video's outputs, then record it (with their checksums). A video that
    failed leaves any earlier outputs in place: its record no longer vouches for them."""
    records = [] if any(p.error for p in parts) else stitch(parts)
    record = video_record(video, parts, records) | {"settings": settings}
    if record["status"] == "ok":
        try:
            record["outputs"] = write_outputs(out, video, records, sample_fps,
                                                settings["settle"])
        except (OSError, ValueError) as error:  # cannot be written (no space, odd name, ...)
            record |= {"status": "failed", "error": printable(f"{video.path}: cannot write "
                                                              f"outputs ({reason(error)})")}
    manifest.append(record)
    # Counted once recorded, so that a Ctrl-C in between never counts a video not recorded.
    if record["status"] == "ok":
        summary.done += 1
        summary.frames += len(records)
        summary.encoded += record["frames_encoded"]
    else:
        summary.failures.append((printable(video.path), record["error"]))


def _counting(results: Iterator[TaskResult], progress: _ProgressBar,
              summary: _Summary) -> Iterator[TaskResult]:
    for result in results:
        summary.video_seconds += result.duration
        progress.advance(result.duration)
        yield result


@dataclass
class _Summary:
    total: int
    skipped: int
    done: int = 0
    frames: int = 0
    encoded: int = 0  # frames the CNN ran on (key frames)
    video_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def rates(self) -> tuple[float, float]:
        wall = max(1e-9, time.monotonic() - self.started)
        return self.frames / wall, self.video_seconds / wall

    def report(self, out: Path) -> None:
        wall = time.monotonic() - self.started
        fps, realtime = self.rates()
        lines = [
            f"{'videos':>10} {'captioned':>10} {'skipped':>8} {'failed':>7} {'frames':>8} "
            f"{'encoded':>8} {'video min':>10} {'wall s':>7} {'frames/s':>9} {'realtime':>9}",
            f"{self.total:>10} {self.done:>10} {self.skipped:>8} {self.failed:>7} "
            f"{self.frames:>8} {self.encoded:>8} {self.video_seconds / 60:>10.1f} {wall:>7.1f} "
            f"{fps:>9.1f} {realtime:>8.1f}x",
            f"outputs and manifest: {out}"]
        lines += [f"failed: {error}" for _, error in self.failures]
        print("\n".join(lines), file=sys.stderr)


class _ProgressBar:
    """A tqdm bar over video seconds (files done, frames/s, realtime factor, ETA), or nothing.

    It never passes its total: a video can run longer than its container said (the seconds
    counted are capped at the total), and where a duration is unknown there is no total (no
    percentage, no ETA) rather than a wrong one.
    """

    def __init__(self, durations: list[float | None], enabled: bool) -> None:
        self.videos = len(durations)
        self.bar: Any = None
        self.seconds = 0.0
        known = sum(d or 0.0 for d in durations)
        self.total = known if known > 0 and None not in durations else None
        if enabled and durations:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional for the runtime: no bar then
                return
            self.bar = tqdm(total=None if self.total is None else round(self.total, 1),
                            unit="video s", desc="captioning", dynamic_ncols=True)

    def advance(self, seconds: float) -> None:
        self.seconds += max(0.0, seconds)
        if self.total is not None:
            self.seconds = min(self.seconds, self.total)
        if self.bar is not None:
            self.bar.n = round(self.seconds, 1)  # set, not added: no float error builds up
            self.bar.refresh()

    def video_done(self, summary: _Summary) -> None:
        if self.total is not None and summary.done + summary.failed >= self.videos:
            self.advance(self.total)  # all done: full, even where videos ran short
        if self.bar is not None:
            fps, realtime = summary.rates()
            self.bar.set_postfix_str(f"videos {summary.done + summary.failed}/{self.videos}, "
                                     f"{fps:.0f} frames/s, {realtime:.1f}x realtime")

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
