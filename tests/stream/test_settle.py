"""The settle rule and the events it derives (stream/settle.py), on scripted caption streams."""

from __future__ import annotations

import pytest

from stream.events import (
    END,
    ENDED,
    NEW,
    RECONNECTING,
    UPDATE,
    CaptionEvent,
    SettledEvent,
    StatusEvent,
)
from stream.settle import Settler, Settling, check_settle, continues

STILL, FLASH = "a red circle", "a blue square"


def frame(index: int, text: str, logprob: float = -1.0, reset: bool | None = None,
          stream: str = "cam") -> CaptionEvent:
    return CaptionEvent(stream=stream, index=index, pts=index / 10, decoded_at=0.0,
                        emitted_at=0.0, caption=text, logprob=logprob, latency_ms=0.0,
                        changed=True, reset=index == 0 if reset is None else reset)


def run(texts: list[str], settle: int, **kwargs) -> tuple[list[str], list[SettledEvent]]:
    """The shown caption per frame and the events, of ``texts`` said on frames 0, 1, ..."""
    settler = Settler("cam", settle, frame_interval=0.1)
    out = [e for i, t in enumerate(texts) for e in settler.push(frame(i, t, **kwargs))]
    out += settler.finish()
    shown = [e.shown for e in out if isinstance(e, CaptionEvent)]
    return shown, [e for e in out if isinstance(e, SettledEvent)]


def kinds(events: list[SettledEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.id, e.caption) for e in events]


@pytest.mark.parametrize("settle", [2, 3, 5])
def test_a_flash_shorter_than_settle_never_shows(settle):
    texts = [STILL] * 4 + [FLASH] * (settle - 1) + [STILL] * 4
    shown, events = run(texts, settle)
    assert shown == [STILL] * len(texts)
    assert kinds(events) == [(NEW, "cam/1", STILL), (END, "cam/1", STILL)]
    assert events[-1].frames == len(texts)


def test_a_caption_that_holds_for_settle_frames_shows_on_its_last_one():
    shown, events = run([STILL, STILL, FLASH, FLASH, FLASH, FLASH], settle=3)
    assert shown == [STILL, STILL, STILL, STILL, FLASH, FLASH]  # settled on its 3rd frame
    assert kinds(events) == [(NEW, "cam/1", STILL), (END, "cam/1", STILL),
                             (NEW, "cam/2", FLASH), (END, "cam/2", FLASH)]
    first_end, second_new = events[1], events[2]
    assert first_end.pts == second_new.pts == pytest.approx(0.4)  # replaced where it settled
    assert first_end.duration == pytest.approx(0.4) and first_end.frames == 4


def test_a_still_image_shows_at_once_and_ends_one_frame_later():
    shown, events = run([STILL], settle=3)
    assert shown == [STILL]
    assert kinds(events) == [(NEW, "cam/1", STILL), (END, "cam/1", STILL)]
    assert events[1].duration == pytest.approx(0.1) and events[1].frames == 1


def test_settle_1_shows_every_frames_caption():
    texts = [STILL, FLASH, STILL, "", FLASH]
    shown, events = run(texts, settle=1)
    assert shown == texts
    assert [e.type for e in events] == [NEW, END, NEW, END, NEW, END, NEW, END]


def test_a_caption_said_more_fully_updates_its_event_and_anything_else_ends_it():
    texts = ([STILL] * 3 + [STILL + " shrinks"] * 4 + [STILL] * 3 + ["a red circle grows"] * 3
             + [""] * 3)
    shown, events = run(texts, settle=2)
    assert kinds(events) == [
        (NEW, "cam/1", STILL), (UPDATE, "cam/1", STILL + " shrinks"),
        (END, "cam/1", STILL + " shrinks"),  # said less fully: another event
        (NEW, "cam/2", STILL), (UPDATE, "cam/2", "a red circle grows"),
        (END, "cam/2", "a red circle grows")]  # the caption went empty: no new event
    update, end = events[1], events[2]
    assert update.start == 0.0 and update.index == 4 and update.pts == pytest.approx(0.4)
    assert end.start == 0.0 and end.pts == pytest.approx(0.8) and end.frames == 8
    assert shown[-1] == "" and not any(e.type == NEW and e.caption == "" for e in events)


def test_an_end_carries_the_mean_log_probability_and_the_most_confident_frame():
    settler = Settler("cam", 2, frame_interval=0.1)
    logprobs = [-3.0, -1.0, -0.5, -2.0]
    out = [e for i, lp in enumerate(logprobs) for e in settler.push(frame(i, STILL, lp))]
    out += settler.push(frame(4, FLASH, -0.1))  # said once: counted, not the best frame
    [end] = [e for e in settler.finish() if e.type == END]
    assert end.frames == 5 and end.logprob == pytest.approx((-6.5 - 0.1) / 5)
    assert end.best_index == 2 and end.index == 4  # its most confident frame; its last


def test_a_reset_or_a_reconnect_ends_the_open_event_and_the_next_caption_shows_at_once():
    settler = Settler("cam", 3, frame_interval=0.1)
    out = [e for i in range(3) for e in settler.push(frame(i, STILL))]
    out += settler.push(StatusEvent("cam", RECONNECTING, 0.0, message="lost"))
    out += settler.push(frame(3, FLASH, reset=True))  # the reopened source's first frame
    out += settler.push(frame(4, STILL, reset=True))  # a reset (a restarted actor)
    out += settler.push(StatusEvent("cam", ENDED, 0.0))
    settled = [e for e in out if not isinstance(e, CaptionEvent)]
    assert [(getattr(e, "type", None) or e.kind) for e in settled] == [
        NEW, END, RECONNECTING, NEW, END, NEW, END, ENDED]
    assert settled[1].pts == pytest.approx(0.3)  # one frame interval after its last frame
    assert [e.shown for e in out if isinstance(e, CaptionEvent)][3:] == [FLASH, STILL]
    assert settler.finish() == []  # the stream ended: nothing left open


def test_streams_settle_independently_and_events_frames_can_be_asked_for_alone():
    both = [frame(i, t, stream=s) for i, t in enumerate([STILL, FLASH, FLASH])
            for s in ("a", "b")]
    events_only = list(Settling(2, 0.1, frames=False)(both))
    assert all(isinstance(e, SettledEvent) for e in events_only)
    assert sorted({e.id for e in events_only}) == ["a/1", "a/2", "b/1", "b/2"]
    frames_only = list(Settling(2, 0.1, events=False)(both))
    assert [e.shown for e in frames_only] == [STILL, STILL, STILL, STILL, FLASH, FLASH]


def test_the_same_captions_settle_to_the_same_events_whatever_the_engine_or_run():
    texts = [STILL, FLASH, STILL, STILL, FLASH, FLASH, FLASH, "", STILL, STILL]
    first = [e.to_json() | {"emitted_at": 0} for e in run(texts, 2)[1]]
    second = [e.to_json() | {"emitted_at": 0} for e in run(texts, 2)[1]]
    assert first == second and first[0]["type"] == NEW and "duration" not in first[0]
    assert {"duration", "frames", "best_index"} <= set(first[-1])


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_a_settle_that_is_not_a_whole_number_of_frames_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match="settle must be") as error:
        check_settle(bad)
    assert "\n" not in str(error.value)


def test_continues_is_a_proper_word_prefix():
    assert continues("a red circle", "a red circle moves left")
    assert not continues("a red circle", "a red circle")
    assert not continues("a red circle moves", "a red circle")
    assert not continues("a red", "a redder circle")
    assert not continues("", "a red circle")
