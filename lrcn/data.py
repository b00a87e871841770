"""Caption data sets: three annotation layouts read into one in-memory form.

Layouts (detected from the JSON's shape):

* ActivityNet Captions (dense): ``{video_id: {"duration", "timestamps": [[s, e], ...],
  "sentences": [...]}}``. YouCook2 and ViTT convert to it. ShapesWorld writes it, with two
  optional lists beside the sentences: ``"appearance"``, what one frame of the segment shows
  ("a red circle"), and ``"evident"``, the seconds of the segment a viewer must see before the
  sentence's motion is visible. Before that the segment's target is its appearance.
* MSR-VTT (clip-level): ``{"videos": [{"video_id"}, ...], "sentences": [{"video_id",
  "caption"}, ...]}``: every sentence describes the whole clip.
* COCO captions (images): ``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
  "caption"}]}``: an image is a one-frame video.

All become :class:`VideoItem` s whose :class:`Segment` s say which sentences describe which
seconds. Media files are looked up by file stem (or ``file_name``) in the annotation file's folder
and its ``videos/`` and ``images/`` subfolders.

Example:
    >>> data = load_dataset("data/shapes/train")
    >>> data.items[0].segments[0].sentences
    ('a red circle moves left',)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ANNOTATION_NAMES = ("captions.json", "annotations.json")
_EPSILON = 1e-6  # seconds: sample times and annotations are rounded
_MEDIA_SUBDIRS = (".", "videos", "images")


class DataError(ValueError):
    """A data set cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Segment:
    """Seconds [start, end) of a video described by one or more reference sentences."""

    start: float
    end: float
    sentences: tuple[str, ...]
    appearance: tuple[str, ...] = ()  # what one frame shows; () when not annotated
    evident: float = 0.0  # seconds of the segment to see before its sentences are visible

    def covers(self, time: float) -> bool:
        """Whether the frame at ``time`` seconds lies in this segment."""
        return self.start <= time < self.end

    def target(self, seen: float) -> tuple[str, ...]:
        """What a caption may say after seeing ``seen`` seconds of the segment: its sentences
        once their motion is evident, before that its appearance (when annotated)."""
        if self.appearance and seen < self.evident - _EPSILON:
            return self.appearance
        return self.sentences

    @property
    def truthful(self) -> tuple[str, ...]:
        """Every caption that says only what the segment shows: sentences and appearance."""
        return self.sentences + self.appearance


@dataclass(frozen=True)
class VideoItem:
    """One video (or image) with its captioned segments."""

    video_id: str
    path: Path
    segments: tuple[Segment, ...]

    def target_at(self, time: float) -> Segment | None:
        """The segment covering ``time`` (the latest-starting one if several), else None."""
        covering = [s for s in self.segments if s.covers(time)]
        return max(covering, key=lambda s: s.start) if covering else None


@dataclass(frozen=True)
class Dataset:
    """A loaded data set: its annotation file, layout name and items."""

    annotation: Path
    layout: str
    items: tuple[VideoItem, ...]

    def sentences(self) -> list[str]:
        """Every reference sentence (for building a vocabulary)."""
        return [s for item in self.items for seg in item.segments for s in seg.sentences]


def find_annotation(path: str | Path) -> Path:
    """Resolve a data set argument (a folder or a JSON file) to its annotation file."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for name in ANNOTATION_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(path.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"{path}: expected one of {', '.join(ANNOTATION_NAMES)} or a single .json file")


def load_dataset(path: str | Path, check_media: bool = True) -> Dataset:
    """Load a data set folder or annotation file in any of the three layouts.

    Raises:
        DataError: unreadable JSON, an unknown layout, malformed entries, or missing media.
    """
    annotation = find_annotation(path)
    try:
        raw = json.loads(annotation.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{annotation}: cannot read JSON ({error})") from error
    media = _MediaIndex(annotation.parent)
    layout = detect_layout(raw, annotation)
    reader = {"activitynet": _read_activitynet, "msrvtt": _read_msrvtt, "coco": _read_coco}[layout]
    try:
        items = reader(raw, media)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{annotation}: malformed {layout} entry ({error!r})") from error
    if check_media:
        missing = [item for item in items if not item.path.is_file()]
        if missing:
            raise DataError(f"{annotation}: {len(missing)} media file(s) not found, first: "
                            f"{missing[0].path}")
    return Dataset(annotation=annotation, layout=layout, items=tuple(items))


def detect_layout(raw: Any, source: Path | str = "<json>") -> str:
    """Name the layout of parsed annotation JSON: "activitynet", "msrvtt" or "coco"."""
    if isinstance(raw, dict):
        if "images" in raw and "annotations" in raw:
            return "coco"
        if "videos" in raw and "sentences" in raw:
            return "msrvtt"
        if raw and all(isinstance(v, dict) and "sentences" in v for v in raw.values()):
            return "activitynet"
    raise DataError(f"{source}: not an ActivityNet Captions, MSR-VTT or COCO captions layout")


class _MediaIndex:
    """File-stem lookup in the annotation folder and its media subfolders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_stem: dict[str, Path] = {}
        for sub in _MEDIA_SUBDIRS:
            folder = root / sub
            if folder.is_dir():
                for file in sorted(folder.iterdir()):
                    if file.is_file() and file.suffix.lower() != ".json":
                        self._by_stem.setdefault(file.stem, file)

    def by_stem(self, stem: str) -> Path:
        return self._by_stem.get(stem, self.root / "videos" / f"{stem}.mp4")

    def by_name(self, name: str) -> Path:
        for sub in _MEDIA_SUBDIRS:
            candidate = self.root / sub / name
            if candidate.is_file():
                return candidate
        return self.by_stem(Path(name).stem)


