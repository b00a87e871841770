"""Streams added and removed while the Ray engine runs (stream/engines/ray.py): an added stream
goes to the actor with the fewest streams (a new actor when there is none), a removed one ends
with an ``ended`` status ("removed"), and the other streams go on untouched."""

from __future__ import annotations

import pytest

from stream.engines.ray import RayPipeline, RaySettings
from stream.engines.settings import PipelineSettings
from stream.events import ENDED, CaptionEvent, StatusEvent
from stream.media.sources import SourceOptions, parse_source
from stream.paths import DEFAULT_BUNDLE
from tests.stream.test_add_remove import add_then_remove, three_videos
from tests.tools.local_ray import local_ray  # noqa: F401 - the module's Ray

FRAMES = 60  # 6 s at 10 fps, played in real time: the test acts while every stream runs
# Played as live sources; queues deep enough that a busy machine drops no frame.
SETTINGS = PipelineSettings(queue_size=64, source_options=SourceOptions(realtime=True))

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return three_videos(tmp_path_factory.mktemp("videos"), FRAMES)


def source(path):
    return parse_source(str(path), SETTINGS.source_options)


def test_on_ray_a_stream_added_then_removed_leaves_the_others_untouched(videos):
    a, b, c = videos
    engine = RayPipeline({"a": source(a), "b": source(b)}, DEFAULT_BUNDLE, device="cpu",
                         settings=SETTINGS, ray_settings=RaySettings(workers=2, max_restarts=0))
    add_then_remove(engine, source(c), FRAMES)
    placement = engine.placement()
    assert placement["c"][0] in (placement["a"][0], placement["b"][0])  # an actor of theirs


def test_on_ray_a_pipeline_held_open_starts_an_actor_for_its_first_stream(videos):
    a, _, _ = videos
    engine = RayPipeline({}, DEFAULT_BUNDLE, device="cpu", settings=SETTINGS,
                         ray_settings=RaySettings(max_restarts=0), keep_open=True)
    engine.add("a", source(a))
    with pytest.raises(ValueError, match="a: a stream of that id is running"):
        engine.add("a", source(a))
    with pytest.raises(KeyError, match="nobody: no such stream"):
        engine.remove("nobody")
    seen = []
    events = iter(engine)
    try:
        for event in events:
            if isinstance(event, CaptionEvent):
                seen.append(event.index)
            elif isinstance(event, StatusEvent) and event.kind == ENDED:
                break  # held open: it would wait for more streams
    finally:
        events.close()
        engine.close()
    assert seen == list(range(FRAMES))
