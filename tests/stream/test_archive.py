"""Archive captioning: outputs, manifest, failures, resuming after SIGKILL, chunks, Ray."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt

from lrcn.world import WorldConfig, generate_split
from stream.archive.inputs import ArchiveError, discover
from tests.conftest import ctrl_c_as_in_a_terminal
from tests.media import write_video
from tests.models import make_world

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "shapes"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """20 short ShapesWorld videos in two folders, plus 2 corrupt files."""
    root = tmp_path_factory.mktemp("archive")
    world = make_world(root / "world", videos=20, seed=31)
    videos = sorted((world / "videos").glob("*.mp4"))
    inputs = root / "inputs"
    for i, video in enumerate(videos):
        target = inputs / ("day1" if i < 10 else "day2") / video.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, target)
    (inputs / "day2" / "random.mp4").write_bytes(os.urandom(4000))
    (inputs / "day1" / "cut.mp4").write_bytes(videos[0].read_bytes()[:300])  # header only
    return inputs


def run_archive(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_archive.py"), *args, "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------- a run the test holds up

WAIT = 120.0  # seconds: a safety net for waits on events; no test relies on it to pass


def wait_for(condition: Callable[[], object], what: str,
             process: subprocess.Popen[Any] | None = None) -> None:
    """Wait until ``condition()`` holds, failing after ``WAIT`` seconds or as soon as
    ``process`` ends (the run the test waits on cannot get past what the test holds, so its end
    is a failure of its own)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT:.0f} s")
        time.sleep(0.005)


def readers(path: Path) -> set[int]:
    """The processes that hold ``path`` open for reading (Linux: /proc/PID/fd and fdinfo)."""
    target = os.path.realpath(path)
    found = set()
    for process in os.scandir("/proc"):
        if not process.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"{process.path}/fd"):
                if os.readlink(fd.path) != target:
                    continue
                with open(f"{process.path}/fdinfo/{fd.name}") as info:
                    flags = next(int(line.split()[1], 8) for line in info
                                 if line.startswith("flags:"))
                if flags & os.O_ACCMODE == os.O_RDONLY:
                    found.add(int(process.name))
        except (OSError, StopIteration):  # gone, or not ours to look at
            continue
    return found


class PipedInput:
    """A named pipe among a run's inputs, which the test answers opening by opening.

    The archive's driver reads every input before any work starts (its fingerprint, then its
    duration), and then a worker opens it to caption it. Each opening of the pipe waits for the
    test (until :meth:`serve`, every reader waits in its opening). Then ``hold(pid)`` decides,
    given the reader's process: an opening not held gets an empty file at once (the run goes on;
    an empty input fails when it is captioned); the first one held stays open and empty, and
    its reader waits in it until :meth:`release`. While a reader is held the run cannot finish,
    however fast or slow the machine: the test acts on a run that it knows to be under way.
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.openings: list[int] = []  # the reader of each opening, in order
        self.held = threading.Event()  # set once an opening is held (or serving failed)
        self.failure: BaseException | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve(self, hold: Callable[[int], bool]) -> None:
        self._thread = threading.Thread(target=self._serve, args=(hold,), daemon=True,
                                        name=f"pipe {self.path.name}")
        self._thread.start()

    def wait_held(self, process: subprocess.Popen[Any] | None = None) -> int:
        """The process held in the pipe, once one is."""
        wait_for(self.held.is_set, f"an opening of {self.path.name} to hold", process)
        if self.failure is not None:
            raise self.failure
        return self.openings[-1]

    def release(self) -> None:
        """Stop answering; a held reader (if it is still there) sees an empty file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _serve(self, hold: Callable[[int], bool]) -> None:
        try:
            while True:
                # A reader is in the pipe once it opens for writing without waiting; the
                # previous reader has closed it by then, so this is a new opening.
                fd = self._until(self._writer)
                if fd is None:
                    return
                found = self._until(lambda: readers(self.path))  # the reader, woken: its fd
                if found is None:
                    os.close(fd)
                    return
                [pid] = found
                self.openings.append(pid)
                if hold(pid):
                    self._fd = fd
                    self.held.set()
                    return
                os.close(fd)  # the end of an empty file
                if self._until(lambda: not readers(self.path)) is None:  # seen and closed
                    return
        except BaseException as error:  # noqa: BLE001 - raised by wait_held
            self.failure = error
            self.held.set()

    def _writer(self) -> int | None:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader in the pipe
                raise
            return None

    def _until(self, found: Callable[[], Any]) -> Any:
        """``found()``'s first true value; None once :meth:`release` is called."""
        while not self._stop.is_set():
            value = found()
            if value:
                return value
            time.sleep(0.005)
        return None


