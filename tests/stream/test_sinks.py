"""Sinks: JSON Lines flushed per line, SRT/WebVTT cues merged and valid at every moment."""

from __future__ import annotations

import html
import io
import json

import pytest
import srt
import webvtt

from stream.events import DROPPED, RECONNECTING, CaptionEvent, StatusEvent
from stream.settle import Settling
from stream.sinks.base import CallbackSink
from stream.sinks.console import ConsoleSink
from stream.sinks.jsonl import JsonlSink
from stream.sinks.subtitles import SubtitleSink


def caption(index: int, text: str, pts: float | None = None, changed: bool = True):
    return CaptionEvent(stream="cam", index=index, pts=index / 10 if pts is None else pts,
                        decoded_at=0.0, emitted_at=0.0, caption=text, logprob=-0.5,
                        latency_ms=1.0, changed=changed, reset=index == 0)


TEXTS = ["a red circle", "a red circle", "a blue square", "", "a blue square", "a <b> & c"]


def read_cues(path):
    """(start, end, text) of every cue, parsed by a subtitle library (WebVTT text unescaped)."""
    if path.suffix == ".srt":
        return [(c.start.total_seconds(), c.end.total_seconds(), c.content)
                for c in srt.parse(path.read_text(encoding="utf-8"))]
    return [(c.start_in_seconds + c.start_time.milliseconds / 1000,
             c.end_in_seconds + c.end_time.milliseconds / 1000, html.unescape(c.text))
            for c in webvtt.read(str(path), strict=True)]


@pytest.mark.parametrize("suffix", ["srt", "vtt"])
def test_equal_captions_merge_into_one_cue_timed_by_pts(tmp_path, suffix):
    path = tmp_path / f"out.{suffix}"
    with SubtitleSink(path, frame_interval=0.1) as sink:
        for i, text in enumerate(TEXTS):
            sink.write(caption(i, text))
    last = "a <b> & c"
    assert read_cues(path) == [
        (0.0, 0.2, "a red circle"),
        (0.2, 0.3, "a blue square"),  # the empty caption at 0.3 ends it and starts nothing
        (0.4, 0.5, "a blue square"),
        (0.5, 0.6, last),  # the last cue lasts one frame interval
    ]
    assert sink.cues == 4


@pytest.mark.parametrize("suffix", ["srt", "vtt"])
def test_the_file_is_valid_while_still_open(tmp_path, suffix):
    """Complete cues are flushed as they close: a crash leaves a valid file."""
    path = tmp_path / f"live.{suffix}"
    sink = SubtitleSink(path, frame_interval=0.1)
    for i, text in enumerate(["one", "one", "two", "three"]):
        sink.write(caption(i, text))
    assert [c[2] for c in read_cues(path)] == ["one", "two"]  # "three" is still open
    sink.close()
    assert [c[2] for c in read_cues(path)] == ["one", "two", "three"]


def test_a_reconnect_ends_the_open_cue_and_times_never_go_back(tmp_path):
    path = tmp_path / "cut.srt"
    with SubtitleSink(path, frame_interval=0.1) as sink:
        sink.write(caption(0, "same"))
        sink.write(StatusEvent("cam", RECONNECTING, 0.0))
        sink.write(caption(1, "same", pts=5.0))
        sink.write(caption(2, "later", pts=4.0))  # a timestamp that went backwards
    cues = read_cues(path)
    assert cues[0] == (0.0, 0.1, "same")
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:], strict=False))


