"""The archive's output folder: one run at a time (a lock on OUT), temporaries removed only when
their owner is gone and only the archive's own, a video's outputs accepted only as the set its
manifest record vouches for (SIGKILL between the renames), earlier outputs never deleted.

The videos are short ShapesWorld clips captioned by the shipped bundle (no training needed).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models import make_world

ROOT = Path(__file__).resolve().parents[2]
RUN_ARCHIVE = ROOT / "run_archive.py"
CPU = ("--model", str(ROOT / "models" / "shapes"), "--device", "cpu", "--workers", "1",
       "--threads", "1", "--no-progress")
LOCK = ".run_archive.lock"  # stream.archive.outputs.LOCK, spelled out: the old code has none
EXIT_BUSY = 5

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """Two different short videos."""
    world = make_world(tmp_path_factory.mktemp("archive_out"), videos=2, seed=61)
    a, b = sorted((world / "videos").glob("*.mp4"))
    return a, b


@pytest.fixture
def one_clip(clips, tmp_path) -> Path:
    """An inputs folder holding clips[0] as clip.mp4."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy2(clips[0], inputs / "clip.mp4")
    return inputs


def run_here(*args: str) -> int:
    from stream.cli import archive as cli

    return cli.main([*args, *CPU])


def run_apart(*args: str, script: Path = RUN_ARCHIVE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args, *CPU], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (temporaries and lock included) but the manifest."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}


def counts(stderr: str) -> dict[str, int]:
    lines = stderr.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["videos", "captioned"])
    return dict(zip(("videos", "captioned", "skipped", "failed"),
                    map(int, lines[header + 1].split()[:4]), strict=True))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_second_run_on_a_locked_out_exits_at_once_and_touches_nothing(one_clip, tmp_path,
                                                                        capsys):
    """The first run is this test: it holds OUT's lock, as a run does, and has a temporary in
    OUT. The second (with --force: it would rewrite everything) exits with its own code and one
    line naming OUT and the first run's pid; the first run's files are as they were."""
    out = tmp_path / "out"
    assert run_here(str(one_clip), "--out", str(out)) == 0
    before = {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
              for p in out.rglob("*") if p.is_file()}
    assert len(before) == 4  # three outputs and the manifest; the lock went with its run
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        temporary = out / f".clip.mp4.jsonl.{os.getpid()}.tmp"  # its owner is alive
        temporary.write_text("being written\n")
        second = run_apart(str(one_clip), "--out", str(out), "--force")
        assert second.returncode == EXIT_BUSY, second.stderr
        assert second.stderr.splitlines() == [
            f"error: {out} is in use by another run (pid {os.getpid()}); wait for it to end "
            f"or choose another --out"]
        assert temporary.read_text() == "being written\n"
        assert (out / LOCK).read_text() == f"{os.getpid()}\n"
        assert {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
                for p in out.rglob("*") if p.is_file() and p not in (temporary, out / LOCK)
                } == before
    finally:
        os.close(fd)  # the first run ends (without cleaning up: as if killed)
    # Now the folder is free: a run goes ahead, removes the dead run's temporary and its lock.
    capsys.readouterr()
    assert run_here(str(one_clip), "--out", str(out)) == 0
    assert counts(capsys.readouterr().err)["skipped"] == 1
    assert sorted(files(out)) == ["clip.mp4.jsonl", "clip.mp4.srt", "clip.mp4.vtt"]
    from stream.cli.archive import get_args_parser

    assert "5 another run is using OUT" in " ".join(get_args_parser().format_help().split())


# Run as run_archive.py, killed with SIGKILL right after the first rename of a video's outputs.
_KILLED_BETWEEN_RENAMES = """
import os, runpy, signal, sys

real_replace = os.replace

def replace(source, target, *args, **kwargs):
    real_replace(source, target, *args, **kwargs)
    name = os.path.basename(os.fspath(target))
    if name.endswith((".jsonl", ".srt", ".vtt")) and name != "manifest.jsonl":
        os.kill(os.getpid(), signal.SIGKILL)  # the set's first file renamed, not the others

os.replace = replace
sys.argv = [{run_archive!r}, *sys.argv[1:]]
runpy.run_path({run_archive!r}, run_name="__main__")
"""


