"""Bad inputs through run_stream.py: each is either captioned or one clear line naming it,
never a traceback, and a good source next to it is captioned in full."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import write_image, write_video

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"

pytestmark = pytest.mark.timeout(300)


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        samples = np.zeros((1, 48000), np.float32)
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def no_frames(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return path


def backwards(path: Path) -> Path:
    """Timestamps that jump back to 0 halfway: two MPEG-TS segments joined byte for byte (what
    a camera's recorder does when it restarts)."""
    first = write_video(path.with_suffix(".a.ts"), 60, fps=30, container="mpegts")
    second = write_video(path.with_suffix(".b.ts"), 60, fps=30, container="mpegts", seed=1)
    path.write_bytes(first.read_bytes() + second.read_bytes())
    return path


def variable_rate(path: Path) -> Path:
    """4 s of frames 20 to 80 ms apart (a variable frame rate), in Matroska."""
    from fractions import Fraction

    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        while pts < 4000:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), pts % 256, np.uint8),
                                               "rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
            pts += int(rng.integers(20, 81))
        out.mux(stream.encode())
    return path


def unknown_codec(path: Path) -> Path:
    """A Matroska file whose video codec id FFmpeg does not know (no decoder)."""
    source = write_video(path.with_suffix(".src.mkv"), 30)
    path.write_bytes(source.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/XXX/XXX"))
    return path


def rgba_png(path: Path) -> Path:
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    av.VideoFrame.from_ndarray(rgba, format="rgba").save(str(path))
    return path


def cut(path: Path, fraction: float, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def garbled(path: Path, out: Path) -> Path:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 2
    data[middle:middle + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


# name -> (how to make it, "ok" when it must be captioned, else "error")
CASES = {
    "audio-only.m4a": (lambda p: audio_only(p), "error"),
    "zero-frames.mp4": (lambda p: no_frames(p), "error"),
    "cut-10pct.mp4": (lambda p: cut(GOOD, 0.10, p), "error"),  # the moov atom is at the end
    "cut-in-moov.mp4": (lambda p: cut(GOOD, 0.995, p), "error"),
    "garbled.mkv": (lambda p: garbled(write_video(p.with_suffix(".src.mkv"), 90), p), "ok"),
    "backwards.ts": (lambda p: backwards(p), "ok"),
    "variable-rate.mkv": (lambda p: variable_rate(p), "ok"),
    "tiny-16x16.mp4": (lambda p: write_video(p, 30, size=(16, 16)), "ok"),
    "huge-8192.mp4": (lambda p: write_video(p, 2, size=(8192, 8192)), "ok"),
    "alpha.png": (lambda p: rgba_png(p), "ok"),
    "gray.png": (lambda p: write_image(p), "ok"),
    "text.mp4": (lambda p: p.write_text("not a video"), "error"),
    "empty.mp4": (lambda p: p.write_bytes(b""), "error"),
    "unknown-codec.mkv": (lambda p: unknown_codec(p), "error"),
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    paths = []
    for name, (make, _) in CASES.items():
        make(folder / name)
        paths.append(str(folder / name))
    out = folder / "out"
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), str(GOOD), *paths,
                           "--quiet", "--jsonl", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=280)
    return done, folder, out


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_is_captioned_or_one_clear_line(bad_run, name):
    done, folder, out = bad_run
    assert done.returncode == 1 and "Traceback" not in done.stderr
    stream = Path(name).stem
    events = [json.loads(line) for line in (out / f"{stream}.jsonl").read_text().splitlines()]
    ended = events[-1]
    assert ended["kind"] == "ended"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    if CASES[name][1] == "ok":
        assert ended["error"] is None and any(e["type"] == "caption" for e in events)
        pts = [e["pts"] for e in events if e["type"] == "caption"]
        assert pts == sorted(pts)
        if name == "backwards.ts":  # both halves captioned, time keeps going forward
            assert len(pts) == 40
        if name == "variable-rate.mkv":  # sampled by time: one frame per 0.1 s slot
            gaps = np.diff(pts)
            assert 38 <= len(pts) <= 40 and gaps.max() < 0.2
    else:
        assert ended["error"] and str(folder / name) in ended["error"]
        assert f"error: {ended['error']}" in errors and "\n" not in ended["error"]


def test_the_good_source_beside_them_is_captioned_in_full(bad_run):
    _, _, out = bad_run
    events = [json.loads(line) for line in (out / f"{GOOD.stem}.jsonl").read_text().splitlines()]
    assert [e["index"] for e in events if e["type"] == "caption"] == list(range(89))


def test_an_rtsp_server_that_accepts_and_says_nothing_times_out_and_gives_up(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(4)],
                     daemon=True).start()
    port = server.getsockname()[1]
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"),
                           f"rtsp://user:pw@127.0.0.1:{port}/cam", "--timeout", "1",
                           "--reconnect-attempts", "1", "--reconnect-delay", "0.1", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    server.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rtsp://***@127.0.0.1:") and "gave up" in last
    assert "pw" not in done.stderr.replace("--", "")


def test_a_nonexistent_path_is_exit_1_and_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "nope.mp4", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: nope.mp4: no such file"
    assert os.path.exists(GOOD)
