"""The pipeline end to end on real media: batching, backpressure, drops, failures, shutdown."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import pytest

from lrcn.data import load_dataset
from stream.api import caption_stream
from stream.engines.local import Pipeline
from stream.engines.mailbox import FrameItem
from stream.engines.settings import PipelineSettings
from stream.errors import StreamError
from stream.events import DROPPED, ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.frames import read_sampled_frames
from stream.media.sources import Source, parse_sources, stream_ids
from stream.model.bundle import open_bundle
from stream.model.captioning import CaptionCore
from stream.model.sessions import SessionSettings
from tests.media import write_image, write_video

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return open_bundle(tiny_bundle, SessionSettings(device="cpu"))


@pytest.fixture(scope="module")
def videos(tiny_world):
    return [str(item.path) for item in load_dataset(tiny_world).items]


def captions_of(events):
    by_stream: dict[str, list[CaptionEvent]] = {}
    for event in events:
        if isinstance(event, CaptionEvent):
            by_stream.setdefault(event.stream, []).append(event)
    return by_stream


def statuses(events, kind):
    return [e for e in events if isinstance(e, StatusEvent) and e.kind == kind]


def test_streams_batched_together_caption_as_each_alone(loaded, videos):
    """Micro-batching across streams changes nothing: every frame, in order, same captions."""
    settings = PipelineSettings(max_batch=4, max_wait_ms=50)
    events = list(caption_stream(videos, loaded, settings=settings))
    got = captions_of(events)
    core = CaptionCore(loaded)
    rule = loaded.bundle.keyframes
    size = (loaded.bundle.input_size,) * 2
    assert sorted(got) == sorted(stream_ids(videos))
    # Each stream takes its id's key-frame phase: here not all the same.
    assert len({rule.phase(stream) for stream in stream_ids(videos)}) > 1
    for path, stream in zip(videos, stream_ids(videos), strict=True):
        frames, times = read_sampled_frames(path, loaded.bundle.sample_fps, size)
        steps = [core.step(f[None], ["alone"], [t == 0], phases=[rule.phase(stream)])[0]
                 for t, f in enumerate(frames)]
        alone = [c.text for c in steps]
        core.forget("alone")
        assert [e.index for e in got[stream]] == list(range(len(frames)))
        assert [e.pts for e in got[stream]] == pytest.approx(times.tolist(), abs=1e-6)
        assert [e.caption for e in got[stream]] == alone
        assert [e.encoded for e in got[stream]] == [c.encoded for c in steps]
        assert got[stream][0].reset and not any(e.reset for e in got[stream][1:])
        changes = [e.changed for e in got[stream]]
        assert changes == [True] + [a != b for a, b in zip(alone, alone[1:], strict=False)]
    assert len(statuses(events, ENDED)) == len(videos)
    assert all(e.error is None for e in statuses(events, ENDED))


def test_thumbnails_from_the_decoders_caption_as_computed_by_the_worker(loaded, videos,
                                                                        monkeypatch):
    """The decoder threads compute each frame's thumbnail and signature; captions, their
    log-probabilities and the key frames are bit for bit those of the worker computing them."""
    given = []
    step = CaptionCore.step

    def spy(self, *args, **kwargs):
        given.append(kwargs.get("thumbs") is not None and kwargs.get("signatures") is not None)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(CaptionCore, "step", spy)
    settings = PipelineSettings(max_batch=4, max_wait_ms=50)
    runs = []
    for decoders_compute in (True, False):
        given.clear()
        pipeline = Pipeline(parse_sources(videos[:3]), loaded, settings)
        for decoder in pipeline.decoders.values():
            assert decoder.signals is not None
            decoder.signals = decoder.signals if decoders_compute else None
        got = captions_of(pipeline)
        assert given and all(g == decoders_compute for g in given)
        runs.append({stream: [(e.index, e.pts, e.caption, e.logprob, e.encoded) for e in events]
                     for stream, events in got.items()})
    assert runs[0] == runs[1]
    flags = [e[4] for events in runs[0].values() for e in events]
    assert len(runs[0]) == 3 and 0 < sum(flags) < len(flags)


def test_a_lone_stream_leaves_the_signals_to_the_worker(loaded, videos, monkeypatch):
    """With one stream its decoder thread is the critical path, so the worker computes the
    thumbnails and signatures; a second stream moves them to the decoder threads."""
    given = []
    step = CaptionCore.step

    def spy(self, *args, **kwargs):
        given.append(kwargs.get("thumbs") is not None)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(CaptionCore, "step", spy)
    settings = PipelineSettings(max_batch=4, max_wait_ms=50)
    for sources, decoders_compute in ((videos[:1], False), (videos[:2], True)):
        given.clear()
        captions_of(Pipeline(parse_sources(sources), loaded, settings))
        assert given and all(g == decoders_compute for g in given), sources


def _consume_slowly(source, loaded, seconds_per_event):
    """Caption ``source`` with a consumer slower than the source; (events, staleness in s)."""
    settings = PipelineSettings(max_batch=1, max_wait_ms=0, queue_size=2, events_queue=2)
    events, staleness = [], []
    for event in caption_stream(source, loaded, settings=settings):
        events.append(event)
        if isinstance(event, CaptionEvent):
            staleness.append(time.time() - event.decoded_at)
            time.sleep(seconds_per_event)
    return events, staleness


def test_a_live_source_drops_its_oldest_frames_to_stay_current(loaded):
    """The consumer holds back after the first event until the live source has dropped frames
    (a condition waited on, not a sleep that hopes for it); then the oldest frames are gone
    and the newest kept."""
    settings = PipelineSettings(max_batch=1, max_wait_ms=0, queue_size=2, events_queue=2)
    source = "lavfi:testsrc2=size=160x120:rate=30:d=4,realtime"  # about 20 sampled frames
    pipeline = Pipeline(parse_sources([source], settings.source_options), loaded, settings)
    events = iter(pipeline)
    held = [next(events)]
    while pipeline.mailbox.dropped("lavfi") < 5:  # bounded by the test's timeout
        pipeline.stop.wait(0.01)
    events = held + list(events)
    frames = captions_of(events)["lavfi"]
    ended = statuses(events, ENDED)[0]
    assert events[-1] is ended and ended.error is None  # ended is last
    drops = statuses(events, DROPPED)
    assert drops and ended.dropped >= drops[-1].dropped >= 5
    indexes = [e.index for e in frames]
    # every sampled frame up to the newest was captioned or dropped; the newest were kept...
    assert len(frames) + ended.dropped == indexes[-1] + 1 >= 19
    assert any(b - a > 1 for a, b in zip(indexes, indexes[1:], strict=False))  # ...the oldest not


def test_a_file_under_the_same_load_waits_and_drops_nothing(loaded):
    events, staleness = _consume_slowly("lavfi:testsrc2=size=160x120:rate=30:d=2", loaded, 0.2)
    frames = captions_of(events)["lavfi"]
    assert [e.index for e in frames] == list(range(10))
    assert not statuses(events, DROPPED) and statuses(events, ENDED)[0].dropped == 0


def test_a_failing_source_ends_alone_and_the_others_finish(loaded, videos, tmp_path):
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video")
    image = write_image(tmp_path / "still.png")
    events = list(caption_stream([videos[0], "missing.mp4", str(not_media), str(image)],
                                 loaded))
    ended = {e.stream: e for e in statuses(events, ENDED)}
    assert ended["missing"].error == "missing.mp4: no such file"
    assert ended["notes"].error.startswith(f"{not_media}: cannot open")
    assert ended[videos[0].rsplit("/", 1)[1][:-4]].error is None
    got = captions_of(events)
    assert len(got["still"]) == 1  # a still image: one caption
    assert len(got[videos[0].rsplit("/", 1)[1][:-4]]) > 10


def test_an_error_in_the_worker_stops_everything_and_is_raised(loaded, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(CaptionCore, "step", broken)
    pipeline = Pipeline(parse_sources(["lavfi:testsrc2=size=160x120:rate=30,realtime"]),
                        loaded)
    start = time.monotonic()
    with pytest.raises(StreamError, match="RuntimeError: boom") as caught:
        list(pipeline)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert time.monotonic() - start < 15
    assert not any(d.is_alive() for d in pipeline.decoders.values())
    assert not pipeline.worker.is_alive()


def test_an_error_in_the_consumer_stops_the_pipeline_promptly(loaded):
    """A sink that raises inside the loop: the error reaches the caller, the threads stop."""
    pipeline = Pipeline(parse_sources(["lavfi:testsrc2=size=160x120:rate=30,realtime"]),
                        loaded)
    start = time.monotonic()
    with pytest.raises(OSError, match="disk full"):
        for event in pipeline:
            if isinstance(event, CaptionEvent):
                raise OSError("disk full")
    assert time.monotonic() - start < 15
    assert not any(t.is_alive() for t in [*pipeline.decoders.values(), pipeline.worker])


def test_leaving_the_loop_stops_an_endless_live_source_promptly(loaded):
    pipeline = Pipeline(parse_sources(["lavfi:testsrc2=size=160x120:rate=30,realtime"]),
                        loaded)
    events = iter(pipeline)
    seen = [next(events) for _ in range(4)]
    assert isinstance(seen[0], StatusEvent) and seen[0].kind == OPENED
    start = time.monotonic()
    events.close()
    assert time.monotonic() - start < 5
    assert not any(t.is_alive() for t in [*pipeline.decoders.values(), pipeline.worker])
    assert threading.active_count() < 20


def test_a_bug_in_a_decoder_thread_is_raised_in_the_caller(loaded, videos, monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("decoder bug")

    monkeypatch.setattr("stream.media.frames.frame_to_rgb", broken)
    with pytest.raises(StreamError, match="ZeroDivisionError: decoder bug"):
        list(caption_stream(videos[:2], loaded))


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over ``tmp_path``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name, container", [("clip.mp4", None), ("clip.ts", "mpegts"),
                                             ("clip.m3u8", "hls")])
def test_http_sources_are_captioned_to_their_end(loaded, http_root, name, container):
    """An mp4 and a finished HLS playlist have a duration: files, nothing dropped. An MPEG-TS
    stream has none: live, so it may drop when decoded faster than captioned, and its clean end
    over HTTP ends it rather than replaying it."""
    root, base = http_root
    write_video(root / name, frames=60, fps=30, size=(64, 48), container=container)
    events = list(caption_stream(f"{base}/{name}", loaded))
    frames = captions_of(events)["127.0.0.1-" + name]
    ended = statuses(events, ENDED)
    assert len(ended) == 1 and ended[0].error is None and ended[0].reconnects == 0
    indexes = [e.index for e in frames]  # 2 s at 5 frames/s: 0 ... 9
    if container != "mpegts":
        assert indexes == list(range(10)) and ended[0].dropped == 0
    else:
        assert indexes == sorted(set(indexes)) and indexes[-1] == 9
        assert len(indexes) + ended[0].dropped == 10


@pytest.mark.parametrize("specs, ids", [
    # file stems, made unique in order
    (["a/cam.mp4", "b/cam.mp4", "c/cam.mkv"], ["cam", "cam-2", "cam-3"]),
    # URLs give host and path, never credentials
    (["rtsp://admin:pw@10.0.0.5:554/live/main?x=1"], ["10.0.0.5-live-main"]),
    (["webcam", "webcam:1", "lavfi:testsrc2", "lavfi:color"], ["webcam0", "webcam1", "lavfi",
                                                               "lavfi-2"]),
    # nothing that could climb out of an output directory
    (["../../etc/passwd", "..", "/"], ["passwd", "source", "source-2"]),
    # names that differ only in case would share a file on case-insensitive file systems
    (["x/Cam.mp4", "y/cam.mp4"], ["Cam", "cam-2"]),
])
def test_stream_ids_are_short_unique_and_safe_as_file_names(specs, ids):
    assert stream_ids(specs) == ids


def test_stopping_a_reconnecting_source_is_not_a_reconnect(loaded):
    """Stopping ends a live camera's decoding like a normal end: not a failure to retry."""
    camera = Source(kind="rtsp", url="testsrc2=size=160x120:rate=30,realtime", name="camera",
                    format="lavfi", live=True)
    pipeline = Pipeline({"camera": camera}, loaded)
    events = iter(pipeline)
    kinds = [getattr(next(events), "kind", "caption") for _ in range(4)]
    events.close()
    assert kinds[0] == OPENED and RECONNECTING not in kinds
    assert next(iter(pipeline.decoders.values())).reconnects == 0