def test_a_sigkill_between_the_renames_of_a_set_redoes_the_video(clips, one_clip, tmp_path,
                                                                 capsys):
    """clip.mp4 captioned; then replaced by another video, whose run is killed between the
    renames (a new JSONL next to the old SRT and VTT); then restored as it was (a restore from a
    backup: same size, mtime and content). The old record matches the video but not the mixed
    set: the rerun redoes the video, and its outputs are a clean run's."""
    out = tmp_path / "out"
    clip = one_clip / "clip.mp4"
    assert run_here(str(one_clip), "--out", str(out)) == 0
    clean = files(out)
    assert sorted(clean) == ["clip.mp4.jsonl", "clip.mp4.srt", "clip.mp4.vtt"]
    kept = clip.stat()

    shutil.copy(clips[1], clip)
    script = tmp_path / "killed_between_renames.py"
    script.write_text(_KILLED_BETWEEN_RENAMES.format(run_archive=str(RUN_ARCHIVE)))
    killed = run_apart(str(one_clip), "--out", str(out), script=script)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    mixed = files(out)
    assert mixed["clip.mp4.jsonl"] != clean["clip.mp4.jsonl"]  # the other video's
    assert mixed["clip.mp4.srt"] == clean["clip.mp4.srt"]  # not renamed yet

    shutil.copy(clips[0], clip)
    os.utime(clip, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    capsys.readouterr()
    assert run_here(str(one_clip), "--out", str(out)) == 0
    assert counts(capsys.readouterr().err)["captioned"] == 1
    assert files(out) == clean  # byte for byte; no temporary, no lock left
    [record] = records(out)
    assert record["status"] == "ok"


def test_a_run_that_fails_a_video_keeps_its_earlier_complete_outputs(one_clip, tmp_path,
                                                                     monkeypatch, capsys):
    """The video's temporaries vanish before their rename (as another run's clean-up did): the
    video fails, but the complete outputs of the earlier run stay under their names."""
    out = tmp_path / "out"
    assert run_here(str(one_clip), "--out", str(out)) == 0
    earlier = files(out)
    real_replace = os.replace

    def vanished(source, target, *args, **kwargs):
        if re.fullmatch(r"\.clip\.mp4\.(jsonl|srt|vtt)\.\d+\.tmp", Path(source).name):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(source))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", vanished)
    assert run_here(str(one_clip), "--out", str(out), "--force") == 1
    [record] = records(out)
    assert record["status"] == "failed" and "cannot write outputs" in record["error"]
    assert files(out) == earlier
    monkeypatch.undo()
    capsys.readouterr()
    assert run_here(str(one_clip), "--out", str(out)) == 0  # a failed record: redone
    assert counts(capsys.readouterr().err)["captioned"] == 1
    assert files(out) == earlier


def test_only_the_archives_own_files_in_out_are_removed(one_clip, tmp_path):
    """--out at a folder that holds other things (a mistyped --out ~): files named like
    temporaries that are not the archive's, in OUT and in its subfolders, stay; only a
    temporary of this run's own outputs left by a killed run goes."""
    out = tmp_path / "home"
    unrelated = {
        "notes.txt": b"mine\n",
        ".bashrc.42.tmp": b"an editor's temporary\n",
        ".other.mp4.srt.7.tmp": b"a video this run does not know\n",
        ".manifest.jsonl.bak": b"not a temporary of the manifest\n",
        "sub/.draft.txt.123.tmp": b"draft\n",
        "sub/deep/.clip.mp4.jsonl.99.tmp": b"not where clip.mp4's outputs go\n",
        "sub/.cache/data.bin": b"\x00\x01",
    }
    for name, data in unrelated.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    stale = out / f".clip.mp4.vtt.{2**22 + 1}.tmp"  # above any pid: its owner is gone
    stale.write_text("cut short\n")
    assert run_here(str(one_clip), "--out", str(out)) == 0
    after = files(out)
    assert {name: after.get(name) for name in unrelated} == unrelated
    assert not stale.exists()
    assert set(after) - set(unrelated) == {"clip.mp4.jsonl", "clip.mp4.srt", "clip.mp4.vtt"}
