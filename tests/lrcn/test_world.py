"""Tests of the ShapesWorld generator: plans and pixels (fast), then encoded splits and the CLI."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest

from lrcn import world
from lrcn.world import (
    COLORS,
    MOTIONS,
    NOVEL_TRIPLES,
    SHAPES,
    Track,
    VideoPlan,
    WorldConfig,
    generate_split,
    main,
    parse_triples,
    plan_video,
    render_frames,
    write_video,
)

CAPTION = re.compile(
    r"^a (red|green|blue|yellow|purple|white) (circle|square|triangle) "
    r"(moves left|moves right|moves up|moves down|stays still|grows|shrinks)$"
)
FLAT = WorldConfig(noise=False)
# Short videos (at most 2 events of at most 2 s) keep the encoding tests fast.
SHORT = WorldConfig(max_events=2, max_event_s=2.0)
EPS = 1e-9


def _plans(seed: int, count: int, config: WorldConfig | None = None) -> Iterator[VideoPlan]:
    return (plan_video(seed, index, config) for index in range(count))


def _event_frames(motion: str, wanted: int = 3) -> Iterator[tuple[VideoPlan, Track, list]]:
    """Rendered noise-free frames of the first ``wanted`` events with ``motion``."""
    found = 0
    for plan in _plans(seed=101, count=200, config=FLAT):
        for event, track in zip(plan.events, plan.tracks, strict=True):
            if event.motion == motion and found < wanted:
                frames = list(render_frames(plan))[track.start_frame:track.end_frame]
                found += 1
                yield plan, track, frames
    assert found == wanted, f"only {found} {motion!r} events in 200 plans"


def _mask(frame: np.ndarray, background: int) -> np.ndarray:
    return (frame != background).any(axis=2)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean()), float(rows.mean())


def _box_center(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2


# --- plans: captions, timing, holdout (no pixels) -----------------------------------------


def test_plans_depend_only_on_seed_and_index() -> None:
    assert plan_video(5, 2) == plan_video(5, 2)
    assert [plan_video(5, i) for i in (2, 0, 1)] == [plan_video(5, i) for i in (2, 0, 1)]
    assert plan_video(5, 0) != plan_video(6, 0)
    assert plan_video(5, 0) != plan_video(5, 1)
    assert plan_video(5, 0).video_id == "shapes_s5_00000"


def test_captions_and_event_structure() -> None:
    counts = set()
    for plan in _plans(seed=1, count=300):
        assert 1 <= len(plan.events) <= 4
        counts.add(len(plan.events))
        assert plan.events[0].start == 0.0
        assert plan.events[-1].end == pytest.approx(plan.duration)
        assert plan.n_frames == round(plan.duration * plan.fps)
        for event in plan.events:
            assert CAPTION.match(event.caption), event.caption
            assert 1.5 - EPS <= event.end - event.start <= 4.0 + EPS
            # Boundaries fall on frame times.
            assert event.start * plan.fps == pytest.approx(round(event.start * plan.fps))
        for before, after in pairwise(plan.events):
            assert before.end == after.start
            assert before.triple != after.triple
        annotation = plan.annotation()
        assert annotation["sentences"] == [event.caption for event in plan.events]
        assert annotation["timestamps"] == [[e.start, e.end] for e in plan.events]
        assert annotation["duration"] == plan.duration
    assert counts == {1, 2, 3, 4}


def test_every_word_is_used() -> None:
    triples = {event.triple for plan in _plans(seed=2, count=300) for event in plan.events}
    assert {t[0] for t in triples} == set(COLORS)
    assert {t[1] for t in triples} == set(SHAPES)
    assert {t[2] for t in triples} == set(MOTIONS)


def test_other_fps_keeps_boundaries_on_frames() -> None:
    config = WorldConfig(fps=25)
    for plan in _plans(seed=3, count=50, config=config):
        assert plan.fps == 25
        for event, track in zip(plan.events, plan.tracks, strict=True):
            assert event.start == track.start_frame / 25 and event.end == track.end_frame / 25
            assert 1.5 - EPS <= event.end - event.start <= 4.0 + EPS


def test_holdout_triples_never_appear() -> None:
    config = WorldConfig(holdout=NOVEL_TRIPLES)
    for plan in _plans(seed=4, count=300, config=config):
        assert not {event.triple for event in plan.events} & NOVEL_TRIPLES


def test_only_holdout_uses_only_held_out_triples() -> None:
    config = WorldConfig(holdout=NOVEL_TRIPLES, only_holdout=True)
    seen = set()
    for plan in _plans(seed=5, count=200, config=config):
        for before, after in pairwise(plan.events):
            assert before.triple != after.triple
        seen |= {event.triple for event in plan.events}
    assert seen == NOVEL_TRIPLES


def test_only_holdout_needs_two_triples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        WorldConfig(holdout=frozenset({("red", "circle", "grows")}), only_holdout=True)
    with pytest.raises(ValueError, match="at least 2"):
        WorldConfig(only_holdout=True)


def test_novel_triples_leave_every_word_in_training() -> None:
    assert len(NOVEL_TRIPLES) == 6
    training = world._allowed_triples(NOVEL_TRIPLES, False)
    assert len(training) == len(COLORS) * len(SHAPES) * len(MOTIONS) - 6
    assert {t[0] for t in training} == set(COLORS)
    assert {t[1] for t in training} == set(SHAPES)
    assert {t[2] for t in training} == set(MOTIONS)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown color 'pink'"):
        WorldConfig(holdout=frozenset({("pink", "circle", "grows")}))
    with pytest.raises(ValueError, match="even"):
        WorldConfig(width=321)
    with pytest.raises(ValueError, match="too small"):
        WorldConfig(width=120, height=90)
    with pytest.raises(ValueError, match="min_events"):
        WorldConfig(min_events=3, max_events=2)


def test_parse_triples() -> None:
    assert parse_triples("red circle moves left; a Blue square grows;") == {
        ("red", "circle", "moves left"), ("blue", "square", "grows")}
    with pytest.raises(ValueError, match="bad triple 'red cube grows'.*unknown shape 'cube'"):
        parse_triples("red circle grows;red cube grows")
    with pytest.raises(ValueError, match="bad triple 'red circle'"):
        parse_triples("red circle")
    with pytest.raises(ValueError, match="no triples"):
        parse_triples(" ; ")


# --- pixels (rendered, not encoded) --------------------------------------------------------


def test_render_is_deterministic() -> None:
    plan = plan_video(7, 0, SHORT)
    assert plan.noise_sigma > 0
    first, second = list(render_frames(plan)), list(render_frames(plan))
    assert len(first) == plan.n_frames
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # Fresh noise every frame.
    assert not np.array_equal(first[0], first[1])
    other = next(render_frames(plan_video(8, 0, SHORT)))
    assert not np.array_equal(first[0], other)


def test_noise_flag_changes_only_the_noise() -> None:
    noisy, flat = plan_video(9, 0), plan_video(9, 0, FLAT)
    assert flat.noise_sigma == 0.0
    assert noisy.events == flat.events and noisy.tracks == flat.tracks


def test_frames_show_one_object_inside_a_flat_background() -> None:
    for plan in _plans(seed=11, count=6, config=FLAT):
        assert 0 <= plan.background <= 80
        frames = list(render_frames(plan))
        assert len(frames) == plan.n_frames
        for event, track in zip(plan.events, plan.tracks, strict=True):
            named = np.array(COLORS[event.color])
            assert np.abs(np.array(track.rgb) - named).max() <= 20
            for frame in frames[track.start_frame:track.end_frame]:
                assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
                for border in (frame[0], frame[-1], frame[:, 0], frame[:, -1]):
                    assert (border == plan.background).all()
                mask = _mask(frame, plan.background)
                assert mask.sum() > 100
                # The frame at a boundary already shows the next event's object.
                assert (frame[mask] == track.rgb).all()


@pytest.mark.parametrize(("motion", "axis", "sign"), [
    ("moves right", 0, 1), ("moves left", 0, -1), ("moves down", 1, 1), ("moves up", 1, -1),
])
def test_moving_objects_move_steadily(motion: str, axis: int, sign: int) -> None:
    for plan, _, frames in _event_frames(motion):
        centers = np.array([_centroid(_mask(f, plan.background)) for f in frames])
        steps = np.diff(centers[:, axis]) * sign
        assert (steps > 0).all()
        speed = (centers[-1, axis] - centers[0, axis]) * sign / ((len(frames) - 1) / plan.fps)
        assert 39 <= speed <= 121
        assert np.ptp(centers[:, 1 - axis]) < 1.0


def test_still_objects_stay_still() -> None:
    for plan, _, frames in _event_frames("stays still"):
        masks = [_mask(f, plan.background) for f in frames]
        assert all(np.array_equal(masks[0], m) for m in masks)


@pytest.mark.parametrize("motion", ["grows", "shrinks"])
def test_growing_and_shrinking(motion: str) -> None:
    for plan, track, frames in _event_frames(motion):
        areas = np.array([_mask(f, plan.background).sum() for f in frames])
        change = np.diff(areas) if motion == "grows" else -np.diff(areas)
        assert (change >= 0).all()
        ratio = areas[-1] / areas[0] if motion == "grows" else areas[0] / areas[-1]
        assert ratio > 1.5
        assert min(track.size0, track.size1) >= 8
        # The box, not the centroid: a growing triangle's centroid drifts toward its base.
        centers = np.array([_box_center(_mask(f, plan.background)) for f in frames])
        assert np.ptp(centers, axis=0).max() <= 1.0


def test_shape_masks() -> None:
    _, _, triangle = world._shape_mask("triangle", 50.0, 50.0, 20.0, 100, 100)
    widths = triangle.sum(axis=1)
    widths = widths[widths > 0]
    assert widths[0] < 5 and widths[-1] >= 39 and (np.diff(widths) >= 0).all()  # apex up
    _, _, square = world._shape_mask("square", 50.0, 50.0, 20.0, 100, 100)
    assert square.sum() == 40 * 40
    _, _, circle = world._shape_mask("circle", 50.0, 50.0, 20.0, 100, 100)
    assert abs(circle.sum() - np.pi * 400) < 40


# --- encoded videos and splits ------------------------------------------------------------


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 3-video split generated twice."""
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    generate_split(first, 3, seed=21, config=SHORT, progress=False)
    generate_split(second, 3, seed=21, config=SHORT, progress=False)
    return first, second


