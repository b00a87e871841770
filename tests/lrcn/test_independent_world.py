"""The independent ShapesWorld renderer: its pictures tell what its annotations say (measured in
the pixels), it draws nothing with lrcn.world's code, it is deterministic, and its splits read
like lrcn.world's."""

from __future__ import annotations

import ast
import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from lrcn import independent_world as indep
from lrcn import world
from lrcn.data import load_dataset
from lrcn.independent_world import IndependentVideo, draw_frame, plan_independent_video
from lrcn.world import EVIDENT_SHIFT, EVIDENT_SIZE, NOVEL_TRIPLES, WorldConfig
from stream.media.frames import read_sampled_frames

MODULE = Path(indep.__file__)
# What the renderer may take from lrcn.world: the grammar (plans, captions, layout, holdout),
# its shared command-line options and the process map; nothing that draws, colours, adds noise
# or encodes.
GRAMMAR = frozenset({
    "CAPTIONS_NAME", "IMAGES_DIR", "NOVEL_TRIPLES", "STILLS_NAME", "VIDEOS_DIR", "EVIDENT_SHIFT",
    "EVIDENT_SIZE", "Event", "Track", "Triple", "VideoPlan", "WorldConfig", "map_jobs",
    "parse_triples", "plan_video", "add_split_arguments", "split_config",
})
# lrcn.world's look of a plan: drawing with any of these would be drawing lrcn.world's picture.
PLAN_LOOK_FIELDS = frozenset({"rgb", "background", "noise_sigma", "noise_seed", "tint", "ramp",
                              "ramp_angle", "antialias", "crf"})
# lrcn.world's drawing, noise and encoding functions (what the renderer must never call).
WORLD_DRAWING = ("render_frame", "render_frames", "_draw", "background_image", "_shape_mask",
                 "_shape_coverage", "write_video", "write_image", "_x264_options", "_draw_look")
# Fraction of its bounding box each shape fills.
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
TINY = WorldConfig(min_events=1, max_events=2, min_event_s=0.2, max_event_s=0.3)


def color_name(rgb: np.ndarray | tuple[int, int, int]) -> str | None:
    """What a person calls an 8-bit RGB colour, by hue (None: between two names)."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    hue *= 360
    if saturation < 0.15:
        return "white" if value > 0.8 else None
    for name, low, high in (("red", -20, 15), ("yellow", 42, 68), ("green", 90, 160),
                            ("blue", 195, 240), ("purple", 262, 300)):
        if low <= hue <= high or low <= hue - 360 <= high:
            return name
    return None


@dataclass(frozen=True)
class Blob:
    """The object as measured in a frame: covered area, centroid, bounding box (pixels)."""

    area: float
    x: float
    y: float
    width: int
    height: int

    def size(self, shape: str) -> float:
        """Radius or half side (the plan's ``size``) of a ``shape`` with this area."""
        return math.sqrt(self.area / (4 * FILL[shape]))

    def shape(self) -> str:
        fill = self.area / (self.width * self.height)
        return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


def measure(video: IndependentVideo, frame: np.ndarray, color: str) -> Blob:
    """Where the frame differs from the empty background toward ``color``'s shade: each
    pixel's share of the shade (antialiased edges count in part)."""
    empty = indep.backdrop(video.look)
    shade = np.array(video.look.shade(color), np.float64)
    difference = frame.astype(np.float64) - empty
    toward = shade - empty
    alpha = np.clip((difference * toward).sum(-1) / (toward * toward).sum(-1), 0.0, 1.0)
    alpha[np.abs(difference).max(-1) < 4] = 0.0  # rounding and blur of the background alone
    area = float(alpha.sum())
    rows, cols = np.nonzero(alpha >= 0.5)
    y, x = np.mgrid[0:frame.shape[0], 0:frame.shape[1]] + 0.5
    return Blob(area, float((alpha * x).sum() / area), float((alpha * y).sum() / area),
                int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))


