"""Evaluation bookkeeping on hand-made captions with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrcn.data import Segment, VideoItem
from lrcn.evaluate import score_split
from tests.conftest import require_tool

ITEM = VideoItem("v", Path("v.mp4"), (Segment(0.0, 0.5, ("a red circle moves left",)),
                                      Segment(0.5, 1.0, ("a blue square grows",))))
TIMES = [i / 10 for i in range(10)]


def _captions(first: list[str], second: list[str]) -> list[str]:
    return first + second


def test_frame_event_and_lag_bookkeeping():
    require_tool("java", "PTB tokenizer for the COCO metrics")
    red, blue = "a red circle moves left", "a blue square grows"
    # Segment 1: right from the start. Segment 2: wrong for 2 frames, then right to the end.
    captions = _captions([red] * 5, [red, red, blue, blue, blue])
    scores = score_split([ITEM], [TIMES], [captions], meteor=False)
    assert scores["frames"] == 10
    assert scores["frame_exact_match"] == pytest.approx(0.8)
    assert scores["events"] == 2 and scores["event_exact_match"] == 1.0
    assert scores["caption_lag_frames"] == {"segments": 2, "unsettled": 0, "median": 1.0,
                                            "p90": pytest.approx(1.8)}


def test_event_caption_is_the_last_frame_of_the_segment():
    require_tool("java", "PTB tokenizer for the COCO metrics")
    red, blue = "a red circle moves left", "a blue square grows"
    # Right on every frame but the last one of segment 2: the event caption there is wrong.
    captions = _captions([red] * 5, [blue] * 4 + ["a blue square shrinks"])
    scores = score_split([ITEM], [TIMES], [captions], meteor=False)
    assert scores["frame_exact_match"] == pytest.approx(0.9)
    assert scores["event_exact_match"] == 0.5
    assert scores["caption_lag_frames"]["unsettled"] == 1
    assert scores["coco"]["ROUGE-L"] == pytest.approx((1.0 + 0.75) / 2)