def test_jsonl_is_flushed_line_by_line(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    sink.write(caption(0, "a ünïcode caption"))
    sink.write(StatusEvent("cam", DROPPED, 1.0, dropped=3))
    lines = path.read_text(encoding="utf-8").splitlines()  # before close
    assert json.loads(lines[0])["caption"] == "a ünïcode caption"
    assert json.loads(lines[1]) | {"type": "status"} == json.loads(lines[1])
    assert json.loads(lines[1])["dropped"] == 3
    sink.close()
    sink.close()  # closing twice is harmless


def test_console_prints_changes_and_problems_only():
    out = io.StringIO()
    sink = ConsoleSink(out, frames=True)
    sink.write(caption(0, "first"))
    sink.write(caption(1, "first", changed=False))
    sink.write(StatusEvent("cam", RECONNECTING, 0.0, message="end of stream"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "first" in lines[0] and "[reconnecting] end of stream" in lines[1]


def test_console_prints_the_settled_events_not_the_frames():
    out = io.StringIO()
    sink = ConsoleSink(out)
    for event in Settling(settle=2, frame_interval=0.5)(
            [caption(0, "a red circle"), caption(1, "a red circle shrinks"),
             caption(2, "a red circle shrinks"), caption(3, "a blue square")]):
        sink.write(event)
    assert out.getvalue().splitlines() == [  # the last caption said once: never shown
        "    0.00s  a red circle", "    0.20s  a red circle shrinks",
        "    0.80s  [end 0.8 s] a red circle shrinks"]


def test_callback_gets_every_event():
    seen = []
    with CallbackSink(seen.append) as sink:
        sink.write(caption(0, "x"))
    assert [e.caption for e in seen] == ["x"]


def test_unknown_subtitle_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="srt or vtt"):
        SubtitleSink(tmp_path / "out.txt", frame_interval=0.1)


def test_per_stream_routes_events_and_closes_every_sink_even_after_a_failure(tmp_path):
    from stream.sinks.base import PerStream, Sink

    class Broken(Sink):
        def write(self, event):
            pass

        def close(self):
            raise OSError("disk full")

    a, b = JsonlSink(tmp_path / "a.jsonl"), JsonlSink(tmp_path / "b.jsonl")
    sinks = PerStream({"a": [Broken(), a], "b": [b]})
    for stream in ("a", "b", "a"):
        sinks.write(StatusEvent(stream=stream, kind=DROPPED, at=0.0, dropped=1))
    with pytest.raises(OSError, match="disk full"):
        sinks.close()
    assert a._file is None and b._file is None  # closed all the same
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1


def test_the_overlay_recorder_keeps_only_its_streams_captions(tmp_path, monkeypatch):
    from stream.sinks import overlay

    written = []
    monkeypatch.setattr(overlay, "write_overlay", lambda source, target, captions:
                        written.append((source, target, captions)))
    recorder = overlay.OverlayRecorder({"a": ("a.mp4", tmp_path / "a.out.mp4"),
                                        "c": ("c.mp4", tmp_path / "c.out.mp4")})
    for stream, pts in (("a", 0.0), ("b", 0.0), ("a", 0.1), ("c", 0.0)):
        recorder.write(CaptionEvent(stream, 0, pts, 0.0, 0.0, f"{stream}{pts}", 0.0, 1.0, True,
                                    False))
    recorder.write(StatusEvent(stream="a", kind=RECONNECTING, at=0.0))
    assert recorder.write_overlays(skip={"c"}) == {}
    assert written == [("a.mp4", tmp_path / "a.out.mp4", [(0.0, "a0.0"), (0.1, "a0.1")])]


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_of_a_stream_that_never_opened_leave_no_file_when_asked(tmp_path, fmt):
    """``keep_unopened=False`` (run_stream.py's files): a source that failed before opening
    leaves no subtitle file; one that opened and said nothing leaves a valid empty one."""
    failed = StatusEvent(stream="s", kind="ended", at=0.0, message="gone", dropped=0,
                         reconnects=0, error="no such file")
    never, quiet, kept = (tmp_path / f"{name}.{fmt}" for name in ("never", "quiet", "kept"))
    with SubtitleSink(never, 0.1, keep_unopened=False) as sink:
        assert never.exists()  # created at once: an unwritable path is said before the run
        sink.write(failed)
    with SubtitleSink(quiet, 0.1, keep_unopened=False) as sink:
        sink.write(StatusEvent(stream="s", kind="opened", at=0.0, message="open", dropped=0,
                               reconnects=0))
        sink.write(failed)
    with SubtitleSink(kept, 0.1) as sink:  # the default keeps it (archives replace a set)
        sink.write(failed)
    assert not never.exists()
    assert read_cues(quiet) == [] and read_cues(kept) == []