def _videos_covering_every_word(seed: int) -> list[IndependentVideo]:
    """The first videos of a split that show every colour, shape and motion at least once."""
    wanted = set(world.COLORS) | set(world.SHAPES) | set(world.MOTIONS)
    videos = []
    for index in range(100):
        video = plan_independent_video(seed, index)
        words = {w for e in video.plan.events for w in (e.color, e.shape, e.motion)}
        if words & wanted:  # shows something not yet seen
            videos.append(video)
            wanted -= words
        if not wanted:
            return videos
    raise AssertionError(f"no video of seed {seed} shows {sorted(wanted)}")


# --- (1) the annotations are true of the pictures -------------------------------------------


def test_each_event_shows_its_appearance_where_and_as_large_as_planned() -> None:
    for video in _videos_covering_every_word(seed=61):
        look = video.look
        appearance = video.annotation()["appearance"]
        for track, words in zip(video.plan.tracks, appearance, strict=True):
            _, color, shape = words.split()
            for index in (track.start_frame, track.end_frame - 1):  # the event's boundaries
                frame = draw_frame(video, index, clean=True)
                cx, cy, size = (v * look.scale for v in track.at(index))
                assert color_name(frame[int(cy), int(cx)]) == color, (video.video_id, index)
                blob = measure(video, frame, color)
                assert blob.shape() == shape, (video.video_id, index, blob)
                centroid_y = cy + (size / 3 if shape == "triangle" else 0.0)
                assert (blob.x, blob.y) == pytest.approx((cx, centroid_y), abs=0.25)
                assert blob.size(shape) == pytest.approx(size, rel=0.02, abs=0.15)


def change(video: IndependentVideo, event: int, seconds: float) -> float:
    """How far event ``event``'s object has moved (or resized, for a motion that is not a move)
    in the pixels after ``seconds`` of it, in plan pixels (frame pixels / scale)."""
    look, track, what = video.look, video.plan.tracks[event], video.plan.events[event]
    first, then = (measure(video, draw_frame(video, index, clean=True), what.color)
                   for index in (track.start_frame,
                                 track.start_frame + round(seconds * look.fps)))
    if what.motion.startswith("moves"):
        return math.hypot(then.x - first.x, then.y - first.y) / look.scale
    return abs(then.size(what.shape) - first.size(what.shape)) / look.scale


def test_motion_shows_in_the_pixels_by_its_evident_time_and_not_well_before() -> None:
    checked = set()
    for video in _videos_covering_every_word(seed=62):
        look, annotation = video.look, video.annotation()
        for k, (track, event, evident) in enumerate(zip(video.plan.tracks, video.plan.events,
                                                        annotation["evident"], strict=True)):
            if event.motion == "stays still":
                # Nothing moves or resizes, through the whole event.
                last = (track.end_frame - 1 - track.start_frame) / look.fps
                assert change(video, k, last) < 0.1 and change(video, k, evident) < 0.1
                checked.add(event.motion)
                continue
            needed = EVIDENT_SHIFT if event.motion.startswith("moves") else EVIDENT_SIZE
            # The first frame at or after the evident time shows it ...
            seen = math.ceil(evident * look.fps - 1e-6) / look.fps
            assert change(video, k, seen) >= 0.85 * needed, (video.video_id, event)
            # ... and a frame at half that time, where there is one, not yet.
            half = math.floor(evident * look.fps / 2) / look.fps
            assert change(video, k, half) <= 0.7 * needed, (video.video_id, event)
            checked.add(event.motion)
    assert checked == set(world.MOTIONS)


