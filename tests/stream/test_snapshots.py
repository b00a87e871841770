"""--snapshots: each event's most confident frame as a JPEG, named in its end record."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.events import END, CaptionEvent, SettledEvent
from stream.settle import Settling
from stream.sinks.snapshots import Snapshots

ROOT = Path(__file__).resolve().parents[2]


def shade(value: int) -> np.ndarray:
    return np.full((32, 32, 3), value, np.uint8)


def test_the_most_confident_frame_that_said_the_caption_is_written_when_the_event_ends(
        tmp_path):
    from PIL import Image

    snapshots = Snapshots(tmp_path)
    settling = Settling(settle=2, frame_interval=0.1)
    said = [("a red circle", -2.0), ("a red circle", -0.1), ("a red circle", -1.0),
            ("a blue square", -0.01),  # said once: not the event's caption, never shown
            ("a red circle", -0.5), ("a green star", -0.3), ("a green star", -0.2)]
    out = []
    for index, (caption, logprob) in enumerate(said):
        snapshots.frame("cam", shade(20 * index), index / 10)  # before its caption, as engines do
        event = CaptionEvent("cam", index, index / 10, 0.0, 0.0, caption, logprob, 0.0,
                             changed=True, reset=index == 0)
        out += snapshots.take(settling.push(event), settling)
    out += snapshots.take(settling.finish(), settling)
    ends = [e for e in out if isinstance(e, SettledEvent) and e.type == END]
    assert [(e.id, e.best_index) for e in ends] == [("cam/1", 1), ("cam/2", 6)]
    for end, index in zip(ends, (1, 6), strict=True):
        assert end.snapshot == str(tmp_path / "cam" / f"{end.id.split('/')[1]}.jpg")
        pixels = np.asarray(Image.open(end.snapshot))
        assert pixels.shape == (32, 32, 3) and abs(pixels.mean() - 20 * index) < 3
        assert json.loads(json.dumps(end.to_json()))["snapshot"] == end.snapshot
    assert snapshots.written == 2 and not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.timeout(120)
def test_run_stream_writes_a_snapshot_per_event_of_the_sample(tmp_path):
    from PIL import Image

    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--quiet",
                           "--snapshots", str(tmp_path / "snaps"), "--jsonl",
                           str(tmp_path / "out.jsonl")], capture_output=True, text=True,
                          timeout=100, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    ends = [e for e in records if e["type"] == "end"]
    assert len(ends) >= 4
    assert sorted(e["snapshot"] for e in ends) == sorted(
        str(p) for p in (tmp_path / "snaps").rglob("*.jpg"))
    for end in ends:
        with Image.open(io.BytesIO(Path(end["snapshot"]).read_bytes())) as image:
            assert image.format == "JPEG" and image.width == image.height >= 64
