"""run_archive.py's untested paths: --force, --beam, settings changes, dying workers, bad inputs.

The archive fixtures and helpers of tests/stream/test_archive.py are reused; the inputs here are
three short ShapesWorld videos captioned by the shipped bundle (no training needed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.archive.engines import run_local
from stream.archive.inputs import Task, discover
from stream.archive.outputs import OUTPUT_KINDS
from tests.models import make_world
from tests.stream.test_archive import SHIPPED, manifest, outputs, run_archive
from tests.test_run_stream import core_captions, write_beam_clip

pytestmark = pytest.mark.timeout(600)

CPU = ("--model", str(SHIPPED), "--device", "cpu", "--workers", "1")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder of three short ShapesWorld videos (one or two events each)."""
    world = make_world(tmp_path_factory.mktemp("archive_cli"), videos=3, seed=51)
    return world / "videos"


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts of run_archive's summary table (videos, captioned, skipped, failed, frames,
    frames encoded)."""
    lines = done.stderr.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["videos", "captioned"])
    values = lines[header + 1].split()
    return dict(zip(("videos", "captioned", "skipped", "failed", "frames", "encoded"),
                    map(int, values[:6]), strict=True))


def inodes(out: Path) -> dict[str, int]:
    """Each output file's inode: outputs are written to a temporary name and renamed, so a
    video captioned again gets new inodes and a skipped one keeps them."""
    return {p.relative_to(out).as_posix(): p.stat().st_ino for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}


@pytest.mark.slow
def test_force_redoes_videos_already_done(videos, tmp_path):
    out = tmp_path / "out"
    first = run_archive(str(videos), "--out", str(out), *CPU)
    assert first.returncode == 0, first.stderr
    assert summary(first)["captioned"] == 3
    reference = outputs(out)
    assert len(reference) == 3 * len(OUTPUT_KINDS)
    # A damaged output that still exists: it no longer matches its record's checksum, so a
    # plain rerun redoes that video (alone)...
    damaged = out / next(name for name in reference if name.endswith(".jsonl"))
    damaged.write_text("damaged\n")
    again = run_archive(str(videos), "--out", str(out), *CPU)
    assert again.returncode == 0, again.stderr
    assert (summary(again)["captioned"], summary(again)["skipped"]) == (1, 2), again.stderr
    assert outputs(out) == reference
    # ...and --force captions every video again.
    before = inodes(out)
    forced = run_archive(str(videos), "--out", str(out), *CPU, "--force")
    assert forced.returncode == 0, forced.stderr
    assert {k: summary(forced)[k] for k in ("captioned", "skipped", "failed")} == {
        "captioned": 3, "skipped": 0, "failed": 0}
    assert outputs(out) == reference
    after = inodes(out)
    assert all(after[name] != before[name] for name in before)
    assert [r["status"] for r in manifest(out)] == ["ok"] * 3


def test_beam_captions_equal_the_cores_beam_search(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    clip = write_beam_clip(inputs / "clip.mp4")
    beam, times = core_captions(clip, beam=3)
    greedy, _ = core_captions(clip, beam=1)
    assert beam != greedy  # the clip tells the two decodings apart
    done = run_archive(str(inputs), "--out", str(tmp_path / "out"), *CPU, "--beam", "3")
    assert done.returncode == 0, done.stderr
    events = [e for e in map(json.loads, (tmp_path / "out" / "clip.mp4.jsonl").read_text()
                             .splitlines()) if e["type"] == "caption"]
    assert [e["pts"] for e in events] == pytest.approx(list(times), abs=1e-6)
    assert [e["caption"] for e in events] == beam


@pytest.mark.slow
def test_a_settings_change_redoes_videos_and_an_unchanged_rerun_skips_them(videos, tmp_path):
    out = tmp_path / "out"
    runs = [  # (extra arguments, captioned, skipped)
        ((), 3, 0),
        ((), 0, 3),                                    # unchanged: nothing to do
        (("--chunk-seconds", "1"), 3, 0),            # other chunks
        (("--chunk-seconds", "1"), 0, 3),
        (("--chunk-seconds", "1", "--beam", "2"), 3, 0),  # another decoding
        (("--chunk-seconds", "1", "--beam", "2"), 0, 3),
        (("--chunk-seconds", "1", "--beam", "2", "--encode-every-frame"), 3, 0),  # the CNN
    ]
    previous: dict[str, int] = {}
    for extra, captioned, skipped in runs:
        done = run_archive(str(videos), "--out", str(out), *CPU, *extra)
        assert done.returncode == 0, done.stderr
        counts = summary(done)
        assert (counts["captioned"], counts["skipped"], counts["failed"]) == (
            captioned, skipped, 0), (extra, done.stderr)
        now = inodes(out)
        assert len(now) == 3 * len(OUTPUT_KINDS)
        if previous:  # redone videos have new output files, skipped ones the same files
            assert sum(now[name] != previous[name] for name in now) == captioned * len(
                OUTPUT_KINDS), extra
        previous = now
        records = manifest(out)
        assert [r["status"] for r in records] == ["ok"] * 3
        if "--chunk-seconds" in extra:
            assert all(r["chunks"] >= 2 for r in records)  # the new setting was applied
        events = [e for name in sorted(now) if name.endswith(".jsonl")
                  for e in map(json.loads, (out / name).read_text().splitlines())
                  if e["type"] == "caption"]
        encoded = sum(e["encoded"] for e in events)
        assert sum(r["frames_encoded"] for r in records) == encoded
        if captioned:
            assert (counts["frames"], counts["encoded"]) == (len(events), encoded)
        # Key frames only, or (with the option) every frame through the CNN.
        assert (encoded == len(events)) == ("--encode-every-frame" in extra), extra


# ---------------------------------------------------------------------------- dying workers


class WorkerKiller:
    """Kills, with SIGKILL, every process that opens a named pipe (a task's "video"): as the
    kernel's OOM killer or a crash in native code would, on that one input. A context manager;
    :attr:`killed` holds the pids."""

    def __init__(self, fifo: Path) -> None:
        os.mkfifo(fifo)
        self.fifo = fifo
        self.killed: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="worker-killer", daemon=True)

    def __enter__(self) -> WorkerKiller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _readers(self) -> Iterator[int]:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if any(os.readlink(fd) == str(self.fifo) for fd in (proc / "fd").iterdir()):
                    yield int(proc.name)
            except OSError:  # gone, or not ours to look at
                continue

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:  # succeeds (without blocking) only while a reader has the pipe open
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                self.stop.wait(0.02)
                continue
            try:
                # Opening for writing lets the reader's open return, so its descriptor shows.
                while not self.stop.is_set():
                    fresh = set(self._readers()) - self.killed
                    if fresh:
                        for pid in fresh:
                            os.kill(pid, signal.SIGKILL)
                        self.killed |= fresh
                        break
                    self.stop.wait(0.02)
            finally:
                os.close(fd)


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_then_isolated(videos, tmp_path):
    good = sorted(videos.glob("*.mp4"))
    fatal = tmp_path / "kills-its-worker.mp4"
    tasks = [Task(str(path), 0, 1, 0.0, None, 0.0) for path in [fatal, *good]]
    with WorkerKiller(fatal) as killer:
        results = list(run_local(tasks, SHIPPED, "cpu", workers=2, threads=1))
    assert sorted(r.path for r in results) == sorted(t.path for t in tasks)  # one result each
    by_path = {r.path: r for r in results}
    assert by_path[str(fatal)].error == (f"{fatal}: the worker process died while "
                                         f"captioning it")
    for path in good:  # the others, lost with the broken pools, were run again and succeeded
        assert by_path[str(path)].error is None and by_path[str(path)].events
    # Killed in the first pool, in the pool of retries, and once more running alone.
    assert len(killer.killed) == 3


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("case", ["missing", "a directory"])
def test_an_unreadable_list_file_exits_2_with_one_line_naming_it(tmp_path, case):
    listed = tmp_path / "list.txt"
    if case == "a directory":
        listed.mkdir()
    done = run_archive(f"@{listed}", "--out", str(tmp_path / "out"), *CPU, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {listed}: cannot read the list (")
    assert not (tmp_path / "out").exists()


def test_a_list_file_may_name_files_whose_names_are_not_utf8(videos, tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    odd.write_bytes(sorted(videos.glob("*.mp4"))[0].read_bytes())
    listed = tmp_path / "list.txt"
    listed.write_bytes(os.fsencode(odd) + b"\n")
    paths, _ = discover([f"@{listed}"])
    assert paths == [odd]


@pytest.mark.parametrize("content", [
    [],                                # an empty folder
    ["notes.txt", "sub/clip.mp4.srt"],  # files, none of them a video
])
def test_no_video_files_exits_2_with_one_line(tmp_path, content):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in content:
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_text("not a video")
    done = run_archive(str(inputs), "--out", str(tmp_path / "out"), *CPU, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no video files or images in {inputs}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("durations, counted", [
    ([4.0, 2.0], [3.0, 2.5, 1.5]),  # the videos ran 1 s longer than their containers said
    ([4.0, None], [3.0, 2.0]),  # one duration unknown: no total, no percentage, no ETA
])
def test_the_progress_bar_never_passes_its_total(capsys, durations, counted):
    """Before: the bar went to 101% with a negative ETA and a TqdmWarning."""
    import warnings

    from stream.cli.archive import _ProgressBar, _Summary

    summary = _Summary(total=2, skipped=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TqdmWarning fails the test
        with _ProgressBar(durations, enabled=True) as progress:
            for seconds in counted:
                progress.advance(seconds)
                assert progress.total is None or progress.bar.n <= progress.total
            summary.done = 2
            progress.video_done(summary)
            assert progress.bar.n == (6.0 if progress.total else 5.0)
    shown = capsys.readouterr().err
    percentages = [int(p) for p in re.findall(r"(\d+)%", shown)]
    assert max(percentages, default=0) <= 100 and "-" not in "".join(re.findall(r"<[^,]*",
                                                                             shown))
    assert (percentages != []) == (None not in durations)
