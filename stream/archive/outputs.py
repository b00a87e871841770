"""The archive's driver side: stitching each video's chunks in PTS order, writing its outputs,
and the manifest::

    OUT/<path relative to the input root>.jsonl   one caption event per sampled frame
    OUT/<...>.srt, OUT/<...>.vtt                   subtitles (consecutive equal captions merged)
    OUT/manifest.jsonl                             one record per input: fingerprint, status, ...

Crash safety: a video's three files are written under temporary names and renamed into place
only when all are complete, and then its manifest record is appended and flushed. A run killed
at any moment (SIGKILL included) leaves finished videos complete and recorded; the next run
skips them (same size, mtime and content fingerprint, outputs present) and redoes the rest. At
the end of a run the manifest is rewritten in path order, one record per input. Outputs hold no
wall-clock times, so a resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.archive.inputs import VideoInput, printable
from stream.archive.worker import TaskResult
from stream.errors import StreamError, reason
from stream.events import CaptionEvent
from stream.files import is_temporary_name, sync, temporary_name, write_text_atomically
from stream.sinks import JsonlSink, SubtitleSink

MANIFEST = "manifest.jsonl"
OUTPUT_KINDS = ("jsonl", "srt", "vtt")


class ManifestError(StreamError):
    """The manifest cannot be written (a full disk, ...): the run cannot record its work."""


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
    temps = [temporary_name(p) for p in finals]
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
            if is_temporary_name(path.name) and path.is_file():
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
