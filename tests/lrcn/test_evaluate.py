"""Evaluation bookkeeping on hand-made captions with known answers."""

from __future__ import annotations

import json
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


def test_truthful_frames_wrong_runs_and_changes():
    require_tool("java", "PTB tokenizer for the COCO metrics")
    item = VideoItem("v", Path("v.mp4"), (
        Segment(0.0, 0.5, ("a red circle moves left",), ("a red circle",), 0.05),
        Segment(0.5, 1.0, ("a blue square grows",), ("a blue square",), 0.25)))
    red, blue = "a red circle moves left", "a blue square grows"
    # Segment 1: appearance on its first frame, then the sentence: truthful, 2 changes.
    # Segment 2: a guess ("shrinks") for two frames, the appearance, then the sentence.
    captions = (["a red circle", red, red, red, red]
                + ["a blue square shrinks"] * 2 + ["a blue square", blue, blue])
    scores = score_split([item], [TIMES], [captions], meteor=False)
    assert scores["frame_exact_match"] == pytest.approx(0.6)
    assert scores["truthful_frames"] == pytest.approx(0.8)
    # What each frame may say: frame 0 the appearance, 5 to 7 too (0.25 s of the segment);
    # frames 5 and 6 miss it.
    assert scores["frame_target_match"] == pytest.approx(0.8)
    assert scores["wrong_caption_runs_per_event"] == pytest.approx(0.5)
    assert scores["caption_changes_per_event"] == pytest.approx((2 + 3) / 2)
    assert scores["event_exact_match"] == 1.0


def test_settled_captions_are_scored_as_the_cues_a_person_sees():
    from lrcn.evaluate import score_settled

    item = VideoItem("v", Path("v.mp4"), (
        Segment(0.0, 0.5, ("a red circle moves left",), ("a red circle",), 0.05),
        Segment(0.5, 1.0, ("a blue square grows",), ("a blue square",), 0.05)))
    red, blue = "a red circle moves left", "a blue square grows"
    # A one-frame flash ("a green star") in segment 1; segment 2 starts with two frames of
    # the previous sentence, then its own.
    captions = [red, red, "a green star", red, red, red, red, blue, blue, blue]
    per_frame = score_settled([item], [TIMES], [captions], settle=1)
    assert per_frame["cues_per_event"] == pytest.approx(4 / 2)  # red, star, red, blue
    assert per_frame["spurious_cues_per_event"] == pytest.approx(1 / 2)  # the star
    assert per_frame["lag_frames"]["median"] == pytest.approx(1.0)  # 0 and 2 frames
    settled = score_settled([item], [TIMES], [captions], settle=2)
    assert settled["cues_per_event"] == pytest.approx(2 / 2)  # the flash never shows
    assert settled["spurious_cues_per_event"] == 0
    # Blue shows at frame 8 (held 2 frames), 3 frames into its segment: 1 more than per frame.
    assert settled["lag_frames"]["median"] == pytest.approx((0 + 3) / 2)
    assert settled["added_lag_frames"]["median"] == pytest.approx((0 + 1) / 2)


def test_stills_variants_are_scored_under_their_own_names(tmp_path: Path) -> None:
    from lrcn.data import DataError
    from lrcn.evaluate import _load_split, _splits, get_args_parser

    common = ["--bundle", "b", "--data", "t", "--stills", "s"]
    args = get_args_parser().parse_args(common + ["--variant", "60fps=v", "--stills-variant",
                                                  "independent-stills=i"])
    assert _splits(args) == {"test": Path("t"), "stills": Path("s"), "60fps": Path("v"),
                             "independent-stills": Path("i")}
    with pytest.raises(DataError, match="'stills' .* taken"):
        _splits(get_args_parser().parse_args(common + ["--stills-variant", "stills=i"]))
    # A still split loads under its name; a video split given as one fails, naming the file.
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").touch()
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": "a", "file_name": "a.png"}],
        "annotations": [{"image_id": "a", "caption": "a red circle"}]}))
    (tmp_path / "v" / "videos").mkdir(parents=True)
    (tmp_path / "v" / "videos" / "v.mp4").touch()
    (tmp_path / "v" / "captions.json").write_text(json.dumps({"v": {
        "duration": 1.0, "timestamps": [[0.0, 1.0]], "sentences": ["a red circle grows"]}}))
    args = get_args_parser().parse_args(common + ["--stills-variant", f"x={tmp_path}",
                                                  "--variant", f"y={tmp_path / 'v'}"])
    assert _load_split(args, "x", tmp_path).layout == "coco"
    assert _load_split(args, "y", tmp_path / "v").layout == "activitynet"
    wrong = get_args_parser().parse_args(common + ["--stills-variant", f"x={tmp_path / 'v'}"])
    with pytest.raises(DataError, match="captions.json.*--stills-variant x expects still"):
        _load_split(wrong, "x", tmp_path / "v")
