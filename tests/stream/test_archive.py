"""Archive captioning: outputs, manifest, failures, resuming after SIGKILL, chunks, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
        events = [json.loads(x) for x in base.with_name(base.name + ".jsonl").read_text()
                  .splitlines()]
        assert len(events) == record["frames"] > 0
        assert "decoded_at" not in events[0]  # archives hold no wall-clock times
        cues = list(srt.parse(base.with_name(base.name + ".srt").read_text()))
        assert len(cues) == len(webvtt.read(str(base.with_name(base.name + ".vtt"))))
    assert (out / "day1").is_dir() and (out / "day2").is_dir()  # the inputs' folders mirrored


def test_a_run_killed_halfway_resumes_to_identical_outputs(local_run, archive, tiny_bundle,
                                                          tmp_path):
    _, reference = local_run
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "run_archive.py"), str(archive), "--out", str(out),
               "--model", str(tiny_bundle), "--device", "cpu", "--workers", "1",
               "--threads", "1", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    path = out / "manifest.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= 6:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    before = {r["path"]: r for r in manifest(out)}
    finished = [r for r in before.values() if r["status"] == "ok"]
    assert 0 < len(before) < 22
    partial = outputs(out)
    reference_files = outputs(reference)
    # Whatever is under a final name is complete (temporaries may remain, under other names).
    assert all(reference_files[name] == data for name, data in partial.items()
               if not Path(name).name.startswith("."))

    again = run_archive(str(archive), "--out", str(out), "--model", str(tiny_bundle),
                        "--device", "cpu", "--workers", "1", "--threads", "1")
    assert again.returncode == 1
    after = {r["path"]: r for r in manifest(out)}
    assert len(after) == 22
    for record in finished:  # not processed again: their records are the first run's
        assert after[record["path"]] == record
    counts = again.stderr.splitlines()[1].split()
    assert int(counts[2]) == len(finished)  # the summary's "skipped"
    assert outputs(out) == reference_files  # byte for byte, and no temporaries left


def test_only_new_or_changed_inputs_are_redone(archive, tiny_bundle, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    shutil.copytree(archive, inputs)
    args = ("--out", str(out), "--model", str(tiny_bundle), "--device", "cpu", "--workers", "1",
            "--threads", "1")
    first = run_archive(str(inputs), *args)
    assert first.stderr.splitlines()[1].split()[1:4] == ["20", "0", "2"]  # captioned/skipped/failed
    a, b = sorted((inputs / "day1").glob("shapes*.mp4"))[:2]
    shutil.copy(b, a)  # a now holds b's video: new size, mtime and fingerprint
    second = run_archive(str(inputs), *args)
    # the changed video is captioned again, the 19 others skipped, the 2 corrupt retried
    assert second.stderr.splitlines()[1].split()[1:4] == ["1", "19", "2"]

    def captions(video: Path) -> list[str]:
        jsonl = out / video.relative_to(inputs).with_name(video.name + ".jsonl")
        return [json.loads(line)["caption"] for line in jsonl.read_text().splitlines()]

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
        x = {e["pts"]: e["caption"] for e in map(json.loads, file.read_text().splitlines())}
        y = {e["pts"]: e["caption"] for e in map(json.loads, (b / file.relative_to(a))
                                                 .read_text().splitlines())}
        assert set(x) == set(y)  # the same sampled frames, whatever the chunks
        same += sum(x[t] == y[t] for t in x)
        total += len(x)
    return same, total


def test_chunked_and_whole_videos_agree(long_videos, tmp_path):
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    for out, chunk in ((whole, "0"), (chunked, "8")):
        done = run_archive(str(long_videos), "--out", str(out), "--model", str(SHIPPED),
                           "--device", "cpu", "--chunk-seconds", chunk, "--warmup-seconds", "5")
        assert done.returncode == 0, done.stderr
    assert all(r["chunks"] >= 3 for r in manifest(chunked))
    same, total = agreement(whole, chunked)
    assert total > 400 and same / total >= 0.98


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


@pytest.mark.parametrize("name, container", [("clip.mp4", None), ("clip.ts", "mpegts"),
                                             ("clip.mkv", None)])
@pytest.mark.parametrize("chunk, warmup", [(3.0, 1.0), (2.95, 0.0), (2.0, 0.5)])
def test_chunks_hold_exactly_the_whole_videos_frames(tiny_core, tmp_path, name, container,
                                                    chunk, warmup):
    """Whatever the container's seeking, the chunk length (on the sampling grid or not) and a
    non-zero start time: the stitched chunks caption exactly the whole run's frames."""
    from stream.archive.inputs import VideoInput, plan_tasks
    from stream.archive.outputs import stitch
    from stream.archive.worker import caption_task

    # 10 s at 30 fps, keyframes every 2.4 s, timestamps starting at 1.4 s; the picture drifts
    # slowly enough that the model's key frames come from both the window and the change
    path = write_video(tmp_path / name, frames=300, fps=30, container=container,
                       keyframe_every=72, first_pts=42, drift=2)
    video = VideoInput(str(path), name, 0, 0.0, "")
    whole = stitch([caption_task(tiny_core, plan_tasks(video, None, 0, 0)[0])])
    tasks = plan_tasks(video, 10.0, chunk, warmup)
    assert len(tasks) >= 4
    results = [caption_task(tiny_core, task) for task in tasks]
    assert not [r.error for r in results if r.error]
    chunked = stitch(results)
    assert [e["pts"] for e in chunked] == [e["pts"] for e in whole]
    assert [e["index"] for e in chunked] == list(range(len(whole)))
    # The key frames too: each chunk's warm-up spans the key-frame rule's window.
    assert not tiny_core.keyframes.encodes_every_frame
    assert [e["encoded"] for e in chunked] == [e["encoded"] for e in whole]
    assert 0 < sum(e["encoded"] for e in whole) < len(whole)


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
        archive, tiny_bundle, tmp_path, monkeypatch, capsys):
    """A full disk under the manifest: one line, exit 4, queued tasks cancelled (not run), and
    no worker process left behind."""
    import errno
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from stream.archive import engines

    submitted = []

    class Recording(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(super().submit(*args, **kwargs))
            return submitted[-1]

    out = tmp_path / "out"
    real_fsync = os.fsync

    def full_disk(fd):  # the disk fills up under the manifest
        if os.readlink(f"/proc/self/fd/{fd}") == str(out / "manifest.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(engines, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(os, "fsync", full_disk)
    assert _main(str(archive), "--out", str(out), "--model", str(tiny_bundle), "--workers", "2",
                 "--threads", "1") == 4
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {out / 'manifest.jsonl'}: cannot write (No space left on "
                      f"device); stopped"]
    assert len(submitted) == 22 and all(f.done() for f in submitted)
    assert sum(f.cancelled() for f in submitted) >= 11  # at most a few had started
    # Ended (their sentinels said so); the pool's manager thread may still be reaping one.
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


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
    times = [json.loads(line)["pts"] for line in whole.splitlines()]
    assert len(times) == 20 and times == sorted(times) and times[-1] > 3.5


def test_ctrl_c_stops_the_run_and_its_workers_with_one_line(archive, tiny_bundle, tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C: exit 130, one line and no traceback
    (not from the workers either), no process left, and the finished videos stay recorded."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_archive.py"), str(archive), "--out", str(out),
         "--model", str(tiny_bundle), "--workers", "2", "--threads", "1", "--no-progress"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal)
    path = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (path.exists() and path.read_text()):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the workers go with the driver
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker processes outlived the interrupted run")
    assert 0 < len(manifest(out)) < 22


@pytest.mark.parametrize("delay", [1.0, 1.5, 2.0])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line_and_no_traceback(archive, tiny_bundle,
                                                                          tmp_path, delay):
    """While the bundle opens or the workers start (they are spawned with Ctrl-C ignored, so
    that none prints a traceback from its start-up). Earlier, inside the interpreter's own
    start-up, CPython may print and drop the interrupt itself."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_archive.py"), str(archive), "--out", str(tmp_path),
         "--model", str(tiny_bundle), "--workers", "2", "--threads", "1", "--no-progress"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    # 1: it had already finished (two of the archive's inputs are broken on purpose); -SIGINT:
    # finished, and the signal came while the interpreter was exiting
    assert process.returncode in (1, 130, -signal.SIGINT), err
    assert "Traceback" not in err, err
