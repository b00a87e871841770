"""Each annotation layout, with small fixtures written by the tests."""

from __future__ import annotations

import json
import math

import pytest

from lrcn.data import DataError, detect_layout, frame_targets, load_dataset
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