@pytest.fixture
def piped():
    """``piped(path)``: a :class:`PipedInput` at ``path``, released at the end of the test."""
    pipes: list[PipedInput] = []

    def make(path: Path) -> PipedInput:
        pipes.append(PipedInput(path))
        return pipes[-1]

    yield make
    for pipe in pipes:
        pipe.release()


def listing(path: Path, *paths: Path) -> str:
    """``@path``: a list file naming ``paths`` (a folder's search finds regular files only)."""
    path.write_text("".join(f"{p}\n" for p in paths))
    return f"@{path}"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command's name (state first), or None: no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def workers_of(pid: int) -> dict[int, str]:
    """The worker processes that ``pid`` spawned (multiprocessing), by pid: their start times."""
    found = {}
    for entry in os.scandir("/proc"):
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is None or int(fields[1]) != pid:
            continue
        try:
            command = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--multiprocessing-fork" in command:
            found[int(entry.name)] = fields[19]
    return found


def running(pid: int, started: str) -> bool:
    """Whether process ``pid`` (started at ``started``, so not another one with its pid) is still
    running: not gone and not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


def ignores_ctrl_c(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = next(int(line.split()[1], 16) for line in status.splitlines()
                   if line.startswith("SigIgn:"))
    return bool(ignored & 1 << (signal.SIGINT - 1))


@pytest.fixture(scope="module")
def local_run(archive, tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    done = run_archive(str(archive), "--out", str(out), "--model", str(tiny_bundle),
                       "--device", "cpu", "--workers", "2", "--threads", "1")
    return done, out


def test_a_batch_captions_every_video_and_records_the_failures(local_run, archive):
    done, out = local_run
    assert done.returncode == 1  # two inputs failed
    records = manifest(out)
    assert [r["path"] for r in records] == sorted(r["path"] for r in records)
    assert len(records) == 22
    failed = {Path(r["path"]).name: r["error"] for r in records if r["status"] == "failed"}
    assert set(failed) == {"random.mp4", "cut.mp4"}
    assert all(name in error for name, error in failed.items())
    assert sum(r["status"] == "ok" for r in records) == 20
    assert "failed:" in done.stderr and "Traceback" not in done.stderr
    for record in records:
        assert {"path", "size", "mtime", "fingerprint", "status", "frames", "duration",
                "seconds", "error"} <= set(record)
        base = out / record["output"]
        if record["status"] != "ok":
            assert not base.with_name(base.name + ".jsonl").exists()
            continue
        lines = [json.loads(x) for x in base.with_name(base.name + ".jsonl").read_text()
                 .splitlines()]
        events = [e for e in lines if e["type"] == "caption"]
        assert len(events) == record["frames"] > 0
        assert "decoded_at" not in events[0]  # archives hold no wall-clock times
        cues = list(srt.parse(base.with_name(base.name + ".srt").read_text()))
        assert len(cues) == len(webvtt.read(str(base.with_name(base.name + ".vtt"))))
    assert (out / "day1").is_dir() and (out / "day2").is_dir()  # the inputs' folders mirrored


def test_a_run_killed_halfway_resumes_to_identical_outputs(local_run, archive, tiny_bundle,
                                                          tmp_path, piped):
    """SIGKILL while a video is being captioned, the videos before it recorded and those after
    it not started: the rerun skips the finished ones and ends with an uninterrupted run's
    outputs, byte for byte. One worker (the driver itself) takes the inputs in order; the first
    video of day2 is a named pipe that holds the run in it, so the kill cannot come too late."""
    _, reference = local_run
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    shutil.copytree(archive, inputs)
    videos = sorted(p.resolve() for p in inputs.rglob("*") if p.is_file())
    held = sorted((inputs / "day2").glob("shapes*.mp4"))[0].resolve()
    held.rename(tmp_path / "held.mp4")  # back under its name for the rerun
    pipe = piped(held)
    args = [str(inputs), listing(tmp_path / "list.txt", held), "--out", str(out), "--model",
            str(tiny_bundle), "--device", "cpu", "--workers", "1", "--threads", "1"]
    process = subprocess.Popen([sys.executable, str(ROOT / "run_archive.py"), *args,
                                "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    # The driver reads the pipe (fingerprint, duration) before any video is captioned and so
    # before any record: an opening once records exist is the one that captions it.
    path = out / "manifest.jsonl"
    pipe.serve(hold=lambda pid: path.exists() and bool(path.read_text()))
    assert pipe.wait_held(process) == process.pid
    process.kill()
    assert process.wait(WAIT) == -signal.SIGKILL
    pipe.release()
    before = {r["path"]: r for r in manifest(out)}
    assert list(before) == [str(p) for p in videos if p < held]  # 12 of the 22
    finished = [r for r in before.values() if r["status"] == "ok"]
    assert len(finished) == 10  # day1's videos; its cut.mp4 and day2's random.mp4 failed
    partial = outputs(out)
    reference_files = outputs(reference)
    # Whatever is under a final name is complete (temporaries may remain, under other names).
    assert all(reference_files[name] == data for name, data in partial.items()
               if not Path(name).name.startswith("."))

    os.replace(tmp_path / "held.mp4", held)
    again = run_archive(*args)
    assert again.returncode == 1
    after = {r["path"]: r for r in manifest(out)}
    assert len(after) == 22
    for record in finished:  # not processed again: their records are the first run's
        assert after[record["path"]] == record
    counts = again.stderr.splitlines()[1].split()
    assert int(counts[2]) == len(finished)  # the summary's "skipped"
    assert outputs(out) == reference_files  # byte for byte, and no temporaries left


def _same_phase(bundle: Path, videos: list[Path]) -> tuple[Path, Path]:
    """Two of ``videos`` whose names give the same key-frame phase."""
    from stream.archive.worker import video_phase
    from stream.model.bundle import read_bundle

    rule = read_bundle(bundle).keyframes
    by_phase: dict[int, list[Path]] = {}
    for video in videos:
        by_phase.setdefault(video_phase(rule, str(video)), []).append(video)
    return next((v[0], v[1]) for v in by_phase.values() if len(v) > 1)


def test_only_new_or_changed_inputs_are_redone(archive, tiny_bundle, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    shutil.copytree(archive, inputs)
    args = ("--out", str(out), "--model", str(tiny_bundle), "--device", "cpu", "--workers", "1",
            "--threads", "1")
    first = run_archive(str(inputs), *args)
    assert first.stderr.splitlines()[1].split()[1:4] == ["20", "0", "2"]  # captioned/skipped/failed
    # a now holds b's video: new size, mtime and fingerprint. Key frames follow the video's
    # name (its stem's phase, as a live stream's follow its id): a and b share a phase.
    a, b = _same_phase(tiny_bundle, sorted((inputs / "day1").glob("shapes*.mp4")))
    shutil.copy(b, a)
    second = run_archive(str(inputs), *args)
    # the changed video is captioned again, the 19 others skipped, the 2 corrupt retried
    assert second.stderr.splitlines()[1].split()[1:4] == ["1", "19", "2"]

    def captions(video: Path) -> list[str]:
        jsonl = out / video.relative_to(inputs).with_name(video.name + ".jsonl")
        return [e["caption"] for e in map(json.loads, jsonl.read_text().splitlines())
                if e["type"] == "caption"]

    assert captions(a) == captions(b)


@pytest.mark.slow
def test_the_ray_engine_gives_the_same_outputs_and_statuses(local_run, archive, tiny_bundle,
                                                            tmp_path):
    _, reference = local_run
    out = tmp_path / "ray"
    done = run_archive(str(archive), "--out", str(out), "--model", str(tiny_bundle),
                       "--device", "cpu", "--workers", "2", "--threads", "1",
                       "--engine", "ray")
    assert done.returncode == 1, done.stderr[-3000:]
    assert outputs(out) == outputs(reference)
    statuses = {r["path"]: (r["status"], r["frames"], r["error"]) for r in manifest(out)}
    assert statuses == {r["path"]: (r["status"], r["frames"], r["error"])
                        for r in manifest(reference)}


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    """Two ShapesWorld videos of about 30 s each (many events), for chunking."""
    root = tmp_path_factory.mktemp("long")
    generate_split(root, videos=2, seed=41, config=WorldConfig(min_events=12, max_events=12),
                   progress=False)
    return root / "videos"


def agreement(a: Path, b: Path) -> tuple[int, int]:
    same = total = 0
    for file in sorted(a.rglob("*.jsonl")):
        if file.name == "manifest.jsonl":
            continue
        x = {e["pts"]: e["caption"] for e in map(json.loads, file.read_text().splitlines())
             if e["type"] == "caption"}
        y = {e["pts"]: e["caption"] for e in map(json.loads, (b / file.relative_to(a))
                                                 .read_text().splitlines())
             if e["type"] == "caption"}
        assert set(x) == set(y)  # the same sampled frames, whatever the chunks
        same += sum(x[t] == y[t] for t in x)
        total += len(x)
    return same, total


def test_chunked_and_whole_videos_agree(long_videos, tmp_path):
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    for out, chunk in ((whole, "0"), (chunked, "8")):
        done = run_archive(str(long_videos), "--out", str(out), "--model", str(SHIPPED),
                           "--device", "cpu", "--precision", "fp32",  # the same on every CPU
                           "--chunk-seconds", chunk, "--warmup-seconds", "5")
        assert done.returncode == 0, done.stderr
    assert all(r["chunks"] >= 3 for r in manifest(chunked))
    same, total = agreement(whole, chunked)
    assert total > 400 and same / total >= 0.98
    # The events are settled over each stitched video, so chunking changes them only where it
    # changes the captions: the warm-up rebuilds the memory closely, not exactly (see the
    # README). Where the shown captions agree, the events are the whole run's but for the
    # log-probabilities (and so the most confident frame).
    whole_events, chunked_events = settled_records(whole), settled_records(chunked)
    agreeing = [video for video in whole_events
                if shown(whole_events[video]) == shown(chunked_events[video])]
    assert agreeing  # the test's videos: one of the two
    for video in agreeing:
        assert [without_logprobs(e) for e in chunked_events[video]] == [
            without_logprobs(e) for e in whole_events[video]]


def shown(records: list[dict]) -> list[str]:
    return [e["shown"] for e in records if e["type"] == "caption"]


def without_logprobs(record: dict) -> dict:
    if record["type"] == "caption":
        return {"shown": record["shown"]}
    return {k: v for k, v in record.items() if k not in ("logprob", "best_index")}


def settled_records(out: Path) -> dict[str, list[dict]]:
    """Each video's records (captions and events), as the archive wrote them."""
    return {str(file.relative_to(out)): [json.loads(line) for line in
                                         file.read_text().splitlines()]
            for file in sorted(out.rglob("*.jsonl")) if file.name != "manifest.jsonl"}