def test_frames_are_scaled_from_the_plan_and_events_stay_in_seconds() -> None:
    sizes, rates = set(), set()
    for index in range(80):
        video = plan_independent_video(63, index, WorldConfig(holdout=NOVEL_TRIPLES))
        look, plan = video.look, video.plan
        assert look.width * 3 == look.height * 4 and look.width % 2 == look.height % 2 == 0
        assert 320 <= look.width <= 640 and 24 <= look.fps <= 60
        assert (plan.width, plan.height, plan.fps) == (320, 240, look.fps)
        for event, track in zip(plan.events, plan.tracks, strict=True):
            assert event.start == pytest.approx(track.start_frame / look.fps)
            assert event.triple not in NOVEL_TRIPLES
        # The same events as lrcn.world's plan of that video at that rate.
        same = world.plan_video(63, index, WorldConfig(holdout=NOVEL_TRIPLES, fps=look.fps))
        assert video.annotation() == same.annotation()
        sizes.add(look.width)
        rates.add(look.fps)
    assert sizes == {w for w, _ in indep.FRAME_SIZES} and rates == set(indep.FRAME_RATES)


def test_every_shade_is_named_its_colour_and_stands_out_from_the_background() -> None:
    for index in range(300):
        look = indep.draw_look(64, index)
        for word, rgb in look.shades:
            assert color_name(rgb) == word, (index, word, rgb)
            for background in look.backdrop_colors:
                distance = np.linalg.norm(np.subtract(rgb, background))
                assert distance > 60 + look.texture, (index, word, rgb, background)


# --- (2) independence from lrcn.world's drawing ---------------------------------------------