def _decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_split_is_deterministic(splits: tuple[Path, Path]) -> None:
    first, second = splits
    assert (first / "captions.json").read_bytes() == (second / "captions.json").read_bytes()
    names = sorted(p.name for p in (first / "videos").iterdir())
    assert names == sorted(p.name for p in (second / "videos").iterdir())
    for name in names:
        # x264 output is byte-identical for identical frames (see world._X264_AVX512_FLAGS).
        assert (first / "videos" / name).read_bytes() == (second / "videos" / name).read_bytes()


def test_split_layout(splits: tuple[Path, Path]) -> None:
    split = splits[0]
    captions = json.loads((split / "captions.json").read_text())
    videos = sorted((split / "videos").iterdir())
    # Nothing but finished videos: no temporary files left behind.
    assert [p.suffix for p in videos] == [".mp4"] * 3
    assert sorted(captions) == [p.stem for p in videos] == [
        f"shapes_s21_{i:05d}" for i in range(3)]
    for path in videos:
        entry = captions[path.stem]
        assert entry == plan_video(21, int(path.stem[-5:]), SHORT).annotation()
        frames = _decode(path)
        assert len(frames) == round(entry["duration"] * 30)
        assert (frames[0].width, frames[0].height) == (320, 240)
        assert [float(f.time) for f in frames] == pytest.approx(
            [i / 30 for i in range(len(frames))])