def test_inputs_by_directory_glob_and_list(archive, tmp_path):
    listed = tmp_path / "list.txt"
    day1 = sorted((archive / "day1").glob("shapes*.mp4"))
    listed.write_text("# two of them\n" + "\n".join(str(p) for p in day1[:2]) + "\n")
    paths, root = discover([f"@{listed}", str(archive / "day2" / "*.mp4")])
    assert len(paths) == 2 + 11 and root == archive
    paths, _ = discover([str(archive)])
    assert len(paths) == 22
    with pytest.raises(ArchiveError, match="no such file"):
        discover([str(tmp_path / "missing")])
    with pytest.raises(ArchiveError, match="matches no file"):
        discover([str(tmp_path / "*.mkv")])


@pytest.fixture(scope="module")
def tiny_core(tiny_bundle):
    from stream.model.bundle import open_bundle
    from stream.model.captioning import CaptionCore
    from stream.model.sessions import SessionSettings

    return CaptionCore(open_bundle(tiny_bundle, SessionSettings(device="cpu", threads=1)))


def _named_for_phase(rule, phase: int, suffix: str) -> str:
    """A file name whose video takes key-frame phase ``phase`` (its stem's, as a stream id)."""
    return next(f"clip{k}{suffix}" for k in range(1000) if rule.phase(f"clip{k}") == phase)


