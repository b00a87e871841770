"""Archive captioning: many long videos, resumable, on worker processes or a Ray cluster.

The driver finds the videos, fingerprints them, skips those already done, splits long ones into
time chunks, hands the chunks to an engine (:mod:`stream.engines`), stitches each video's chunks
in PTS order and writes its outputs::

    OUT/<path relative to the input root>.jsonl   one caption event per sampled frame
    OUT/<...>.srt, OUT/<...>.vtt                   subtitles (consecutive equal captions merged)
    OUT/manifest.jsonl                             one record per input: fingerprint, status, ...

Crash safety: a video's three files are written under temporary names and renamed into place
only when all are complete, and then its manifest record is appended and flushed. A run killed
at any moment (SIGKILL included) leaves finished videos complete and recorded; the next run
skips them (same size, mtime and content fingerprint, outputs present) and redoes the rest. At
the end of a run the manifest is rewritten in path order, one record per input. Outputs hold no
wall-clock times, so a resumed run writes the same files as an uninterrupted one.

Chunks: a video longer than ``chunk_seconds`` is split at multiples of it; each chunk starts
decoding ``warmup_seconds`` earlier and steps the model through that warm-up window without
emitting captions, so that its memory is rebuilt by its first own frame. The warm-up is never
shorter than the key-frame rule's window, so that a chunk's key frames are exactly the whole
video's (:mod:`stream.keyframes`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.captioning import CaptionCore
from stream.errors import MediaError, StreamError, reason
from stream.events import CaptionEvent
from stream.files import read_list, sync, write_text_atomically
from stream.frames import StreamClock, TimeSampler, frame_to_rgb, open_video, sampled_frames
from stream.sinks import JsonlSink, SubtitleSink
from stream.sources import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts",
                            ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"})
# A folder's still images are captioned too: one frame, one caption of what it shows.
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
MANIFEST = "manifest.jsonl"
OUTPUT_KINDS = ("jsonl", "srt", "vtt")
# FFmpeg demuxers of streams that recorders join byte for byte (their timestamps may restart).
JOINABLE_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "flv", "h264", "hevc", "m4v",
                              "dv", "avs"})
_FINGERPRINT_BYTES = 1 << 20  # hashed from the start and from the end of each file
_STEP_BATCH = 8  # frames encoded per call within a chunk


class ArchiveError(StreamError):
    """The archive run cannot start (no inputs, an unreadable list file, ...)."""


class ManifestError(StreamError):
    """The manifest cannot be written (a full disk, ...): the run cannot record its work."""


@dataclass(frozen=True)
class VideoInput:
    """One input file: where it is, where its outputs go, and what identifies its content."""

    path: str
    output: str  # output path without suffix, relative to the output directory
    size: int
    mtime: float
    fingerprint: str


@dataclass(frozen=True)
class Task:
    """A unit of work: a whole video (chunk 0 of 1) or one time chunk of it."""

    path: str
    chunk: int
    chunks: int
    start: float  # seconds; captions are emitted for start <= pts < end
    end: float | None
    warmup: float  # seconds decoded (and stepped) before start, without captions
    hwaccel: str = "none"  # decoding: software, or a hardware decoder (stream.hwaccel)


@dataclass
class TaskResult:
    """What a worker returns for a task: its captions as JSON-ready dicts, or its error."""

    path: str
    chunk: int
    chunks: int
    events: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # wall time taken
    duration: float = 0.0  # video seconds covered
    error: str | None = None

    def to_row(self) -> dict[str, Any]:
        """A flat row (events as one JSON string), for engines that move tables around."""
        row = asdict(self)
        row["events"] = json.dumps(self.events)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskResult:
        data = dict(row)
        data["events"] = json.loads(data["events"])
        data["error"] = data.get("error") or None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------- finding inputs


def discover(inputs: Iterable[str]) -> tuple[list[Path], Path]:
    """Video files and still images named by ``inputs`` (directories searched recursively for
    ``MEDIA_SUFFIXES``, glob patterns,
    ``@list.txt`` files of paths, or plain files), sorted, and their common root.

    Raises:
        ArchiveError: an input matches nothing, or a list file cannot be read.
    """
    found: set[Path] = set()
    for spec in inputs:
        if spec.startswith("@"):
            found |= _from_list(Path(spec[1:]))
            continue
        path = Path(spec)
        if path.is_dir():
            found |= {p for p in path.rglob("*") if p.is_file()
                      and p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith(".")}
        elif path.is_file():
            found.add(path)
        elif glob.has_magic(spec):
            matches = {Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()}
            if not matches:
                raise ArchiveError(f"{spec}: the pattern matches no file")
            found |= matches
        else:
            raise ArchiveError(f"{spec}: no such file or directory")
    if not found:
        raise ArchiveError(f"no video files or images in {', '.join(inputs)}")
    paths = sorted({p.resolve() for p in found})  # one entry per file, however it was named
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return paths, root


def _from_list(list_file: Path) -> set[Path]:
    try:
        entries = read_list(list_file)
    except OSError as error:
        raise ArchiveError(f"{list_file}: cannot read the list ({reason(error)})") from error
    return {list_file.parent / entry for entry in entries}


def fingerprint(path: Path) -> str:
    """sha256 of the size and the first and last MiB: catches edits and truncation without
    reading hours of video."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as file:
        digest.update(file.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            file.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            digest.update(file.read())
    return digest.hexdigest()


def describe_inputs(paths: list[Path], root: Path) -> list[VideoInput]:
    """Size, mtime, fingerprint and output path of each input (unreadable files get an empty
    fingerprint; they fail when processed and are recorded)."""
    videos = []
    for path in paths:
        relative = path.relative_to(root).as_posix()  # inside root by construction: no ".."
        try:
            stat = path.stat()
            size, mtime, print_ = stat.st_size, stat.st_mtime, fingerprint(path)
        except OSError:
            size, mtime, print_ = -1, 0.0, ""
        videos.append(VideoInput(str(path), relative, size, mtime, print_))
    return videos


def probe_duration(path: str) -> float | None:
    """The video's duration in seconds from its container, or None when unknown/unreadable."""
    try:
        with av.open(path) as container:
            if container.duration is not None:
                return float(container.duration) / av.time_base
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, OSError):
        return None
    return None