def test_encoded_frames_match_rendered(splits: tuple[Path, Path]) -> None:
    plan = plan_video(21, 0, SHORT)
    decoded = [f.to_ndarray(format="rgb24") for f in _decode(splits[0] / "videos" /
                                                              f"{plan.video_id}.mp4")]
    for rendered, frame in zip(render_frames(plan), decoded, strict=True):
        # Lossy H.264 and 4:2:0 chroma, but the picture is the same.
        assert np.abs(rendered.astype(int) - frame.astype(int)).mean() < 12


def test_write_video_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(plan: VideoPlan) -> Iterator[np.ndarray]:
        yield np.zeros((plan.height, plan.width, 3), dtype=np.uint8)
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(world, "render_frames", broken)
    target = tmp_path / "videos" / "x.mp4"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(plan_video(1, 0), target)
    assert list(target.parent.iterdir()) == []


def test_generate_split_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="videos"):
        generate_split(tmp_path, 0, seed=1)
    with pytest.raises(ValueError, match="seed"):
        generate_split(tmp_path, 1, seed=-1)


@pytest.mark.slow
def test_parallel_split_matches_serial(splits: tuple[Path, Path], tmp_path: Path) -> None:
    generate_split(tmp_path, 3, seed=21, config=SHORT, workers=2, progress=False)
    for path in sorted((splits[0] / "videos").iterdir()):
        assert (tmp_path / "videos" / path.name).read_bytes() == path.read_bytes()
    assert (tmp_path / "captions.json").read_bytes() == (
        splits[0] / "captions.json").read_bytes()