@pytest.mark.parametrize("suffix, container", [(".mp4", None), (".ts", "mpegts"),
                                               (".mkv", None)])
@pytest.mark.parametrize("chunk, warmup, phase", [(3.0, 1.0, 0), (2.95, 0.0, 1), (2.0, 0.5, 3)])
def test_chunks_hold_exactly_the_whole_videos_frames(tiny_core, tmp_path, suffix, container,
                                                    chunk, warmup, phase):
    """Whatever the container's seeking, the chunk length (on the sampling grid or not), a
    non-zero start time and the video's key-frame phase: the stitched chunks caption exactly
    the whole run's frames, with its key frames."""
    from stream.archive.inputs import VideoInput, plan_tasks
    from stream.archive.outputs import stitch
    from stream.archive.worker import caption_task, video_phase
    from stream.media.frames import read_sampled_frames
    from stream.model.keyframes import key_frames, sample_slot, signature

    # 10 s at 30 fps, keyframes every 2.4 s, timestamps starting at 1.4 s; the picture drifts
    # slowly enough that the model's key frames come from both the window and the change
    rule = tiny_core.keyframes
    name = _named_for_phase(rule, phase, suffix)
    path = write_video(tmp_path / name, frames=300, fps=30, container=container,
                       keyframe_every=72, first_pts=42, drift=2)
    assert video_phase(rule, str(path)) == phase
    video = VideoInput(str(path), name, 0, 0.0, "")
    whole = stitch([caption_task(tiny_core, plan_tasks(video, None, 0, 0)[0])])
    tasks = plan_tasks(video, 10.0, chunk, warmup)
    assert len(tasks) >= 4
    results = [caption_task(tiny_core, task) for task in tasks]
    assert not [r.error for r in results if r.error]
    chunked = stitch(results)
    assert [e["pts"] for e in chunked] == [e["pts"] for e in whole]
    assert [e["index"] for e in chunked] == list(range(len(whole)))
    # The key frames too: each chunk's warm-up spans the key-frame rule's (phased) window.
    assert not rule.encodes_every_frame
    assert [e["encoded"] for e in chunked] == [e["encoded"] for e in whole]
    assert 0 < sum(e["encoded"] for e in whole) < len(whole)
    # They are the rule's with the video's phase (every chunk took it, not one of its own).
    size = (tiny_core.bundle.input_size,) * 2
    frames, times = read_sampled_frames(path, tiny_core.bundle.sample_fps, size)
    slots = [sample_slot(t, tiny_core.bundle.sample_fps) for t in times]
    expected = key_frames(rule, signature(rule, tiny_core.thumbnails(frames)), slots, phase)
    assert [e["encoded"] for e in whole] == expected.tolist()
    if phase:  # which the phase changes
        assert expected.tolist() != key_frames(rule, signature(rule, tiny_core.thumbnails(
            frames)), slots).tolist()