def seekable_by_time(path: str) -> bool:
    """Whether seeking to a time finds the frames that decoding from the start times there:
    the video's timestamps never go back (joined recordings restart them, and a seek then
    lands in the wrong part). Streams that can be joined byte for byte (MPEG-TS, MPEG-PS, FLV,
    raw elementary streams) are scanned packet by packet, without decoding; containers with
    an index hold one timeline."""
    try:
        container, stream = open_video(path)
        with container:
            if not set(container.format.name.split(",")) & JOINABLE_FORMATS:
                return True  # an index-based container (MP4, Matroska, ...): no restarts
            clock = StreamClock(stream)  # its restart rule, on packet times
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    clock.at(float(packet.pts * packet.time_base))
                    if clock.restarts:
                        return False
    except (MediaError, av.FFmpegError, OSError):
        return False  # it fails when captioned, whole
    return True


def plan_tasks(video: VideoInput, duration: float | None, chunk_seconds: float,
               warmup: float, hwaccel: str = "none") -> list[Task]:
    """One task for a short (or unprobeable) video; time chunks for a long one (pass a
    ``duration`` of None for a video that :func:`seekable_by_time` refuses)."""
    if not chunk_seconds or duration is None or duration <= chunk_seconds:
        return [Task(video.path, 0, 1, 0.0, None, 0.0, hwaccel)]
    count = math.ceil(duration / chunk_seconds)
    return [Task(video.path, k, count, k * chunk_seconds,
                 None if k == count - 1 else (k + 1) * chunk_seconds, warmup if k else 0.0,
                 hwaccel)
            for k in range(count)]


# ---------------------------------------------------------------------------- the worker side


def caption_task(core: CaptionCore, task: Task, decoder_threads: int = 1) -> TaskResult:
    """Caption one task: decode from ``start - warmup``, step every sampled frame, keep the
    captions of frames in [start, end). Failures become the result's error, never an
    exception (one bad file must not stop a batch)."""
    started = time.perf_counter()
    result = TaskResult(task.path, task.chunk, task.chunks)
    try:
        result.events, result.duration = _caption_frames(core, task, decoder_threads)
    except MediaError as error:
        result.error = printable(str(error))
    except Exception as error:  # noqa: BLE001 - anything else is still this file's failure
        result.error = printable(f"{task.path}: {type(error).__name__}: {reason(error)}")
    finally:
        core.forget(_stream_id(task))
    result.seconds = time.perf_counter() - started
    return result