def test_a_reconnect_inside_a_busy_batch_keeps_the_memory_of_the_frames_after_it(loaded, videos):
    """One batch holds [A1, reconnecting, opened, A2] (the worker was busy for longer than the
    reconnect took): A2 starts over by its reset flag, and A3 goes on from A2, exactly as the
    same frames stepped alone."""
    size = (loaded.bundle.input_size,) * 2
    frames, _ = read_sampled_frames(videos[0], loaded.bundle.sample_fps, size)
    resets = [True, True, False, False]
    core = CaptionCore(loaded)
    phase = loaded.bundle.keyframes.phase("cam")  # the pipeline's, by the stream's id
    alone = [core.step(f[None], ["alone"], [r], phases=[phase])[0]
             for f, r in zip(frames[:4], resets, strict=True)]
    pipeline = Pipeline({}, loaded, PipelineSettings(max_batch=2, max_wait_ms=0))
    pipeline.mailbox.register("cam", live=True)

    def frame(index):
        return FrameItem(stream="cam", index=index, pts=index / 10, decoded_at=time.time(),
                         decoded_mono=time.monotonic(), rgb=frames[index], reset=resets[index])

    def status(kind):
        return StatusEvent(stream="cam", kind=kind, at=time.time(), message=kind)

    for item in [frame(0), status(RECONNECTING), status(OPENED), frame(1), frame(2), frame(3),
                 status(ENDED)]:
        assert pipeline.mailbox.put("cam", item)
    pipeline.mailbox.close("cam")
    got = captions_of(pipeline)["cam"]
    assert [e.caption for e in got] == [c.text for c in alone]
    assert [e.logprob for e in got] == [round(c.logprob, 4) for c in alone]
    # The model's memory matters for these frames: from a clear state A3 reads otherwise.
    fresh = core.step(frames[2][None], ["fresh"], [True])[0]
    assert round(fresh.logprob, 4) != got[2].logprob