# --- command line ----------------------------------------------------------------------------


def test_cli_writes_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Seed 11's first video is a single short event: a quick encode.
    assert plan_video(11, 0).n_frames < 60
    out = tmp_path / "train"
    assert main(["--out", str(out), "--videos", "1", "--seed", "11", "--holdout", "default",
                 "--no-progress"]) == 0
    captions = json.loads((out / "captions.json").read_text())
    assert list(captions) == ["shapes_s11_00000"]
    assert (out / "videos" / "shapes_s11_00000.mp4").is_file()
    assert "wrote 1 videos" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--holdout", "red circle moves left;red cube grows"], "bad triple 'red cube grows'"),
    (["--holdout", "red circle grows", "--only-holdout"], "at least 2"),
    (["--only-holdout"], "--only-holdout needs --holdout"),
    (["--videos", "0"], "--videos must be at least 1"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--seed", "-3"], "--seed must be non-negative"),
    (["--fps", "0"], "fps must be at least 1"),
    (["--crf", "60"], "crf must be in 0..51"),
])
def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                          message: str) -> None:
    base = {"--out": str(tmp_path / "x"), "--videos": "1", "--seed": "1"}
    for flag in args:
        base.pop(flag, None)
    argv = [item for pair in base.items() for item in pair] + args
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_cli_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--videos", "--seed", "--fps", "--no-noise", "--holdout",
                   "--only-holdout", "--workers", "--antialias", "--crf", "--vary", "--stills"):
        assert option in text


# --- what a frame can show: appearance and evident motion -----------------------------------


def test_annotation_names_each_events_appearance_and_when_its_motion_is_evident() -> None:
    for plan in _plans(seed=31, count=40):
        annotation = plan.annotation()
        assert len(annotation["appearance"]) == len(annotation["evident"]) == len(plan.events)
        for event, track, look, evident in zip(plan.events, plan.tracks,
                                               annotation["appearance"], annotation["evident"],
                                               strict=True):
            assert event.caption.startswith(look + " ") and len(look.split()) == 3
            assert evident == pytest.approx(track.evident(plan.fps), abs=1e-4)
            frames = track.end_frame - track.start_frame
            shift = np.hypot(track.x1 - track.x0, track.y1 - track.y0) / frames
            growth = abs(track.size1 - track.size0) / frames
            seconds = track.evident(plan.fps) * plan.fps  # frames until the motion shows
            if event.motion == "stays still":
                assert evident == pytest.approx(world.still_evident(), abs=1e-4)
            else:
                # The evident time is when the object has moved or resized enough, not before.
                reached = max(shift * seconds / world.EVIDENT_SHIFT,
                              growth * seconds / world.EVIDENT_SIZE)
                assert reached == pytest.approx(1.0, rel=1e-3)
            if event.motion.startswith("moves"):
                assert evident <= 0.1  # visible by a 10 fps stream's second frame


def test_stillness_is_evident_only_once_the_slowest_size_change_would_show() -> None:
    # Nothing the generator draws grows or shrinks so slowly that it still looks still then.
    slowest = min(abs(t.size1 - t.size0) / (t.end_frame - t.start_frame) * p.fps
                  for p in _plans(seed=32, count=300) for t, e in zip(p.tracks, p.events,
                                                                       strict=True)
                  if e.motion in ("grows", "shrinks"))
    assert slowest * world.still_evident() >= world.EVIDENT_SIZE - 1e-9


