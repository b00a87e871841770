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
