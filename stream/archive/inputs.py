"""The archive's inputs: finding the videos (directories, globs, ``@FILE`` lists), their
fingerprints, their durations, and the plan of tasks (whole videos, or time chunks with a
warm-up) that the engines run.

Chunks: a video longer than ``chunk_seconds`` is split at multiples of it; each chunk starts
decoding ``warmup_seconds`` earlier and steps the model through that warm-up window without
emitting captions, so that its memory is rebuilt by its first own frame. The warm-up is never
shorter than the key-frame rule's window, so that a chunk's key frames are exactly the whole
video's (:mod:`stream.model.keyframes`).
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av

from stream.errors import MediaError, StreamError, reason
from stream.files import read_list
from stream.media.frames import StreamClock, open_video
from stream.media.sources import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts",
                            ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"})
# A folder's still images are captioned too: one frame, one caption of what it shows.
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
# FFmpeg demuxers of streams that recorders join byte for byte (their timestamps may restart).
JOINABLE_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "flv", "h264", "hevc", "m4v",
                              "dv", "avs"})
_FINGERPRINT_BYTES = 1 << 20  # hashed from the start and from the end of each file


class ArchiveError(StreamError):
    """The archive run cannot start (no inputs, an unreadable list file, ...)."""


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
    hwaccel: str = "none"  # decoding: software, or a hardware decoder (stream.media.hwaccel)


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
            video = container.streams.video[0] if container.streams.video else None
            if video is not None and video.duration is not None and video.time_base:
                return float(video.duration * video.time_base)
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
        with open_video(path) as (container, video):
            if not set(container.format.name.split(",")) & JOINABLE_FORMATS:
                return True  # an index-based container (MP4, Matroska, ...): no restarts
            clock = StreamClock(video)  # its restart rule, on packet times
            for packet in container.demux(video):
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


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) shown as \\xNN, so
    that it can be written as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