def test_varied_looks_keep_the_events_and_change_the_look() -> None:
    plain, varied = WorldConfig(), WorldConfig(vary=True)
    looks = set()
    for index in range(40):
        a, b = plan_video(9, index, plain), plan_video(9, index, varied)
        assert [e.triple for e in a.events] == [e.triple for e in b.events]
        assert plan_video(9, index, varied) == b  # deterministic
        looks.add((b.fps, b.antialias, b.crf))
        assert 18 <= b.crf <= 32 and b.fps in (24, 25, 30, 50, 60)
        for event, track in zip(b.events, b.tracks, strict=True):
            assert event.start == pytest.approx(track.start_frame / b.fps)
    assert {fps for fps, _, _ in looks} == {24, 25, 30, 50, 60}
    assert {aa for _, aa, _ in looks} == {False, True}
    assert len({crf for _, _, crf in looks}) > 5


def test_varied_backgrounds_are_tinted_and_graded() -> None:
    plans = [plan_video(9, index, WorldConfig(vary=True)) for index in range(20)]
    graded = [p for p in plans if p.ramp > 5]
    assert graded and any(p.tint != (0, 0, 0) for p in plans)
    blank = world.background_image(graded[0])
    assert np.ptp(blank.astype(int).mean(axis=2)) >= graded[0].ramp
    plain = world.background_image(plan_video(9, 0))
    assert (plain == plan_video(9, 0).background).all()


def test_antialiased_edges_cover_their_pixels_in_part() -> None:
    rows, cols, cover = world._shape_coverage("circle", 50.3, 40.7, 12.0, 100, 120)
    assert cover.max() == 1.0 and cover.min() == 0.0
    partial = (cover > 0) & (cover < 1)
    assert partial.sum() > 40  # the rim
    # The covered area is the circle's (16 samples per pixel: close, not exact).
    assert cover.sum() == pytest.approx(np.pi * 12.0**2, rel=0.01)
    _, _, hard = world._shape_mask("circle", 50.3, 40.7, 12.0, 100, 120, bounds=(rows, cols))
    assert (cover[~hard] < 1).all() or hard.all()


def test_antialiased_frames_blend_the_object_into_the_background() -> None:
    for shape in SHAPES:
        plan = next(p for p in _plans(33, 50, WorldConfig(noise=False, antialias=True))
                    if p.tracks[0].shape == shape)
        frames = list(itertools.islice(render_frames(plan), 3))
        colors = {tuple(int(v) for v in c) for f in frames for c in f.reshape(-1, 3)}
        assert (plan.background,) * 3 in colors and plan.tracks[0].rgb in colors
        assert len(colors) >= 5, shape  # edge pixels in between (coverage in 1/16 steps)


def test_stills_are_one_frame_items_captioned_with_their_appearance(tmp_path: Path) -> None:
    from lrcn.data import load_dataset
    from stream.media.frames import read_sampled_frames

    path = world.generate_stills(tmp_path / "stills", 12, seed=34,
                                 config=WorldConfig(vary=True), progress=False)
    assert path.name == "annotations.json"
    data = load_dataset(tmp_path / "stills")
    assert data.layout == "coco" and len(data.items) == 12
    suffixes = {item.path.suffix for item in data.items}
    assert suffixes == {".png", ".jpg"}
    for index, item in enumerate(data.items):
        (caption,) = item.segments[0].sentences
        plan = plan_video(34, index, WorldConfig(vary=True))
        assert caption in {event.appearance for event in plan.events}
        frames, times = read_sampled_frames(item.path, 10, (plan.width, plan.height))
        assert frames.shape == (1, plan.height, plan.width, 3) and list(times) == [0.0]
    again = world.generate_stills(tmp_path / "again", 12, seed=34,
                                  config=WorldConfig(vary=True), progress=False)
    assert again.read_text() == path.read_text()


def test_cli_writes_stills(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stills"
    assert main(["--out", str(out), "--videos", "3", "--seed", "11", "--stills",
                 "--no-progress"]) == 0
    annotation = json.loads((out / "annotations.json").read_text())
    assert len(annotation["images"]) == 3
    assert all(CAPTION.match(a["caption"] + " stays still") for a in annotation["annotations"])
    assert "wrote 3 images" in capsys.readouterr().out
