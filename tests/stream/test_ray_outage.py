"""A Ray outage that is not a restart (stream/engines/ray.py): ``ActorUnavailableError`` on an
actor that is alive, injected once on a local Ray of 2 CPUs. Its streams say reconnecting, then
opened, and go on in the same actor without a second start; the captions are an uninterrupted
run's, none twice and none lost (not even those of the poll whose answer was lost)."""

from __future__ import annotations

import pytest
import ray  # noqa: E402 - the ray extra, installed by make setup

from stream.engines.local import Pipeline
from stream.engines.ray import Polled, RayPipeline, RaySettings  # noqa: E402
from stream.events import ENDED, OPENED, RECONNECTING, CaptionEvent, StatusEvent
from stream.media.sources import parse_sources
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO
from tests.media import write_video
from tests.tools.local_ray import captions, local_ray  # noqa: F401 - the module's Ray

pytestmark = [pytest.mark.timeout(240)]


@pytest.mark.parametrize("outage", ["poll", "poll and start"])
def test_an_unavailable_live_actor_is_reconnected_without_a_second_start(tmp_path, monkeypatch,
                                                                         outage):
    """The harshest blip: the actor ran the poll and drained its events, and the driver gets
    ActorUnavailableError instead of the answer. The next poll must bring those events. With
    "poll and start", the answer of the reconnecting start call is lost too (asked again later,
    with no second status)."""
    other = write_video(tmp_path / "noise.mp4", frames=45, fps=15, size=(96, 72))
    specs = [str(SAMPLE_VIDEO), str(other)]
    file = "shapes_s5_00000"
    engine = RayPipeline(parse_sources(specs), DEFAULT_BUNDLE, "cpu",
                         ray_settings=RaySettings(workers=1, max_restarts=2))
    lost: list[Polled] = []
    starts_to_lose = [1] if outage == "poll and start" else []
    ended_before: set[str] = set()  # streams whose end the driver got before the outage
    real_get = ray.get

    def get(ref, *args, **kwargs):
        result = real_get(ref, *args, **kwargs)
        if isinstance(result, dict) and lost and starts_to_lose:
            assert result["fresh"] is False  # the same process, started once
            starts_to_lose.pop()
            raise ray.exceptions.ActorUnavailableError("injected: connection reset", None)
        if isinstance(result, Polled) and not lost:
            if any(isinstance(e, CaptionEvent) and e.stream == file and e.index >= 10
                   for e in result.events):
                lost.append(result)  # the actor is alive and has handed these out
                raise ray.exceptions.ActorUnavailableError("injected: connection reset", None)
            ended_before.update(e.stream for e in result.events
                                if isinstance(e, StatusEvent) and e.kind == ENDED)
        return result

    monkeypatch.setattr(ray, "get", get)
    events = []
    pid = None
    for event in engine:
        events.append(event)
        if pid is None:
            pid = engine.placement()[file][1]
    monkeypatch.undo()
    assert lost and any(isinstance(e, CaptionEvent) for e in lost[0].events)
    assert not starts_to_lose

    local = list(Pipeline(parse_sources(specs), open_bundle(DEFAULT_BUNDLE,
                                                            SessionSettings(device="cpu"))))
    assert captions(events) == captions(local)
    assert len(captions(events)) == 89 + 30
    for stream in (file, "noise"):
        shown = [e for e in events if isinstance(e, CaptionEvent) and e.stream == stream]
        assert [e.index for e in shown] == list(range(len(shown)))  # none twice, none lost
        assert sum(e.reset for e in shown) == 1  # never reopened
        kinds = [e.kind for e in events if isinstance(e, StatusEvent) and e.stream == stream]
        if stream in ended_before:
            assert kinds == [OPENED, ENDED]
        else:
            assert kinds == [OPENED, RECONNECTING, OPENED, ENDED]
    ours = [e for e in events if isinstance(e, StatusEvent) and e.stream == file]
    assert "worker 1 lost" in ours[1].message and ours[1].reconnects == 1
    assert "reachable again" in ours[2].message
    assert ours[3].error is None and ours[3].reconnects == 1
    # The same process all along: no restart, no second start.
    assert engine.placement()[file][1] == pid
    assert engine._workers[0].restarts == 0


class _Stop(Exception):
    pass


def test_an_exception_a_signal_handler_raised_inside_ray_comes_out_as_itself():
    """Ray hands a signal handler's exception (the CLI's SIGTERM) back as a SystemError whose
    cause it is; the driver re-raises the cause, so SIGTERM still exits 143 (seen once in CI)."""
    from stream.engines.ray import _signal_exceptions

    with pytest.raises(_Stop), _signal_exceptions():
        try:
            raise _Stop()
        except _Stop as cause:
            raise SystemError("returned a result with an exception set") from cause
    with pytest.raises(SystemError, match="plain"), _signal_exceptions():
        raise SystemError("plain")