def _read_activitynet(raw: dict[str, Any], media: _MediaIndex) -> list[VideoItem]:
    items = []
    for video_id, entry in raw.items():
        timestamps, sentences = entry["timestamps"], entry["sentences"]
        appearance = entry.get("appearance", [None] * len(sentences))
        evident = entry.get("evident", [0.0] * len(sentences))
        for name, values in (("timestamps", timestamps), ("appearance", appearance),
                             ("evident", evident)):
            if len(values) != len(sentences):
                raise DataError(f"{media.root}: video {video_id} has {len(values)} {name} but "
                                f"{len(sentences)} sentences")
        segments = []
        for (start, end), sentence, look, wait in zip(timestamps, sentences, appearance, evident,
                                                      strict=True):
            start, end, wait = float(start), float(end), float(wait)
            if not (math.isfinite(start) and math.isfinite(end) and end > start):
                raise DataError(f"{media.root}: video {video_id} has a bad segment "
                                f"[{start}, {end}]")
            if not (math.isfinite(wait) and wait >= 0):
                raise DataError(f"{media.root}: video {video_id} has a bad evident time {wait}")
            segments.append(Segment(start, end, (_sentence(sentence),),
                                    () if look is None else (_sentence(look),), wait))
        items.append(VideoItem(str(video_id), media.by_stem(str(video_id)), tuple(segments)))
    return items


def _read_msrvtt(raw: dict[str, Any], media: _MediaIndex) -> list[VideoItem]:
    sentences = _captions_by_id(raw["sentences"], "video_id")
    return [_whole_clip(str(v["video_id"]), media.by_stem(str(v["video_id"])), sentences)
            for v in raw["videos"] if sentences.get(str(v["video_id"]))]


def _read_coco(raw: dict[str, Any], media: _MediaIndex) -> list[VideoItem]:
    sentences = _captions_by_id(raw["annotations"], "image_id")
    return [_whole_clip(str(i["id"]), media.by_name(str(i["file_name"])), sentences)
            for i in raw["images"] if sentences.get(str(i["id"]))]


def _captions_by_id(entries: list[dict[str, Any]], key: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        grouped[str(entry[key])].append(_sentence(entry["caption"]))
    return grouped


def _whole_clip(item_id: str, path: Path, sentences: dict[str, list[str]]) -> VideoItem:
    # A clip-level caption covers the whole clip (or image), whatever its length.
    return VideoItem(item_id, path, (Segment(0.0, math.inf, tuple(sentences[item_id])),))


def _sentence(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"caption must be a non-empty string, got {value!r}")
    return value.strip()


def frame_targets(item: VideoItem, times: Iterable[float]) -> list[Segment | None]:
    """The segment each sampled frame must describe (None: the frame carries no loss)."""
    return [item.target_at(float(t)) for t in times]


def frame_references(item: VideoItem, times: Iterable[float]) -> list[tuple[str, ...] | None]:
    """The reference sentences of each sampled frame (None: no target), for exact match."""
    return [seg.sentences if seg else None for seg in frame_targets(item, times)]


def seen_times(item: VideoItem, times: Sequence[float] | np.ndarray) -> list[float]:
    """Seconds of its segment each frame's viewer has seen, for a stream that starts at
    ``times[0]``: from the later of the segment's start and the stream's first frame."""
    first = float(times[0]) if len(times) else 0.0
    return [float(t) - max(seg.start, first) if seg else 0.0
            for t, seg in zip(times, frame_targets(item, times), strict=True)]


def frame_truthful_targets(item: VideoItem,
                           times: Sequence[float] | np.ndarray) -> list[tuple[str, ...] | None]:
    """What each frame's caption may say, for a stream starting at ``times[0]``: the
    segment's appearance until its motion is evident, then its sentences (None: no target)."""
    first = float(times[0]) if len(times) else 0.0
    return [seg.target(float(t) - max(seg.start, first)) if seg else None
            for t, seg in zip(times, frame_targets(item, times), strict=True)]
