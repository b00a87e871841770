"""The archive's driver side: stitching each video's chunks in PTS order, writing its outputs,
and the manifest::

    OUT/<path relative to the input root>.jsonl   one caption event per sampled frame
    OUT/<...>.srt, OUT/<...>.vtt                   subtitles (consecutive equal captions merged)
    OUT/manifest.jsonl                             one record per input: fingerprint, status, ...

    OUT/.run_archive.lock                          held (flock) by the run writing OUT; removed at
                                                   its end

Crash safety: a video's three files are written under temporary names and renamed into place
only when all are complete, and then its manifest record is appended and flushed, with each
output's size and sha256. Three renames are not atomic as a set, so the record is what makes a
set: a rerun counts a video as done only when its outputs match the record's checksums (a crash
between the renames leaves a new file next to old ones, which no record vouches for: the video
is redone). A run killed at any moment (SIGKILL included) leaves finished videos complete and
recorded; the next run skips them (same size, mtime and content fingerprint, outputs as
recorded) and redoes the rest. At the end of a run the manifest is rewritten in path order, one
record per input. Outputs hold no wall-clock times, so a resumed run writes the same files as an
uninterrupted one.

One run at a time: a run holds an exclusive ``flock`` on OUT/.run_archive.lock (which holds its
pid) from before it reads the manifest until it ends; the system releases it when the process
dies, SIGKILL included. A second run on the same OUT stops at once (:class:`OutputBusyError`).
So the temporaries a run finds are those of a run that is gone, and it removes them; it looks
for them only where the archive writes (the folders of the outputs of its inputs and of the
manifest's records, not below them) and only under its own names (``.<output>.<kind>.PID.tmp``,
``.manifest.jsonl.PID.tmp``): no other folder of OUT is listed and no other file removed.
Outputs under their final names are only ever replaced by a new set, never deleted: a video that
fails keeps the files of an earlier success, which its failed record no longer vouches for.
Records written before checksums were recorded vouch for nothing: those videos are redone once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from stream.archive.inputs import VideoInput, printable
from stream.archive.worker import TaskResult
from stream.errors import StreamError, reason
from stream.events import CaptionEvent
from stream.files import (
    sha256_file,
    sync,
    temporary_name,
    temporary_target,
    write_text_atomically,
)
from stream.settle import DEFAULT_SETTLE, Settler
from stream.sinks.jsonl import JsonlSink
from stream.sinks.subtitles import SubtitleSink

if sys.platform != "win32":
    import fcntl

MANIFEST = "manifest.jsonl"
LOCK = ".run_archive.lock"
OUTPUT_KINDS = ("jsonl", "srt", "vtt")
# The temporary names (stream.files.temporary_name) of a video's outputs and of the manifest.


class ManifestError(StreamError):
    """The manifest cannot be written (a full disk, ...): the run cannot record its work."""


class OutputBusyError(StreamError):
    """Another run holds the output folder's lock."""

    def __init__(self, out: Path, pid: int | None) -> None:
        self.out, self.pid = out, pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(printable(f"{out} is in use by another run ({holder}); wait for it to "
                                   f"end or choose another --out"))


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold OUT/.run_archive.lock (an exclusive ``flock``, with this process's pid in it) for
    the block, creating ``out`` if needed; the file is removed at the end. The system releases
    the lock of a process that dies, so a run killed by SIGKILL does not block the next.

    Raises:
        OutputBusyError: another run holds it.
        OSError: ``out`` cannot be created, or the lock file cannot be opened or locked.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    if sys.platform == "win32":  # no flock: one run at a time is up to the user there
        yield path
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise OutputBusyError(out, pid) from None
        except BaseException:
            os.close(fd)
            raise
        # The run that held it may have removed the file between our open and our flock: then
        # this lock is on a file nobody else will open; take the one now under the name.
        try:
            here, named = os.fstat(fd), os.stat(path)
            if (here.st_dev, here.st_ino) == (named.st_dev, named.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        # Overwritten in place (never empty in between), so a second run always reads a pid.
        record = f"{os.getpid():<20}\n".encode()
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
        yield path
    finally:
        with contextlib.suppress(OSError):  # while still held: the next run makes a new one
            path.unlink(missing_ok=True)
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 64, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


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
                  sample_fps: float, settle: int = DEFAULT_SETTLE) -> dict[str, dict[str, Any]]:
    """Write the video's JSONL, SRT and WebVTT under temporary names, then rename all three.
    The captions are settled over the whole video (``settle``, see :mod:`stream.settle`), so a
    video captioned in chunks gets the settled captions and events of a whole run.

    Returns each output's ``{"size", "sha256"}`` by kind, for its manifest record: the set that
    the record vouches for (:meth:`Manifest.done`)."""
    base = out / video.output
    base.parent.mkdir(parents=True, exist_ok=True)
    finals = [base.with_name(f"{base.name}.{kind}") for kind in OUTPUT_KINDS]
    temps = [temporary_name(p) for p in finals]
    stream = printable(video.output)
    settler = Settler(stream, settle, 1 / sample_fps)
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
                for settled in settler.push(event):
                    for sink in (jsonl, srt, vtt):
                        sink.write(settled)
            for settled in settler.finish():
                for sink in (jsonl, srt, vtt):
                    sink.write(settled)
        # Durable before the manifest vouches for them: synced, renamed, directory synced.
        for temp in temps:
            sync(temp)
        checksums = {kind: _checksum(temp) for kind, temp in zip(OUTPUT_KINDS, temps,
                                                                  strict=True)}
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
        sync(base.parent)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return checksums


def _checksum(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _matches(path: Path, expected: object) -> bool:
    """Whether ``path`` is the file its record describes (size first: no read when it differs)."""
    if not isinstance(expected, dict):
        return False
    try:
        return (path.stat().st_size == expected.get("size")
                and sha256_file(path) == expected.get("sha256"))
    except OSError:
        return False


def remove_temporaries(out: Path, outputs: Iterable[object]) -> int:
    """Delete the temporaries that a killed run left of these outputs (paths relative to
    ``out``, without suffix: the inputs' and the manifest's) and of the manifest. Call it only
    while holding :func:`output_lock`: then their owner is gone.

    Only the folders of those outputs are listed (not searched below), and only names that are
    the archive's own temporaries of those outputs are removed; whatever else is in ``out`` is
    left alone."""
    names: dict[Path, set[str]] = {out: set()}
    for output in outputs:
        if not isinstance(output, str):
            continue  # a damaged manifest record
        relative = PurePosixPath(output)
        if relative.is_absolute() or ".." in relative.parts or relative.name in ("", "."):
            continue  # not below out: never the archive's
        names.setdefault(out.joinpath(*relative.parent.parts), set()).add(relative.name)
    removed = 0
    for folder, stems in names.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:  # no such folder (yet), or not a folder
            continue
        for entry in entries:
            target = temporary_target(entry.name)
            stem, _, kind = (target or "").rpartition(".")
            ours = target is not None and ((kind in OUTPUT_KINDS and stem in stems)
                                           or (folder == out and target == MANIFEST))
            if ours and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
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
        settings, and with the outputs its record vouches for in place (same sizes and sha256:
        a set mixed by a crash between its renames, or a damaged file, is not done)."""
        record = self.records.get(video.path)
        checksums = record.get("outputs") if record is not None else None
        return (record is not None and record.get("status") == "ok"
                and record.get("settings") == settings
                and record.get("fingerprint") == video.fingerprint
                and record.get("size") == video.size and record.get("mtime") == video.mtime
                and isinstance(checksums, dict)
                and all(_matches(out / f"{video.output}.{kind}", checksums.get(kind))
                        for kind in OUTPUT_KINDS))

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