def test_only_the_grammar_is_imported_from_lrcn_world() -> None:
    tree = ast.parse(MODULE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lrcn.world":
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "lrcn":
            assert "world" not in {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            assert "lrcn.world" not in {alias.name for alias in node.names}
    assert imported and imported <= GRAMMAR, imported - GRAMMAR
    # Nor does it read the plan's look (lrcn.world's colours, background, noise, encoding).
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & PLAN_LOOK_FIELDS


def test_the_palette_is_its_own_with_shades_drawn_per_video() -> None:
    assert indep.PALETTE is not world.COLORS and set(indep.PALETTE) == set(world.COLORS)
    shades: dict[str, set[tuple[int, int, int]]] = {word: set() for word in world.COLORS}
    for index in range(50):
        for word, rgb in indep.draw_look(65, index).shades:
            shades[word].add(rgb)
    for word, drawn in shades.items():
        assert world.COLORS[word] not in drawn
        assert len(drawn) > 40, word  # jittered per video


def test_rendering_calls_no_drawing_code_of_lrcn_world(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("lrcn.world drawing code called")

    for name in WORLD_DRAWING:
        monkeypatch.setattr(world, name, forbidden)
    indep.generate_split(tmp_path / "videos", 1, seed=66, config=TINY, progress=False)
    indep.generate_stills(tmp_path / "stills", 2, seed=66, progress=False)


# --- (3) deterministic by seed --------------------------------------------------------------


def test_frames_depend_only_on_seed_and_index() -> None:
    video = plan_independent_video(67, 3)
    late = draw_frame(video, 9).tobytes()  # drawn first: frames are drawn in any order
    frames = [draw_frame(video, index).tobytes() for index in range(10)]
    again = plan_independent_video(67, 3)
    assert again == video
    assert [draw_frame(again, index).tobytes() for index in range(10)] == frames
    assert frames[9] == late
    assert len(set(frames)) == 10  # noise or motion: every frame its own
    other = plan_independent_video(68, 3)
    assert other.annotation() != video.annotation()
    assert draw_frame(other, 0).tobytes() != frames[0]


def test_splits_and_stills_are_the_same_for_the_same_seed(tmp_path: Path) -> None:
    one = indep.generate_stills(tmp_path / "one", 4, seed=69, progress=False)
    two = indep.generate_stills(tmp_path / "two", 4, seed=69, workers=2, progress=False)
    other = indep.generate_stills(tmp_path / "other", 4, seed=70, progress=False)
    assert one.read_text() == two.read_text() != other.read_text()
    images = sorted((tmp_path / "one" / "images").iterdir())
    assert [p.read_bytes() for p in images] == [
        (tmp_path / "two" / "images" / p.name).read_bytes() for p in images]
    videos = indep.generate_split(tmp_path / "v1", 2, seed=69, config=TINY, progress=False)
    again = indep.generate_split(tmp_path / "v2", 2, seed=69, config=TINY, progress=False)
    assert videos.read_text() == again.read_text()


# --- (4) the layout reads like lrcn.world's -------------------------------------------------


def test_a_video_split_loads_and_decodes_as_planned(tmp_path: Path) -> None:
    indep.generate_split(tmp_path, 3, seed=71, config=TINY, progress=False)
    data = load_dataset(tmp_path)
    assert data.layout == "activitynet" and len(data.items) == 3
    for index, item in enumerate(data.items):
        video = plan_independent_video(71, index, TINY)
        assert item.video_id == video.video_id == f"indep_s71_{index:05d}"
        assert [s.appearance[0] for s in item.segments] == video.annotation()["appearance"]
        assert [s.evident for s in item.segments] == video.annotation()["evident"]
        with av.open(str(item.path)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (video.look.width, video.look.height)
            assert stream.average_rate == video.look.fps
        frames, times = read_sampled_frames(item.path, None, (64, 48))
        assert len(frames) == video.plan.n_frames
        assert times == pytest.approx(np.arange(video.plan.n_frames) / video.look.fps)
        assert item.segments[-1].end == pytest.approx(video.plan.duration)


def test_stills_load_as_one_frame_items_captioned_with_their_appearance(tmp_path: Path) -> None:
    indep.generate_stills(tmp_path, 10, seed=72, config=WorldConfig(holdout=NOVEL_TRIPLES),
                          progress=False)
    data = load_dataset(tmp_path)  # what lrcn.evaluate reads a --stills split with
    assert data.layout == "coco" and len(data.items) == 10
    assert {item.path.suffix for item in data.items} == {".png", ".jpg"}
    for index, item in enumerate(data.items):
        video = plan_independent_video(72, index, WorldConfig(holdout=NOVEL_TRIPLES))
        (caption,) = item.segments[0].sentences
        assert item.video_id == video.video_id
        assert caption in {event.appearance for event in video.plan.events}
        frames, times = read_sampled_frames(item.path, 2, (video.look.width, video.look.height))
        assert frames.shape == (1, video.look.height, video.look.width, 3)
        assert list(times) == [0.0]


# --- (5) the command line -------------------------------------------------------------------


def test_cli_writes_a_tiny_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "split"
    assert indep.main(["--out", str(out), "--videos", "2", "--seed", "73", "--events", "1", "1",
                       "--event-seconds", "0.2", "0.25", "--holdout", "default",
                       "--no-progress"]) == 0
    captions = json.loads((out / "captions.json").read_text())
    assert sorted(captions) == ["indep_s73_00000", "indep_s73_00001"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        "indep_s73_00000.mp4", "indep_s73_00001.mp4"]
    assert "wrote 2 videos" in capsys.readouterr().out
    assert indep.main(["--out", str(tmp_path / "stills"), "--videos", "2", "--seed", "73",
                       "--stills", "--no-progress"]) == 0
    assert len(json.loads((tmp_path / "stills" / "annotations.json").read_text())["images"]) == 2


@pytest.mark.parametrize("args", [
    ["--videos", "0", "--seed", "1"],  # no videos
    ["--videos", "1", "--seed", "-1"],  # negative seed
    ["--videos", "1", "--seed", "1", "--workers", "0"],  # no workers
    ["--videos", "1", "--seed", "1", "--holdout", "pink circle grows"],  # unknown colour
    ["--videos", "1", "--seed", "1", "--only-holdout"],  # without --holdout
    ["--videos", "1", "--seed", "1", "--event-seconds", "0.034", "0.04"],  # no whole frame
])
def test_cli_errors_in_one_line(args: list[str], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert indep.main(["--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m lrcn.independent_world: error: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        indep.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in indep.get_args_parser()._actions:
        for option in action.option_strings:
            assert option in text
    assert "evaluation only" in text
