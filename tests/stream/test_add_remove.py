"""Streams added and removed while a local pipeline runs (stream/engines/local.py): the others
go on untouched (every index, no reset), an added stream starts with a reset, a removed one
ends at once with an ``ended`` status, and a pipeline held open outlives its last stream."""

from __future__ import annotations

import pytest

from stream.engines.local import Pipeline
from stream.events import ENDED, CaptionEvent, StatusEvent
from stream.media.sources import parse_source
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE
from tests.media import write_video

FRAMES = 40  # per video: 4 s at 10 fps, every one sampled


@pytest.fixture(scope="module")
def loaded():
    return open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu", threads=1))


def three_videos(folder, frames: int):
    """a.mp4, b.mp4 and c.mp4: ``frames`` frames at 10 fps each (every one sampled)."""
    return [write_video(folder / f"{name}.mp4", frames=frames, fps=10, seed=seed)
            for seed, name in enumerate("abc")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return three_videos(tmp_path_factory.mktemp("videos"), FRAMES)


def source(path):
    return parse_source(str(path))


def add_then_remove(engine, added, frames: int) -> None:
    """Run ``engine`` (streams a and b): add ``added`` as c once a reaches index 5, remove c
    once it reaches index 5; check that a and b went on untouched and c ended, removed."""
    captions: dict[str, list[CaptionEvent]] = {"a": [], "b": [], "c": []}
    ended: dict[str, list[StatusEvent]] = {"a": [], "b": [], "c": []}
    after_end = 0
    for event in engine:
        if isinstance(event, CaptionEvent):
            captions[event.stream].append(event)
            after_end += bool(ended["c"]) and event.stream == "c"
            if event.stream == "a" and event.index == 5:
                engine.add("c", added)
            if event.stream == "c" and event.index == 5:
                engine.remove("c")
        elif isinstance(event, StatusEvent) and event.kind == ENDED:
            ended[event.stream].append(event)
    for stream in "ab":
        assert [e.index for e in captions[stream]] == list(range(frames))  # no gap
        assert [e.index for e in captions[stream] if e.reset] == [0]  # no reset
        assert [e.error for e in ended[stream]] == [None]
    indexes = [e.index for e in captions["c"]]
    assert indexes == list(range(len(indexes))) and 6 <= len(indexes) < frames
    assert captions["c"][0].reset
    [removed] = ended["c"]
    assert removed.message == "removed" and removed.error is None and after_end == 0


def test_a_stream_added_then_removed_leaves_the_others_untouched(loaded, videos):
    a, b, c = videos
    # Files wait for the consumer: the pipeline never runs far ahead of the test (no race).
    add_then_remove(Pipeline({"a": source(a), "b": source(b)}, loaded), source(c), FRAMES)


def test_a_pipeline_held_open_outlives_its_last_stream_and_takes_new_ones(loaded, videos):
    a, b, _ = videos
    pipeline = Pipeline({"a": source(a)}, loaded, keep_open=True)
    seen: list[tuple[str, int]] = []
    events = iter(pipeline)
    try:
        for event in events:
            if isinstance(event, StatusEvent) and event.kind == ENDED and event.stream == "a":
                pipeline.add("a", source(b))  # the same id again, once the first one ended
            elif isinstance(event, CaptionEvent):
                seen.append((event.stream, event.index))
                if len(seen) == 2 * FRAMES:
                    break  # held open: it would wait for more streams
    finally:
        events.close()
        pipeline.close()
    assert seen == [("a", i) for i in range(FRAMES)] * 2


def test_bad_additions_and_removals_are_refused_in_one_line(loaded, videos):
    a, b, _ = videos
    pipeline = Pipeline({"a": source(a)}, loaded)
    with pytest.raises(ValueError, match="a: a stream of that id is running"):
        pipeline.add("a", source(b))
    with pytest.raises(KeyError, match="nobody: no such stream"):
        pipeline.remove("nobody")
    captions = [e.index for e in pipeline if isinstance(e, CaptionEvent)]
    assert captions == list(range(FRAMES))  # the refusals disturbed nothing
    with pytest.raises(KeyError, match="a: no such stream"):
        pipeline.remove("a")  # it ended: nothing to remove
