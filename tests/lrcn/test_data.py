"""Each annotation layout, with small fixtures written by the tests."""

from __future__ import annotations

import json
import math

import pytest

from lrcn.data import (
    DataError,
    detect_layout,
    frame_targets,
    frame_truthful_targets,
    load_dataset,
    seen_times,
)
from tests.media import write_image, write_video


def test_activitynet_layout(tmp_path):
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "v_one.mp4", frames=30)
    (tmp_path / "captions.json").write_text(json.dumps({
        "v_one": {"duration": 1.0, "timestamps": [[0.0, 0.4], [0.6, 1.0]],
                  "sentences": ["a dog runs", "a cat sits."]},
    }))
    data = load_dataset(tmp_path)
    assert data.layout == "activitynet"
    (item,) = data.items
    assert item.path.name == "v_one.mp4"
    assert [s.sentences for s in item.segments] == [("a dog runs",), ("a cat sits.",)]
    targets = frame_targets(item, [0.0, 0.3, 0.5, 0.6, 0.99])
    # The gap between segments carries no target.
    assert [t.sentences[0] if t else None for t in targets] == [
        "a dog runs", "a dog runs", None, "a cat sits.", "a cat sits."]


def test_msrvtt_layout_has_clip_level_references(tmp_path):
    write_video(tmp_path / "video7.mp4", frames=10)
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps({
        "videos": [{"video_id": "video7"}],
        "sentences": [{"video_id": "video7", "caption": "a man sings"},
                      {"video_id": "video7", "caption": "someone is singing"}],
    }))
    data = load_dataset(tmp_path)
    assert data.layout == "msrvtt"
    (seg,) = data.items[0].segments
    assert seg.sentences == ("a man sings", "someone is singing")
    assert seg.start == 0.0 and math.isinf(seg.end)
    assert data.items[0].target_at(123.0) is seg


def test_coco_layout_images_are_one_frame_videos(tmp_path):
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "000042.png")
    (tmp_path / "captions_train.json").write_text(json.dumps({
        "images": [{"id": 42, "file_name": "000042.png"}],
        "annotations": [{"image_id": 42, "caption": "a gray square."},
                        {"image_id": 42, "caption": "flat gray"}],
    }))
    data = load_dataset(tmp_path / "captions_train.json")
    assert data.layout == "coco"
    assert data.items[0].video_id == "42"
    assert data.items[0].path.name == "000042.png"
    assert sorted(data.sentences()) == ["a gray square.", "flat gray"]


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"x": 1}, "not an ActivityNet"),  # unknown layout
        ({"v": {"timestamps": [[0, 1]], "sentences": []}}, "1 timestamps but 0"),
        ({"v": {"timestamps": [[2, 1]], "sentences": ["s"]}}, "bad segment"),
        ({"v": {"timestamps": [[0, 1]], "sentences": [""]}}, "malformed"),
        ({"v": {"timestamps": [[0, 1]], "sentences": ["s"], "appearance": []}},
         "0 appearance but 1"),
        ({"v": {"timestamps": [[0, 1]], "sentences": ["s"], "evident": [0.1, 0.2]}},
         "2 evident but 1"),
        ({"v": {"timestamps": [[0, 1]], "sentences": ["s"], "evident": [-1]}},
         "bad evident time"),
    ],
)
def test_malformed_annotations_name_the_file(tmp_path, payload, message):
    (tmp_path / "captions.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path, check_media=False)


def test_missing_media_and_bad_json(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps(
        {"gone": {"timestamps": [[0, 1]], "sentences": ["s"]}}))
    with pytest.raises(DataError, match="1 media file"):
        load_dataset(tmp_path)
    (tmp_path / "captions.json").write_text("{not json")
    with pytest.raises(DataError, match="captions.json"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="no such"):
        load_dataset(tmp_path / "absent")


def test_detect_layout_refuses_lists():
    with pytest.raises(DataError):
        detect_layout([1, 2])


def test_appearance_is_the_target_until_the_motion_is_evident_to_the_stream(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps({"v": {
        "timestamps": [[0.0, 1.0], [1.0, 2.0]],
        "sentences": ["a red circle grows", "a blue square stays still"],
        "appearance": ["a red circle", "a blue square"], "evident": [0.15, 0.3]}}))
    (item,) = load_dataset(tmp_path, check_media=False).items
    assert item.segments[0].truthful == ("a red circle grows", "a red circle")
    times = [i / 10 for i in range(20)]
    targets = [t[0] if t else None for t in frame_truthful_targets(item, times)]
    # 0.15 s of the first segment: frames at 0, 0.1 are too early; the second needs 0.3 s.
    assert targets[:3] == ["a red circle", "a red circle", "a red circle grows"]
    assert targets[9:14] == ["a red circle grows", "a blue square", "a blue square",
                             "a blue square", "a blue square stays still"]
    # A stream that joins mid-segment has seen nothing of it yet either.
    late = [t[0] for t in frame_truthful_targets(item, times[5:])]  # type: ignore[index]
    assert late[:3] == ["a red circle", "a red circle", "a red circle grows"]
    assert seen_times(item, times[5:])[:3] == pytest.approx([0.0, 0.1, 0.2])
    # The sentences alone stay what frame_targets gives.
    assert frame_targets(item, [0.0])[0].sentences == ("a red circle grows",)


def test_without_appearance_the_target_is_the_sentence(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps({"v": {
        "timestamps": [[0.0, 1.0]], "sentences": ["a dog runs"], "evident": [0.5]}}))
    (item,) = load_dataset(tmp_path, check_media=False).items
    assert [t for t in frame_truthful_targets(item, [0.0, 0.6])] == [("a dog runs",)] * 2
    assert item.segments[0].truthful == ("a dog runs",)