def test_a_realtime_file_plays_at_its_own_speed_as_a_live_source(loaded, tmp_path):
    """--realtime: a file's sampled frames leave the decoder at their timestamps' pace, and
    the stream is live (dropped from, not waited for, when captioning falls behind)."""
    from stream.media.sources import SourceOptions

    video = write_video(tmp_path / "v.mp4", frames=60, fps=30)  # 2 s
    settings = PipelineSettings(source_options=SourceOptions(realtime=True))
    [source] = parse_sources([str(video)], settings.source_options).values()
    assert source.live and source.paced
    events = list(caption_stream(str(video), loaded, settings=settings))
    frames = captions_of(events)["v"]
    # live: frames captioning could not keep up with are dropped, never waited for
    assert len(frames) + statuses(events, ENDED)[0].dropped == 2 * loaded.bundle.sample_fps
    first = frames[0]
    for event in frames[1:]:  # never earlier than its timestamp says (a little later: work)
        assert event.decoded_at - first.decoded_at >= event.pts - first.pts - 0.01


def test_a_paced_file_can_start_later_in_the_file(loaded, tmp_path):
    from dataclasses import replace

    from stream.media.sources import SourceOptions

    video = write_video(tmp_path / "v.mp4", frames=90, fps=30)  # 3 s, one key frame at 0
    [source] = parse_sources([str(video)], SourceOptions(realtime=True)).values()
    pipeline = Pipeline({"late": replace(source, start=2.0)}, loaded, PipelineSettings())
    frames = captions_of(pipeline)["late"]
    assert frames[0].pts == pytest.approx(2.0, abs=0.04) and frames[0].reset
    rate = loaded.bundle.sample_fps
    assert [e.pts for e in frames] == pytest.approx([2.0 + k / rate for k in range(int(rate))],
                                                    abs=0.04)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_caption_stream_refuses_bad_arguments_and_bundles_at_the_call(tmp_path, engine):
    """Before it returns (no stream started, no Ray started), not at the first next()."""
    from stream.errors import BundleError
    from stream.paths import SAMPLE_VIDEO

    with pytest.raises(BundleError, match="nothing"):
        caption_stream(str(SAMPLE_VIDEO), tmp_path / "nothing", device="cpu", engine=engine)
    with pytest.raises(ValueError, match="no sources"):
        caption_stream([], engine=engine)
    with pytest.raises(ValueError, match="engine must be local or ray"):
        caption_stream(str(SAMPLE_VIDEO), engine="spark")
    with pytest.raises(ValueError, match="settle must be"):
        caption_stream(str(SAMPLE_VIDEO), engine=engine, settle=0)
    with pytest.raises(ValueError, match="emit must be one of"):
        caption_stream(str(SAMPLE_VIDEO), engine=engine, emit="captions")