def _stream_id(task: Task) -> str:
    return f"{task.path}#{task.chunk}"


def _caption_frames(core: CaptionCore, task: Task,
                    decoder_threads: int) -> tuple[list[dict[str, Any]], float]:
    bundle = core.bundle
    size = (bundle.input_size, bundle.input_size)
    fps = bundle.sample_fps
    # The warm-up starts on the sampling grid, so that the chunk's sampler keeps the same
    # frames as the whole video's does, and spans the key-frame rule's window, so that the
    # chunk's key frames are the whole video's from its start on.
    warmup = max(task.warmup, core.keyframes.window(fps)) if task.start > 0 else 0.0
    first = max(0.0, math.floor((task.start - warmup) * fps + 1e-6) / fps)
    events: list[dict[str, Any]] = []
    pending: list[tuple[float, np.ndarray]] = []
    last_pts = task.start

    def flush() -> None:
        # The task's stream id is new to the core: its first frame starts from a clear state.
        frames = np.stack([rgb for _, rgb in pending])
        captions = core.step(frames, [_stream_id(task)] * len(pending),
                             times=[pts for pts, _ in pending])
        for (pts, _), caption in zip(pending, captions, strict=True):
            if pts >= task.start - 1e-6:
                events.append({"pts": round(pts, 6), "caption": caption.text,
                               "logprob": round(caption.logprob, 4),
                               "encoded": caption.encoded})
        pending.clear()

    container, stream = open_video(task.path, task.hwaccel)
    with container:
        stream.codec_context.thread_count = decoder_threads
        sampler = TimeSampler(fps)
        decoded = 0
        try:
            for pts, frame in _frames_from(container, stream, first):
                decoded += 1
                if pts < first - 1e-6:
                    continue  # before the warm-up (the seek lands on an earlier keyframe)
                if task.end is not None and pts >= task.end - 1e-6:
                    break
                if not sampler.accept(pts):
                    continue
                pending.append((pts, frame_to_rgb(frame, size)))
                last_pts = pts
                if len(pending) == _STEP_BATCH:
                    flush()
        except av.FFmpegError as error:
            raise MediaError(f"{task.path}: decode failed after {decoded} frames "
                             f"({reason(error)})") from error
        if pending:
            flush()
        if decoded == 0:
            raise MediaError(f"{task.path}: no decodable video frames")
    end = task.end if task.end is not None else last_pts + 1 / bundle.sample_fps
    return events, max(0.0, end - task.start)


def _frames_from(container: av.container.InputContainer, stream: av.VideoStream,
                 first: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """Every frame from a keyframe at or before ``first`` seconds on, with its time.

    Some containers (MPEG-TS) seek to a point after the target; then the seek is retried
    further back, doubling the margin, down to the start of the file.
    """
    if first <= 0 or stream.time_base is None:
        yield from sampled_frames(container, stream, TimeSampler(None))
        return
    origin = StreamClock(stream).origin
    if origin is None:  # the stream's clock starts at its first frame: read it before seeking
        opening = next(container.decode(stream), None)
        origin = float(opening.time) if opening is not None and opening.time is not None else 0.0
    margin = 0.0
    while True:
        target = max(0.0, first - margin)
        container.seek(int((target + origin) / stream.time_base), stream=stream, backward=True)
        frames = sampled_frames(container, stream, TimeSampler(None),
                                clock=StreamClock(stream, origin=origin))
        head = next(frames, None)
        # Nothing decoded (a seek past the end) or a first frame after ``first``: go back.
        if (head is not None and head[0] <= first + 1e-6) or target == 0.0:
            break
        margin = max(1.0, 2 * margin)
    if head is not None:
        yield head
        yield from frames


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) shown as \\xNN, so
    that it can be written as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------- the driver side


def stitch(results: list[TaskResult]) -> list[dict[str, Any]]:
    """A video's caption records from its chunks, in PTS order, ``changed`` recomputed."""
    records = sorted((e for r in results for e in r.events), key=lambda e: e["pts"])
    previous = None
    for index, record in enumerate(records):
        record["index"] = index
        record["changed"] = record["caption"] != previous
        previous = record["caption"]
    return records


