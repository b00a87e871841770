from __future__ import annotations

import pytest

from stream.files import write_atomically, write_text_atomically


def test_complete_write_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_text_atomically(target, "old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomically(target, "complete")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomically(target, crash)
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_file_system_that_refuses_directory_syncs_still_writes_durably(tmp_path,
                                                                       monkeypatch):
    """Some network and FUSE file systems answer a directory's fsync with EINVAL: the file's
    own sync is what counts, and the write goes on."""
    import errno
    import os

    real_fsync, synced = os.fsync, []

    def picky(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", picky)
    target = tmp_path / "out.json"
    write_text_atomically(target, "{}", durable=True)
    assert target.read_text() == "{}" and len(synced) == 1 and synced[0].endswith(".tmp")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    with pytest.raises(OSError, match="I/O"):  # a real failure is still one
        write_text_atomically(target, "[]", durable=True)
    assert target.read_text() == "{}"


def test_temporary_names_are_hidden_per_process_and_recognised(tmp_path):
    import os

    from stream.files import temporary_name, temporary_target

    name = temporary_name(tmp_path / "a.jsonl")
    assert name.parent == tmp_path and name.name == f".a.jsonl.{os.getpid()}.tmp"
    assert temporary_target(name.name) == "a.jsonl" and temporary_target(".x.srt.12.tmp") == "x.srt"
    assert temporary_target("a.jsonl") is None and temporary_target(".a.jsonl.old") is None
    assert temporary_name(tmp_path / "d", "old").name == f".d.{os.getpid()}.old"