def test_any_error_in_a_task_is_recorded_not_raised(tiny_core, tmp_path, monkeypatch):
    from stream.archive import worker
    from stream.archive.inputs import Task

    def broken(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(worker, "_caption_frames", broken)
    task = Task(str(tmp_path / "x.mp4"), 0, 1, 0.0, None, 0.0)
    result = worker.caption_task(tiny_core, task)
    assert result.error == f"{task.path}: RuntimeError: unexpected"


def test_a_manifest_cut_by_a_kill_loses_no_later_record(tmp_path):
    from stream.archive.outputs import MANIFEST, Manifest

    (tmp_path / MANIFEST).write_text('{"path": "a", "status": "ok"}\n{"path": "b", "sta')
    manifest = Manifest(tmp_path)
    manifest.append({"path": "c", "status": "ok"})
    assert set(Manifest(tmp_path).records) == {"a", "c"}  # b was cut: it is redone
    manifest.compact()
    assert [r["path"] for r in Manifest(tmp_path).records.values()] == ["a", "c"]


def test_the_same_file_named_twice_is_one_input(archive, tmp_path):
    listed = tmp_path / "list.txt"
    video = sorted((archive / "day1").glob("shapes*.mp4"))[0]
    listed.write_text(f"{video}\n{video.parent}/../day1/{video.name}\n")
    paths, _ = discover([f"@{listed}", str(archive / "day1")])
    assert len(paths) == len(set(paths)) == 11


def test_file_names_that_are_not_utf8_are_captioned(archive, tiny_bundle, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    video = sorted((archive / "day1").glob("shapes*.mp4"))[0]
    odd = os.fsdecode(b"caf\xe9.mp4")
    shutil.copy(video, inputs / odd)
    done = run_archive(str(inputs), "--out", str(tmp_path / "out"), "--model", str(tiny_bundle),
                       "--device", "cpu", "--workers", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / f"{odd}.jsonl").exists()
    [record] = manifest(tmp_path / "out")
    assert record["status"] == "ok" and record["path"].endswith(odd)


def _main(*args: str) -> int:
    from stream.cli import archive as archive_cli

    return archive_cli.main([*args, "--no-progress"])


@pytest.fixture
def two_videos(archive, tmp_path):
    inputs = tmp_path / "two"
    inputs.mkdir()
    for video in sorted((archive / "day1").glob("shapes*.mp4"))[:2]:
        shutil.copy(video, inputs / video.name)
    return inputs


def test_a_manifest_that_cannot_be_written_stops_the_run_and_its_workers(
        archive, tiny_bundle, tmp_path, monkeypatch, capsys, piped):
    """A full disk under the manifest: one line, exit 4, queued tasks cancelled (not run), and
    no worker process left behind. The second and third inputs are named pipes that hold the
    workers that take them, so the first video is the only one that can be captioned: the run
    stops on its record, whatever the machine's speed."""
    import multiprocessing
    import multiprocessing.connection
    from concurrent.futures import ProcessPoolExecutor, wait
    from concurrent.futures.process import EXTRA_QUEUED_CALLS

    from stream.archive import engines

    inputs = tmp_path / "inputs"
    shutil.copytree(archive, inputs)
    first = inputs / "a.mp4"  # the inputs' order: a.mp4, b.mp4, c.mp4, day1/..., day2/...
    shutil.copy(sorted((archive / "day1").glob("shapes*.mp4"))[0], first)
    pipes = [piped(inputs / name) for name in ("b.mp4", "c.mp4")]
    for pipe in pipes:  # the driver (this process) reads them through, the workers wait in them
        pipe.serve(hold=lambda pid: pid != os.getpid())
    before = set(multiprocessing.active_children())
    submitted, spawned = [], set()

    class Recording(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(super().submit(*args, **kwargs))
            spawned.update(set(multiprocessing.active_children()) - before)
            return submitted[-1]

    out = tmp_path / "out"
    real_fsync = os.fsync

    def full_disk(fd):  # the disk fills up under the manifest
        if os.readlink(f"/proc/self/fd/{fd}") == str(out / "manifest.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(engines, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(os, "fsync", full_disk)
    workers = 2
    assert _main(str(inputs), listing(tmp_path / "list.txt", *(p.path for p in pipes)),
                 "--out", str(out), "--model", str(tiny_bundle), "--workers", str(workers),
                 "--threads", "1") == 4
    # Ended by then, not left to end (their sentinels are ready: no wait).
    assert len(spawned) == workers
    assert len(multiprocessing.connection.wait([w.sentinel for w in spawned], 0)) == workers
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {out / 'manifest.jsonl'}: cannot write (No space left on "
                      f"device); stopped"]
    assert len(submitted) == 25
    # Each one cancelled, or failed with the pool's end (the pool's own thread marks those).
    assert not wait([f for f in submitted if not f.cancelled()], WAIT).not_done
    ran = [f for f in submitted if not f.cancelled() and f.exception() is None]
    assert [f.result().path for f in ran] == [str(first)]  # no other task was run to its end
    # None but those already handed to the workers or queued for them (the pool queues one
    # more than it has workers) had started.
    assert sum(f.cancelled() for f in submitted) >= (
        len(submitted) - len(ran) - workers - (workers + EXTRA_QUEUED_CALLS))
    for worker in spawned:
        worker.join()


def test_outputs_are_synced_before_the_manifest_vouches_for_them(two_videos, tiny_bundle,
                                                                 tmp_path, monkeypatch):
    from stream.archive import outputs
    from stream.archive.outputs import Manifest

    happened: list[tuple[str, str]] = []
    real_sync, real_append = outputs.sync, Manifest.append
    monkeypatch.setattr(outputs, "sync", lambda path: (happened.append(("sync", str(path))),
                                                       real_sync(path)))
    monkeypatch.setattr(Manifest, "append", lambda self, record: (
        happened.append(("record", record["output"])), real_append(self, record)))
    out = tmp_path / "out"
    assert _main(str(two_videos), "--out", str(out), "--model", str(tiny_bundle)) == 0
    records = [i for i, (what, _) in enumerate(happened) if what == "record"]
    assert len(records) == 2
    start = 0
    for i in records:
        name = Path(happened[i][1]).name
        synced = [path for what, path in happened[start:i] if what == "sync"]
        assert sorted(Path(p).name for p in synced[:3]) == sorted(
            f".{name}.{kind}.{os.getpid()}.tmp" for kind in ("jsonl", "srt", "vtt"))
        assert synced[3:] == [str(out)]  # the directory, after the renames
        start = i + 1


def test_recording_an_evaluation_in_the_bundle_redoes_nothing(two_videos, tiny_bundle,
                                                              tmp_path, capsys):
    from stream.model.bundle import record_evaluation

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    out = tmp_path / "out"
    assert _main(str(two_videos), "--out", str(out), "--model", str(bundle)) == 0
    written = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4.*")}
    assert len(written) == 6
    record_evaluation(bundle, "test", {"frame_exact_match": 0.5})
    capsys.readouterr()
    assert _main(str(two_videos), "--out", str(out), "--model", str(bundle)) == 0
    table = capsys.readouterr().err.splitlines()
    assert table[1].split()[:4] == ["2", "0", "2", "0"]  # videos, captioned, skipped, failed
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.mp4.*")} == written
    # What does shape the captions still counts: another vocabulary is another model.
    data = json.loads((bundle / "bundle.json").read_text())
    data["vocabulary"]["tokens"][-1] += "x"
    (bundle / "bundle.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert _main(str(two_videos), "--out", str(out), "--model", str(bundle)) == 0
    assert capsys.readouterr().err.splitlines()[1].split()[:4] == ["2", "2", "0", "0"]


def test_a_file_whose_timestamps_restart_is_captioned_whole_not_by_chunks(tiny_bundle,
                                                                          tmp_path):
    """Two recordings joined: a seek by time would land in the wrong half, so the video is not
    split, and its captions are those of the whole run, both halves on one clock."""
    from tests.test_bad_inputs import backwards

    inputs = tmp_path / "in"
    inputs.mkdir()
    backwards(inputs / "joined.ts")  # 2 x 2 s at 30 fps
    for f in inputs.glob("joined.*.ts"):
        f.unlink()
    for chunk in ("0", "1"):
        assert _main(str(inputs), "--out", str(tmp_path / chunk), "--model", str(tiny_bundle),
                     "--chunk-seconds", chunk, "--warmup-seconds", "0.5") == 0
    whole, chunked = ((tmp_path / c / "joined.ts.jsonl").read_text() for c in ("0", "1"))
    assert chunked == whole
    times = [e["pts"] for e in map(json.loads, whole.splitlines()) if e["type"] == "caption"]
    assert len(times) == 20 and times == sorted(times) and times[-1] > 3.5


def _start(inputs: list[str], out: Path, tiny_bundle: Path) -> subprocess.Popen[str]:
    """run_archive on 2 workers, in a process group of its own, Ctrl-C handled as in a
    terminal."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_archive.py"), *inputs, "--out", str(out), "--model",
         str(tiny_bundle), "--workers", "2", "--threads", "1", "--no-progress"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal)


def _ctrl_c(process: subprocess.Popen[str]) -> list[str]:
    """SIGINT to the run's process group, as a terminal's Ctrl-C; its stderr's lines once it
    has ended, with exit 130."""
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    return err.splitlines()


def test_ctrl_c_stops_the_run_and_its_workers_with_one_line(archive, tiny_bundle, tmp_path,
                                                            piped):
    """SIGINT to the process group while both workers are captioning and day1's videos are
    recorded: exit 130, one line and no traceback (not from the workers either), no process
    left, and the finished videos stay recorded. Two inputs are named pipes that hold the
    workers that take them: the first input (one worker waits in it from the start) and one
    sorted after day1 (the other worker takes it once it has captioned day1), so the run cannot
    finish before the signal, and the driver has nothing left to record when it comes."""
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    shutil.copytree(archive, inputs)
    # The first input, and the input after day1's videos ("~" sorts after their names).
    pipes = [piped(inputs / "0-pipe.mp4"), piped(inputs / "day1" / "~pipe.mp4")]
    day1 = sorted(str(p.resolve()) for p in (inputs / "day1").glob("*.mp4") if p.is_file())
    process = _start([str(inputs), listing(tmp_path / "list.txt", *(p.path for p in pipes))],
                     out, tiny_bundle)
    for pipe in pipes:
        pipe.serve(hold=lambda pid: pid != process.pid)  # the driver's reads go on
    held = {pipe.wait_held(process) for pipe in pipes}
    workers = workers_of(process.pid)
    assert held == set(workers) and len(workers) == 2
    path = out / "manifest.jsonl"
    wait_for(lambda: path.exists() and path.read_text().count("\n") == len(day1),
             "day1's records", process)
    # Ctrl-C cannot end a worker on its own (with a traceback); the driver ends them. (Asked of
    # the system: a worker that took it would often be ended by the driver before it printed.)
    assert [pid for pid in workers if not ignores_ctrl_c(pid)] == []
    lines = _ctrl_c(process)
    assert lines == [f"interrupted: {len(day1)} video(s) recorded in {path}; run again to "
                     f"continue"]
    assert [r["path"] for r in manifest(out)] == day1  # 11 of the 24
    # Both workers, each waiting in a pipe, were ended before the run ended.
    assert not [pid for pid, started in workers.items() if running(pid, started)]

    def group_gone() -> bool:  # nothing else either (the resource tracker follows the run)
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, "end of the run's process group")


@pytest.mark.parametrize("moment", ["OUT locked", "inputs read", "workers spawned",
                                    "first task handed out"])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line_and_no_traceback(two_videos, tiny_bundle,
                                                                          tmp_path, piped,
                                                                          moment):
    """SIGINT to the process group at each moment of the start that the test can see: OUT
    locked (the bundle loads, or the inputs are being read), the driver reading an input, the
    workers spawned (they start with Ctrl-C ignored, so that none prints a traceback from its
    start-up), and a worker given its first task. The first input is a named pipe that holds
    whoever reads it at that moment (the run cannot get past it): exit 130, one line, no
    traceback. (Earlier, inside the interpreter's own start-up, CPython may print and drop the
    interrupt itself; nothing there to see.)"""
    pipe = piped(two_videos / "0-pipe.mp4")  # sorts first: the first task handed out
    out = tmp_path / "out"
    process = _start([str(two_videos), listing(tmp_path / "list.txt", pipe.path)], out,
                     tiny_bundle)
    if moment == "OUT locked":  # the pipe unanswered: the driver waits in it at the latest
        lock = out / ".run_archive.lock"
        wait_for(lambda: lock.exists() and lock.read_text().split() == [str(process.pid)],
                 "lock file naming the run", process)
    elif moment == "inputs read":  # the driver's first opening: its fingerprint
        pipe.serve(hold=lambda pid: True)
        assert pipe.wait_held(process) == process.pid
    elif moment == "workers spawned":  # both, and the driver is past spawning them (it
        # ignores Ctrl-C while it spawns them, and a Ctrl-C then is lost: not tested here)
        pipe.serve(hold=lambda pid: pid != process.pid)
        wait_for(lambda: len(workers_of(process.pid)) == 2 and not ignores_ctrl_c(process.pid),
                 "workers", process)
    else:
        pipe.serve(hold=lambda pid: pid != process.pid)
        assert pipe.wait_held(process) in workers_of(process.pid)
    # Workers exist from their spawn on with Ctrl-C ignored (see the test above).
    assert [pid for pid in workers_of(process.pid) if not ignores_ctrl_c(pid)] == []
    [line] = _ctrl_c(process)
    assert line.startswith("interrupted")