def write_outputs(out: Path, video: VideoInput, records: list[dict[str, Any]],
                  sample_fps: float) -> list[Path]:
    """Write the video's JSONL, SRT and WebVTT under temporary names, then rename all three."""
    base = out / video.output
    base.parent.mkdir(parents=True, exist_ok=True)
    finals = [base.with_name(f"{base.name}.{kind}") for kind in OUTPUT_KINDS]
    temps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in finals]
    stream = printable(video.output)
    try:
        with JsonlSink(temps[0], timing=False) as jsonl, \
                SubtitleSink(temps[1], 1 / sample_fps, "srt") as srt, \
                SubtitleSink(temps[2], 1 / sample_fps, "vtt") as vtt:
            for i, record in enumerate(records):
                event = CaptionEvent(stream=stream, index=record["index"], pts=record["pts"],
                                     decoded_at=0.0, emitted_at=0.0, caption=record["caption"],
                                     logprob=record["logprob"], latency_ms=0.0,
                                     changed=record["changed"], reset=i == 0,
                                     encoded=record.get("encoded", True))
                for sink in (jsonl, srt, vtt):
                    sink.write(event)
        # Durable before the manifest vouches for them: synced, renamed, directory synced.
        for temp in temps:
            sync(temp)
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
        sync(base.parent)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return finals


def remove_temporaries(out: Path) -> int:
    """Delete the temporary files a killed run left in ``out`` (``.NAME.PID.tmp``)."""
    removed = 0
    if out.is_dir():
        for path in out.rglob(".*.tmp"):
            if re.fullmatch(r"\..+\.\d+\.tmp", path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


class Manifest:
    """OUT/manifest.jsonl: one JSON record per processed input, appended and flushed as each
    video finishes; the last record of a path wins; :meth:`compact` rewrites it sorted."""

    def __init__(self, out: Path) -> None:
        self.path = out / MANIFEST
        self.records: dict[str, dict[str, Any]] = {}
        self._cut = False  # the file ends inside a line (a killed run): start a new one first
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            self._cut = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["path"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by a crash: that video is simply redone

    def done(self, video: VideoInput, out: Path, settings: dict[str, Any]) -> bool:
        """Whether ``video`` finished before, unchanged since, with the same model and
        settings, and with its outputs in place."""
        record = self.records.get(video.path)
        return (record is not None and record.get("status") == "ok"
                and record.get("settings") == settings
                and record.get("fingerprint") == video.fingerprint
                and record.get("size") == video.size and record.get("mtime") == video.mtime
                and all((out / f"{video.output}.{kind}").exists() for kind in OUTPUT_KINDS))

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` and sync it to the disk; :class:`ManifestError` if it cannot be."""
        self.records[record["path"]] = record
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                # ASCII JSON: undecodable file-name bytes survive as \\udcNN escapes.
                file.write(("\n" if self._cut else "") + json.dumps(record) + "\n")
                self._cut = False
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise self._error(error) from error

    def _error(self, error: OSError) -> ManifestError:
        return ManifestError(printable(f"{self.path}: cannot write ({reason(error)})"))

    def compact(self) -> None:
        """Rewrite the manifest with one record per input ever processed here, in path order
        (atomically; inputs of earlier runs with other arguments keep their records)."""
        try:
            write_text_atomically(self.path, "".join(json.dumps(self.records[p]) + "\n"
                                                     for p in sorted(self.records)), durable=True)
        except OSError as error:
            raise self._error(error) from error


def video_record(video: VideoInput, results: list[TaskResult],
                 records: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest record of a finished (or failed) video."""
    errors = [r.error for r in sorted(results, key=lambda r: r.chunk) if r.error]
    return {"path": video.path, "output": video.output, "size": video.size,
            "mtime": video.mtime, "fingerprint": video.fingerprint,
            "status": "failed" if errors else "ok", "frames": len(records),
            "frames_encoded": sum(r.get("encoded", True) for r in records),
            "duration": round(sum(r.duration for r in results), 3),
            "seconds": round(sum(r.seconds for r in results), 3), "chunks": len(results),
            "error": errors[0] if errors else None}


def group_results(results: Iterator[TaskResult]) -> Iterator[list[TaskResult]]:
    """Collect task results per video; yield a video's results once all its chunks are in."""
    waiting: dict[str, dict[int, TaskResult]] = {}
    for result in results:
        parts = waiting.setdefault(result.path, {})
        parts[result.chunk] = result  # keyed by chunk: a repeated chunk cannot count twice
        if len(parts) == result.chunks:
            yield [parts[k] for k in sorted(waiting.pop(result.path))]
