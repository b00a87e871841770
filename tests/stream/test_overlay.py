"""Burned-in captions: drawn where captions exist, timing and frame count kept, audio copied."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream.sinks.overlay import write_overlay

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"


def frames_of(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time or 0) for f in frames]


def with_audio(path: Path, seconds: float = 2.0) -> Path:
    """A 320x240 25 fps video with a sine-wave AAC track."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        for i in range(int(seconds * 25)):
            rgb = np.full((240, 320, 3), 90, np.uint8)
            rgb[:, (i * 4) % 320:(i * 4) % 320 + 20] = 200
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        t = np.arange(int(seconds * 48000)) / 48000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024][None]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


def flat_segment(path: Path, frames: int = 60, fps: int = 30, sound: bool = False) -> Path:
    """An MPEG-TS recording of flat grey 160x120 frames whose timestamps start at 0 (with a
    sine-wave AAC track as long as the video if ``sound``)."""
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("aac", rate=48000) if sound else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 100, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        if audio is not None:
            t = np.arange(frames * 48000 // fps) / 48000
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for begin in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[begin:begin + 1024][None],
                                                   format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, begin
                out.mux(audio.encode(chunk))
            out.mux(audio.encode())
        out.mux(stream.encode())
    return path


def test_captions_are_drawn_where_they_exist_with_timing_kept(tmp_path):
    out = tmp_path / "burned.mp4"
    captions = [(0.0, ""), (1.0, "a red circle shrinks"), (4.0, "")]
    write_overlay(SAMPLE, out, captions)
    source, source_times = frames_of(SAMPLE)
    burned, burned_times = frames_of(out)
    assert len(burned) == len(source) and burned_times == pytest.approx(source_times, abs=1e-3)
    for frame, original, time in zip(burned, source, source_times, strict=True):
        height = frame.shape[0]
        bottom = np.abs(frame[-height // 4:].astype(int) - original[-height // 4:]).mean()
        top = np.abs(frame[: height // 2].astype(int) - original[: height // 2]).mean()
        assert top < 3  # only re-encoding noise above the text
        if 1.0 + 0.05 < time < 4.0 - 0.05:
            assert bottom > 8, time  # the caption is there
        elif time < 1.0 - 0.05 or time > 4.0 + 0.05:
            assert bottom < 3, time  # no caption, nothing drawn


def test_audio_is_copied(tmp_path):
    source = with_audio(tmp_path / "talk.mp4")
    out = write_overlay(source, tmp_path / "burned.mp4", [(0.0, "hello")])
    with av.open(str(source)) as a, av.open(str(out)) as b:
        packets = [sum(1 for p in c.demux(c.streams.audio[0]) if p.size) for c in (a, b)]
        assert b.streams.audio[0].codec_context.name == "aac"
    assert packets[0] == packets[1] > 0
    assert len(frames_of(out)[0]) == 50


def test_run_stream_writes_the_overlay_and_refuses_live_sources(tmp_path):
    out = tmp_path / "sample.mp4"
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--quiet", "--overlay",
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    assert len(frames_of(out)[0]) == len(frames_of(SAMPLE)[0])
    live = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "lavfi:testsrc2",
                           "--overlay", str(tmp_path / "x.mp4")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert live.returncode == 2 and "not a video file" in live.stderr.splitlines()[-1]


def test_a_stream_without_timestamps_keeps_its_timing(tmp_path):
    raw = tmp_path / "raw.h264"
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 4, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    out_path = write_overlay(raw, tmp_path / "raw.mp4", [(0.0, "a"), (1.0, "b")])
    frames, times = frames_of(out_path)
    assert len(frames) == 50 and times[-1] == pytest.approx(49 / 25, abs=1e-3)


def test_unsupported_output_containers_are_one_clear_error(tmp_path):
    from stream.errors import MediaError

    with pytest.raises(MediaError, match="write the overlay as"):
        write_overlay(SAMPLE, tmp_path / "x.webm", [])
    assert not list(tmp_path.iterdir())


def test_timestamps_that_restart_keep_the_captions_clock(tmp_path):
    """Two recordings joined (timestamps go back to 0 halfway): the second half gets the
    captions of its time on the stream's clock, as sampling times them, not those of the
    first half; the overlay's own timestamps keep increasing."""
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(flat_segment(tmp_path / f"{k}.ts").read_bytes() for k in "ab"))
    out = write_overlay(joined, tmp_path / "burned.mp4", [(0.0, ""), (2.5, "after the restart")])
    source, _ = frames_of(joined)
    burned, times = frames_of(out)
    assert len(burned) == len(source) == 120
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    drawn = [np.abs(b[-30:].astype(int) - s[-30:]).mean() > 8
             for b, s in zip(burned, source, strict=True)]
    # Clock times: frame i at i / 30 s (the second half carries on after the first).
    assert drawn == [i / 30 >= 2.5 - 1e-6 for i in range(120)]


def test_the_sound_of_joined_recordings_carries_on_with_the_picture(tmp_path):
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(flat_segment(tmp_path / f"{k}.ts", sound=True).read_bytes()
                                for k in "ab"))
    out = write_overlay(joined, tmp_path / "burned.mp4", [(0.0, "a"), (2.5, "b")])
    with av.open(str(joined)) as a, av.open(str(out)) as b:
        packets = [[p for p in c.demux(c.streams.audio[0]) if p.size] for c in (a, b)]
        times = [float(p.dts * p.time_base) for p in packets[1]]
    _, video = frames_of(out)
    assert len(packets[1]) == len(packets[0]) > 0 and len(video) == 120
    assert all(y > x for x, y in zip(times, times[1:], strict=False))
    # Sound and picture end together, 4 s after they began (not 2 s: the second half follows).
    assert times[-1] - times[0] == pytest.approx(video[-1] - video[0], abs=0.1)
    assert video[-1] - video[0] == pytest.approx(119 / 30, abs=1e-3)
