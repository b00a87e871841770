"""ShapesWorld: a deterministic generator of captioned videos.

Each video shows one colored shape at a time on a gray background; every 1.5 to 4 seconds the
shape is replaced by another one doing something else, and each of these events is captioned
``a {color} {shape} {motion}`` ("a red circle moves left"). Splits are written in the ActivityNet
Captions layout that :mod:`lrcn.data` reads::

    <split>/captions.json           {video_id: {"duration", "timestamps", "sentences",
                                                "appearance", "evident"}}
    <split>/videos/<video_id>.mp4   H.264, yuv420p, 320x240, 30 fps

Beside each sentence, ``appearance`` holds what one frame can show ("a red circle") and
``evident`` the seconds of the event a viewer must have seen before its motion is visible: the
object has moved ``EVIDENT_SHIFT`` pixels or changed its size by ``EVIDENT_SIZE`` pixels. A still
object's stillness is evident once the slowest growing or shrinking the generator draws would have
shown. Before that, the truthful caption is the appearance.

``vary=True`` draws each video's look at random (frame rate, antialiased edges, tinted and
graded backgrounds, noise level, compression), so that a model trained on it does not depend on
one renderer. ``--stills`` writes still images in the COCO captions layout, captioned with their
appearance (one frame shows no motion).

Everything a video shows is a function of ``(seed, index, config)``: each video draws from its own
``SeedSequence([seed, index])``, so videos can be generated in any order or in parallel.
Held-out (color, shape, motion) triples give a test of novel combinations: train on a split
generated with ``holdout=NOVEL_TRIPLES`` and test on one with ``only_holdout=True``.

Example:
    python -m lrcn.world --out data/shapes/train --videos 2000 --seed 1 --holdout default
    python -m lrcn.world --out data/shapes/novel --videos 200 --seed 3 --holdout default \\
        --only-holdout
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias, cast

import av
import numpy as np
from av.video.stream import VideoStream
from tqdm import tqdm

from stream.cli.arguments import Parser
from stream.files import write_atomically, write_text_atomically

logger = logging.getLogger(__name__)

Triple: TypeAlias = tuple[str, str, str]
"""A (color, shape, motion) combination, e.g. ``("red", "circle", "moves left")``."""

COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 220, 50),
    "purple": (160, 60, 200),
    "white": (240, 240, 240),
})
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = (
    "moves left", "moves right", "moves up", "moves down", "stays still", "grows", "shrinks",
)

# One triple per color, and every shape and motion word still appears in 120 other training
# triples, so a model can only caption these by composing words it learnt apart.
NOVEL_TRIPLES: frozenset[Triple] = frozenset({
    ("red", "circle", "moves left"),
    ("green", "square", "grows"),
    ("blue", "triangle", "moves up"),
    ("yellow", "circle", "shrinks"),
    ("purple", "square", "stays still"),
    ("white", "triangle", "moves right"),
})

CAPTIONS_NAME = "captions.json"
VIDEOS_DIR = "videos"

_COLOR_JITTER = 20
# What a viewer must see before a motion is visible, in pixels of the object's path or size.
EVIDENT_SHIFT = 2.0
EVIDENT_SIZE = 0.5
_MIN_SIZE, _MAX_SIZE = 16.0, 40.0
_MIN_SPEED, _MAX_SPEED = 40.0, 120.0
_MIN_SCALE, _MAX_SCALE = 1.5, 2.5
_MIN_SHRUNK_SIZE = 8.0
_MAX_BACKGROUND = 80
_MAX_NOISE_SIGMA = 8.0
# The look of a varied split (WorldConfig.vary), drawn per video.
_VARIED_FPS = (24, 25, 30, 50, 60)
_VARIED_MAX_GRAY = 110
_VARIED_TINT = 25
_VARIED_MAX_RAMP = 35.0
_VARIED_MAX_NOISE_SIGMA = 12.0
_VARIED_CRF = (18, 32)
_ANTIALIAS_SAMPLES = 4  # per side: 16 sub-pixel samples give a pixel's coverage (1/4 px steps)
_STILL_QUALITY = (2, 12)  # JPEG qscale range of varied still images (2: best)
# Objects keep one pixel clear of the frame edge, so no border pixel is ever part of an object
# (pixel centers sit at half-integers; with a zero margin an object touching x=0 would cover
# column 0).
_MARGIN = 1.0
# Pinned so that a change of FFmpeg defaults does not silently change the data set. One x264
# thread: frame threading makes the bitstream depend on scheduling.
_X264_OPTIONS: Mapping[str, str] = MappingProxyType({
    "threads": "1",
    "preset": "veryfast",
    "crf": "23",
})
# x264's AVX-512 code (libx264 core 165 as bundled with PyAV 18) makes the bitstream depend on
# the process's memory state: the same frames encode to different bytes (and slightly different
# pixels) from run to run. Its SSE4.2, AVX and AVX2 paths are bit-exact with each other, so on
# CPUs where x264 would pick AVX-512 we cap it at AVX2 (which such CPUs always have; checked).
_X264_AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
_X264_AVX2_FLAGS = frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "abm", "sse4_2", "ssse3"})


@dataclass(frozen=True)
class WorldConfig:
    """What a ShapesWorld split looks like; every video of a split shares one config.

    Attributes:
        width, height: frame size in pixels (even, for yuv420p).
        fps: frames per second.
        min_events, max_events: range of the number of events per video (uniform, inclusive).
        min_event_s, max_event_s: range of an event's duration in seconds (uniform, then rounded
            to whole frames).
        noise: add per-frame Gaussian noise (sigma drawn per video in [0, 8]).
        holdout: (color, shape, motion) triples excluded from the split...
        only_holdout: ...or, when True, the only triples the split uses.
        antialias: draw edges with their pixel coverage instead of hard.
        crf: x264 quality (lower is better; 23 is FFmpeg's default).
        vary: draw each video's look at random instead (fps from 24 to 60, antialiasing,
            tinted and graded backgrounds, noise sigma up to 12, crf 18 to 32); ``fps``,
            ``antialias`` and ``crf`` are then ignored. The events drawn do not depend on it.
    """

    width: int = 320
    height: int = 240
    fps: int = 30
    min_events: int = 1
    max_events: int = 4
    min_event_s: float = 1.5
    max_event_s: float = 4.0
    noise: bool = True
    holdout: frozenset[Triple] = field(default_factory=frozenset)
    only_holdout: bool = False
    antialias: bool = False
    crf: int = 23
    vary: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable of triples, but store a frozenset so configs stay hashable.
        object.__setattr__(self, "holdout", frozenset(tuple(t) for t in self.holdout))
        for triple in self.holdout:
            _check_triple(triple)
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"frame size must be positive and even, got "
                             f"{self.width}x{self.height}")
        if self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if not 1 <= self.min_events <= self.max_events:
            raise ValueError(f"need 1 <= min_events <= max_events, got "
                             f"{self.min_events}..{self.max_events}")
        if not 0 < self.min_event_s <= self.max_event_s:
            raise ValueError(f"need 0 < min_event_s <= max_event_s, got "
                             f"{self.min_event_s}..{self.max_event_s}")
        lo, hi = self.event_frame_range
        if lo > hi:
            raise ValueError(f"no whole number of frames at {self.fps} fps lies in "
                             f"[{self.min_event_s}, {self.max_event_s}] s")
        travel = min(self.width, self.height) - 2 * _MARGIN - 2 * _MIN_SIZE
        if travel < _MIN_SPEED * self.max_event_s:
            raise ValueError(f"a {self.width}x{self.height} frame is too small for objects "
                             f"moving {_MIN_SPEED:g} px/s for {self.max_event_s:g} s")
        if self.only_holdout and len(self.holdout) < 2:
            raise ValueError("only_holdout needs at least 2 held-out triples so that "
                             f"consecutive events can differ, got {len(self.holdout)}")
        if len(_allowed_triples(self.holdout, self.only_holdout)) < 2:
            raise ValueError("the holdout leaves fewer than 2 triples to generate from")

    @property
    def event_frame_range(self) -> tuple[int, int]:
        """Smallest and largest event length in frames."""
        # The epsilon keeps 1.5 s * 30 fps = 45 from landing on 46 through float error.
        return (math.ceil(self.min_event_s * self.fps - 1e-9),
                math.floor(self.max_event_s * self.fps + 1e-9))


@dataclass(frozen=True)
class Event:
    """One captioned event: seconds [start, end) of a video."""

    start: float
    end: float
    color: str
    shape: str
    motion: str
    evident: float = 0.0  # seconds of the event to see before its motion is visible

    @property
    def triple(self) -> Triple:
        """The (color, shape, motion) combination shown."""
        return (self.color, self.shape, self.motion)

    @property
    def caption(self) -> str:
        """The event's sentence, e.g. ``a red circle moves left``."""
        return f"a {self.color} {self.shape} {self.motion}"

    @property
    def appearance(self) -> str:
        """What one frame of the event shows, e.g. ``a red circle``."""
        return f"a {self.color} {self.shape}"


@dataclass(frozen=True)
class Track:
    """Where an event's object is drawn: frames [start_frame, end_frame) of its video.

    Center (x, y) and size (radius or half-side, in pixels) move linearly in time from their
    values at ``start_frame`` to their values at ``end_frame`` (the first frame of the next
    event, which this track never draws). Coordinates are continuous: pixel (row r, column c)
    has its center at (c + 0.5, r + 0.5).
    """

    start_frame: int
    end_frame: int
    shape: str
    rgb: tuple[int, int, int]
    x0: float
    y0: float
    x1: float
    y1: float
    size0: float
    size1: float

    def at(self, frame: int) -> tuple[float, float, float]:
        """Center x, center y and size of the object in video frame ``frame``."""
        u = (frame - self.start_frame) / (self.end_frame - self.start_frame)
        return (self.x0 + u * (self.x1 - self.x0), self.y0 + u * (self.y1 - self.y0),
                self.size0 + u * (self.size1 - self.size0))

    def evident(self, fps: int) -> float:
        """Seconds of the track to see before its motion is visible (inf: never).

        A track moves and changes size at constant rates, so this holds from any frame on: a
        viewer joining mid-event needs as long as one who saw it begin.
        """
        frames = self.end_frame - self.start_frame
        shift = math.hypot(self.x1 - self.x0, self.y1 - self.y0) / frames
        growth = abs(self.size1 - self.size0) / frames
        if shift == 0 and growth == 0:
            return still_evident()
        per_frame = max(shift / EVIDENT_SHIFT, growth / EVIDENT_SIZE)
        return 1 / (per_frame * fps)


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video and write its annotation."""

    video_id: str
    width: int
    height: int
    fps: int
    background: int
    noise_sigma: float
    noise_seed: int
    events: tuple[Event, ...]
    tracks: tuple[Track, ...]
    tint: tuple[int, int, int] = (0, 0, 0)  # added to the gray background
    ramp: float = 0.0  # a linear brightness ramp across the frame, +-ramp at the ends
    ramp_angle: float = 0.0  # its direction, radians
    antialias: bool = False
    crf: int = 23

    @property
    def n_frames(self) -> int:
        """Number of frames of the video."""
        return self.tracks[-1].end_frame

    @property
    def duration(self) -> float:
        """Length of the video in seconds."""
        return self.n_frames / self.fps

    def annotation(self) -> dict[str, Any]:
        """The video's entry in an ActivityNet Captions style ``captions.json``."""
        return {
            "duration": self.duration,
            "timestamps": [[event.start, event.end] for event in self.events],
            "sentences": [event.caption for event in self.events],
            "appearance": [event.appearance for event in self.events],
            "evident": [round(event.evident, 4) for event in self.events],
        }


def video_id(seed: int, index: int) -> str:
    """The id (and file stem) of video ``index`` of the split generated with ``seed``."""
    return f"shapes_s{seed}_{index:05d}"


def parse_triples(text: str) -> frozenset[Triple]:
    """Parse ``"red circle moves left; blue square grows"`` into (color, shape, motion) triples.

    Triples are separated by ``;``; a leading article (``a red circle ...``) is allowed.

    Raises:
        ValueError: naming the first triple that is not a known color, shape and motion.
    """
    triples = set()
    for item in text.split(";"):
        words = item.lower().split()
        if not words:
            continue
        if words[0] == "a":
            words = words[1:]
        triple = (words[0] if words else "", words[1] if len(words) > 1 else "",
                  " ".join(words[2:]))
        try:
            _check_triple(triple)
        except ValueError as error:
            raise ValueError(f"bad triple {item.strip()!r}: {error}") from None
        triples.add(triple)
    if not triples:
        raise ValueError(f"no triples in {text!r}; expected e.g. 'red circle moves left'")
    return frozenset(triples)


def plan_video(seed: int, index: int, config: WorldConfig | None = None) -> VideoPlan:
    """Draw video ``index`` of the split with ``seed``: its events, captions and geometry.

    Cheap (no pixels): use it to inspect or test the distribution of a split.
    """
    config = config or WorldConfig()
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got {seed}, {index}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    background = int(rng.integers(0, _MAX_BACKGROUND + 1))
    # Drawn whether or not noise is on, so that --no-noise changes nothing else.
    sigma = float(rng.uniform(0.0, _MAX_NOISE_SIGMA))
    noise_seed = int(rng.integers(0, 2**63 - 1))
    look = _draw_look(seed, index, config) if config.vary else {}
    if look:
        background, sigma = look.pop("background"), look.pop("noise_sigma")
        config = replace(config, fps=look.pop("fps"))
    else:
        look = {"antialias": config.antialias, "crf": config.crf}
    n_events = int(rng.integers(config.min_events, config.max_events + 1))
    lo, hi = config.event_frame_range
    lengths = [_event_frames(float(rng.uniform(config.min_event_s, config.max_event_s)),
                             config.fps, lo, hi) for _ in range(n_events)]
    allowed = _allowed_triples(config.holdout, config.only_holdout)
    events: list[Event] = []
    tracks: list[Track] = []
    start = 0
    previous: Triple | None = None
    for length in lengths:
        triple = allowed[int(rng.integers(len(allowed)))]
        while triple == previous:
            triple = allowed[int(rng.integers(len(allowed)))]
        color, shape, motion = triple
        track = _plan_track(rng, config, shape, motion, COLORS[color], start, start + length)
        events.append(Event(start / config.fps, (start + length) / config.fps,
                            color, shape, motion, track.evident(config.fps)))
        tracks.append(track)
        previous, start = triple, start + length
    return VideoPlan(
        video_id=video_id(seed, index), width=config.width, height=config.height,
        fps=config.fps, background=background, noise_sigma=sigma if config.noise else 0.0,
        noise_seed=noise_seed, events=tuple(events), tracks=tuple(tracks), **look,
    )


def _draw_look(seed: int, index: int, config: WorldConfig) -> dict[str, Any]:
    """A varied video's look, from its own random stream (the events' draws stay the same)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
    fps = int(rng.choice(_VARIED_FPS))
    travel = min(config.width, config.height) - 2 * _MARGIN - 2 * _MIN_SIZE
    if travel < _MIN_SPEED * config.max_event_s:
        fps = config.fps
    return {
        "fps": fps,
        "background": int(rng.integers(0, _VARIED_MAX_GRAY + 1)),
        "tint": tuple(int(t) for t in rng.integers(-_VARIED_TINT, _VARIED_TINT + 1, size=3)),
        "ramp": float(rng.uniform(0.0, _VARIED_MAX_RAMP)) * float(rng.random() < 0.6),
        "ramp_angle": float(rng.uniform(0.0, 2 * math.pi)),
        "noise_sigma": float(rng.uniform(0.0, _VARIED_MAX_NOISE_SIGMA)) if config.noise else 0.0,
        "antialias": bool(rng.random() < 0.5),
        "crf": int(rng.integers(_VARIED_CRF[0], _VARIED_CRF[1] + 1)),
    }


def still_evident() -> float:
    """Seconds after which a still object is evidently still: when the slowest growing or
    shrinking the generator draws has changed the size by ``EVIDENT_SIZE`` pixels."""
    slowest_growth = _MIN_SIZE * (_MIN_SCALE - 1)
    slowest_shrink = _MIN_SIZE * (1 - 1 / _MIN_SCALE)
    return EVIDENT_SIZE / (min(slowest_growth, slowest_shrink) / WorldConfig.max_event_s)


def render_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """Yield the plan's frames in order, each a fresh (height, width, 3) uint8 RGB array.

    Deterministic: every pass over the same plan yields the same pixels.
    """
    rng = np.random.default_rng(plan.noise_seed)
    blank = background_image(plan)
    for track in plan.tracks:
        for index in range(track.start_frame, track.end_frame):
            yield _draw(plan, track, index, blank, rng)


def render_frame(plan: VideoPlan, index: int, noise_seed: int) -> np.ndarray:
    """Frame ``index`` of the plan alone, with its own noise (for still images)."""
    track = next(t for t in plan.tracks if t.start_frame <= index < t.end_frame)
    return _draw(plan, track, index, background_image(plan), np.random.default_rng(noise_seed))


def background_image(plan: VideoPlan) -> np.ndarray:
    """The plan's empty frame: its gray, tinted, with its brightness ramp; (H, W, 3) uint8."""
    base = np.clip(plan.background + np.array(plan.tint, np.float32), 0, 255)
    blank = np.broadcast_to(base, (plan.height, plan.width, 3)).astype(np.float32)
    if plan.ramp:
        y, x = np.mgrid[0:plan.height, 0:plan.width].astype(np.float32)
        along = (np.cos(plan.ramp_angle) * (x / plan.width - 0.5)
                 + np.sin(plan.ramp_angle) * (y / plan.height - 0.5))
        blank = blank + (2 * plan.ramp * along)[:, :, None]
    return np.clip(np.rint(blank), 0, 255).astype(np.uint8)


def _draw(plan: VideoPlan, track: Track, index: int, blank: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    frame = blank.copy()
    cx, cy, size = track.at(index)
    if plan.antialias:
        rows, cols, cover = _shape_coverage(track.shape, cx, cy, size, plan.height, plan.width)
        under = frame[rows, cols].astype(np.float32)
        alpha = cover[:, :, None]
        color = np.array(track.rgb, dtype=np.float32)
        frame[rows, cols] = np.rint(under + alpha * (color - under)).astype(np.uint8)
    else:
        rows, cols, mask = _shape_mask(track.shape, cx, cy, size, plan.height, plan.width)
        frame[rows, cols][mask] = np.array(track.rgb, dtype=np.uint8)
    if plan.noise_sigma > 0:
        # Sensor-like noise on the whole frame, object included, so that flat object
        # colors are not a shortcut a model could rely on.
        noisy = rng.standard_normal(frame.shape, dtype=np.float32)
        noisy *= np.float32(plan.noise_sigma)
        noisy += frame
        # +0.5 then truncation rounds to nearest, in one pass fewer than np.rint.
        noisy += np.float32(0.5)
        np.clip(noisy, 0, 255, out=noisy)
        frame = noisy.astype(np.uint8)
    return frame


def write_video(plan: VideoPlan, path: str | os.PathLike[str]) -> Path:
    """Render and encode ``plan`` to ``path`` as H.264 (libx264, yuv420p) in MP4; returns it.

    Frame ``i`` has pts ``i`` in time base ``1/fps``. The file appears at ``path`` only once it
    is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, plan.fps)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=plan.fps)
            stream.width, stream.height, stream.pix_fmt = plan.width, plan.height, "yuv420p"
            stream.time_base = time_base
            stream.codec_context.options = _x264_options(plan.crf)
            for index, rgb in enumerate(render_frames(plan)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                frame.time_base = time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))

    write_atomically(path, write)
    return path


def generate_split(out_dir: str | os.PathLike[str], videos: int, seed: int,
                   config: WorldConfig | None = None, workers: int = 1,
                   progress: bool = True) -> Path:
    """Write ``videos`` videos to ``out_dir/videos/`` and their captions to ``out_dir``.

    Args:
        out_dir: split directory, created if missing.
        videos: number of videos (ids ``shapes_s{seed}_00000`` ...).
        seed: the split's seed; use a different one per split.
        config: what the videos look like (default :class:`WorldConfig`).
        workers: processes encoding in parallel; the output does not depend on it. Workers are
            spawned (not forked), so a script calling this with ``workers > 1`` needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show a tqdm progress bar.

    Returns:
        The path of the written ``captions.json``.
    """
    config = config or WorldConfig()
    if videos < 1:
        raise ValueError(f"videos must be at least 1, got {videos}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    video_dir = out_dir / VIDEOS_DIR
    video_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, index, config, video_dir) for index in range(videos)]
    logger.info("generating %d ShapesWorld videos (seed %d) in %s with %d worker(s)",
                videos, seed, out_dir, workers)
    annotations: dict[int, tuple[str, dict[str, Any]]] = {}
    for index, vid, annotation in map_jobs(_write_job, jobs, workers, progress, "video"):
        annotations[index] = (vid, annotation)
    captions = {vid: annotation for vid, annotation in
                (annotations[index] for index in range(videos))}
    stale = sorted(p.name for p in video_dir.glob("*.mp4") if p.stem not in captions)
    if stale:
        logger.warning("%s holds %d videos that are not in this split (e.g. %s); "
                       "captions.json ignores them", video_dir, len(stale), stale[0])
    captions_path = out_dir / CAPTIONS_NAME
    text = json.dumps(captions, indent=1) + "\n"
    write_text_atomically(captions_path, text)
    logger.info("wrote %s", captions_path)
    return captions_path


STILLS_NAME = "annotations.json"
IMAGES_DIR = "images"


def generate_stills(out_dir: str | os.PathLike[str], images: int, seed: int,
                    config: WorldConfig | None = None, workers: int = 1,
                    progress: bool = True) -> Path:
    """Write ``images`` still frames to ``out_dir/images/`` in the COCO captions layout.

    Image ``k`` is a random frame of video ``k`` of the split (seed, config) would generate,
    captioned with its appearance only ("a red circle"): one frame cannot show a motion. With
    ``config.vary`` half are JPEG at a random quality, the rest PNG. Returns the annotation path.
    """
    config = config or WorldConfig()
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if seed < 0 or workers < 1:
        raise ValueError(f"need seed >= 0 and workers >= 1, got {seed}, {workers}")
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGES_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, index, config, image_dir) for index in range(images)]
    entries = sorted(map_jobs(_still_job, jobs, workers, progress, "image"))
    annotation = {
        "images": [{"id": vid, "file_name": name} for _, vid, name, _ in entries],
        "annotations": [{"image_id": vid, "caption": caption} for _, vid, _, caption in entries],
    }
    path = out_dir / STILLS_NAME
    write_text_atomically(path, json.dumps(annotation, indent=1) + "\n")
    logger.info("wrote %s", path)
    return path


def write_image(rgb: np.ndarray, path: Path, jpeg_quality: int | None = None) -> Path:
    """Write an RGB image as PNG, or as JPEG with qscale ``jpeg_quality`` (2 best .. 31)."""
    codec, pix_fmt = ("png", "rgb24") if jpeg_quality is None else ("mjpeg", "yuvj420p")

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="image2") as container:
            stream = cast(VideoStream, container.add_stream(codec, rate=1))
            stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], pix_fmt
            if jpeg_quality is not None:
                stream.codec_context.options = {"qmin": str(jpeg_quality),
                                                "qmax": str(jpeg_quality)}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))

    write_atomically(path, write)
    return path


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every ShapesWorld renderer's command line shares: where, how many, which
    seed, the grammar (events per video, holdout), videos or stills, and the workers; see
    :func:`split_config`."""
    parser.add_argument("--out", type=Path, required=True, help="split directory to write")
    parser.add_argument("--videos", type=int, required=True, help="number of videos")
    parser.add_argument("--seed", type=int, required=True,
                        help="split seed (non-negative); give each split its own")
    parser.add_argument("--events", type=int, nargs=2, metavar=("MIN", "MAX"), default=(1, 4),
                        help="events per video, drawn uniformly from MIN..MAX (default 1 4)")
    parser.add_argument("--holdout", metavar="TRIPLES",
                        help="held-out 'color shape motion' triples, separated by ';' "
                             "(e.g. 'red circle moves left;blue square grows'), or 'default' "
                             "for the built-in set of novel combinations; none is generated "
                             "unless --only-holdout")
    parser.add_argument("--only-holdout", action="store_true",
                        help="generate only the held-out triples (a novel-combination test "
                             "split); needs --holdout with at least 2 triples")
    parser.add_argument("--stills", action="store_true",
                        help=f"write still images instead (<out>/{IMAGES_DIR}/, COCO layout in "
                             f"<out>/{STILLS_NAME}), captioned with what one frame shows; "
                             "--videos is then the number of images")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel encoding processes (default 1); output is identical "
                             "for any value")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def split_config(args: argparse.Namespace, **fields: Any) -> WorldConfig:
    """The config of :func:`add_split_arguments`' options, with ``fields`` for the others.

    Raises:
        ValueError: naming the option that is wrong.
    """
    if args.videos < 1:
        raise ValueError(f"--videos must be at least 1, got {args.videos}")
    if args.seed < 0:
        raise ValueError(f"--seed must be non-negative, got {args.seed}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.only_holdout and args.holdout is None:
        raise ValueError("--only-holdout needs --holdout")
    holdout: frozenset[Triple] = frozenset()
    if args.holdout is not None:
        holdout = (NOVEL_TRIPLES if args.holdout.strip().lower() == "default"
                   else parse_triples(args.holdout))
    return WorldConfig(holdout=holdout, only_holdout=args.only_holdout,
                       min_events=args.events[0], max_events=args.events[1], **fields)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m lrcn.world``."""
    parser = Parser(
        prog="python -m lrcn.world",
        description="Generate a ShapesWorld split: captioned H.264 videos of moving shapes, "
                    f"in <out>/{VIDEOS_DIR}/*.mp4 with <out>/{CAPTIONS_NAME} in the "
                    "ActivityNet Captions layout.",
    )
    add_split_arguments(parser)
    parser.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    parser.add_argument("--no-noise", action="store_true",
                        help="no Gaussian pixel noise (on by default)")
    parser.add_argument("--antialias", action="store_true",
                        help="draw edges with their pixel coverage (off by default)")
    parser.add_argument("--crf", type=int, default=23,
                        help="x264 quality, 0..51, lower is better (default 23)")
    parser.add_argument("--vary", action="store_true",
                        help="draw each video's look at random (fps 24-60, antialiasing, tinted "
                             "and graded backgrounds, noise, compression); for training data "
                             "that does not depend on one renderer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage error)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = split_config(args, fps=args.fps, noise=not args.no_noise,
                              antialias=args.antialias, crf=args.crf, vary=args.vary)
    except ValueError as error:
        print(f"python -m lrcn.world: error: {error}", file=sys.stderr)
        return 2
    if args.stills:
        captions = generate_stills(args.out, args.videos, args.seed, config,
                                   workers=args.workers, progress=not args.no_progress)
        print(f"wrote {args.videos} images to {args.out / IMAGES_DIR} and captions to "
              f"{captions}")
        return 0
    captions = generate_split(args.out, args.videos, args.seed, config, workers=args.workers,
                              progress=not args.no_progress)
    print(f"wrote {args.videos} videos to {args.out / VIDEOS_DIR} and captions to {captions}")
    return 0


def _check_triple(triple: Sequence[str]) -> None:
    """Raise ValueError unless ``triple`` is a known (color, shape, motion)."""
    if len(triple) != 3:
        raise ValueError(f"expected (color, shape, motion), got {tuple(triple)!r}")
    color, shape, motion = triple
    for kind, word, words in (("color", color, tuple(COLORS)), ("shape", shape, SHAPES),
                              ("motion", motion, MOTIONS)):
        if word not in words:
            raise ValueError(f"unknown {kind} {word!r} (expected one of {', '.join(words)})")


@functools.lru_cache(maxsize=32)
def _allowed_triples(holdout: frozenset[Triple], only_holdout: bool) -> tuple[Triple, ...]:
    """The triples a split draws from, in a fixed order (the draws index into it)."""
    if only_holdout:
        return tuple(sorted(holdout))
    everything = itertools.product(COLORS, SHAPES, MOTIONS)
    return tuple(triple for triple in everything if triple not in holdout)


def _event_frames(seconds: float, fps: int, lo: int, hi: int) -> int:
    """An event length in whole frames, so that event boundaries fall on frame times."""
    return min(max(round(seconds * fps), lo), hi)


def _plan_track(rng: np.random.Generator, config: WorldConfig, shape: str, motion: str,
                base_rgb: tuple[int, int, int], start: int, end: int) -> Track:
    """Draw color jitter, size and path of one event's object, keeping it inside the frame."""
    jitter = rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3)
    rgb = np.clip(np.array(base_rgb) + jitter, 0, 255)
    color = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    width, height = float(config.width), float(config.height)
    seconds = (end - start) / config.fps
    size0 = float(rng.uniform(_MIN_SIZE, _MAX_SIZE))
    size1 = size0
    if motion.startswith("moves"):
        horizontal = motion in ("moves left", "moves right")
        along, across = (width, height) if horizontal else (height, width)
        max_speed = min(_MAX_SPEED, (along - 2 * _MARGIN - 2 * size0) / seconds)
        if max_speed < _MIN_SPEED:
            # Too long an event for this object to cross at the minimum speed: shrink it.
            size0 = size1 = max(_MIN_SIZE, (along - 2 * _MARGIN - _MIN_SPEED * seconds) / 2)
            max_speed = max(_MIN_SPEED,
                            min(_MAX_SPEED, (along - 2 * _MARGIN - 2 * size0) / seconds))
        distance = float(rng.uniform(_MIN_SPEED, max_speed)) * seconds
        low = _MARGIN + size0
        # Float error can leave high a hair below low when the object just fits.
        high = max(low, along - _MARGIN - size0 - distance)
        first = float(rng.uniform(low, high))
        path = (first, first + distance)
        if motion in ("moves left", "moves up"):
            path = (first + distance, first)
        side = float(rng.uniform(_MARGIN + size0, across - _MARGIN - size0))
        if horizontal:
            return Track(start, end, shape, color, path[0], side, path[1], side, size0, size1)
        return Track(start, end, shape, color, side, path[0], side, path[1], size0, size1)
    if motion == "grows":
        largest = (min(width, height) - 2 * _MARGIN) / 2
        size1 = min(size0 * float(rng.uniform(_MIN_SCALE, _MAX_SCALE)), largest)
    elif motion == "shrinks":
        factor = min(float(rng.uniform(_MIN_SCALE, _MAX_SCALE)), size0 / _MIN_SHRUNK_SIZE)
        size1 = size0 / factor
    extent = max(size0, size1)
    x = float(rng.uniform(_MARGIN + extent, width - _MARGIN - extent))
    y = float(rng.uniform(_MARGIN + extent, height - _MARGIN - extent))
    return Track(start, end, shape, color, x, y, x, y, size0, size1)


def _shape_mask(shape: str, cx: float, cy: float, size: float, height: int, width: int,
                bounds: tuple[slice, slice] | None = None) -> tuple[slice, slice, np.ndarray]:
    """Rows, columns and boolean mask of the pixels whose centers lie in the shape (within
    ``bounds`` when given, else the shape's bounding box)."""
    # Only the bounding box is evaluated: a full-frame grid per frame would dominate render time.
    if bounds is None:
        r0, r1 = max(0, math.floor(cy - size) - 1), min(height, math.ceil(cy + size) + 1)
        c0, c1 = max(0, math.floor(cx - size) - 1), min(width, math.ceil(cx + size) + 1)
    else:
        (r0, r1), (c0, c1) = (bounds[0].start, bounds[0].stop), (bounds[1].start, bounds[1].stop)
    y = (np.arange(r0, r1, dtype=np.float64) + 0.5)[:, None] - cy
    x = (np.arange(c0, c1, dtype=np.float64) + 0.5)[None, :] - cx
    if shape == "circle":
        mask = x * x + y * y <= size * size
    elif shape == "square":
        mask = (np.abs(x) <= size) & (np.abs(y) <= size)
    elif shape == "triangle":
        # Apex (cx, cy - size) up, base from (cx - size, cy + size) to (cx + size, cy + size):
        # the half-width grows from 0 at the apex to size at the base.
        mask = (y >= -size) & (y <= size) & (np.abs(x) <= (y + size) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return slice(r0, r1), slice(c0, c1), mask


def _shape_coverage(shape: str, cx: float, cy: float, size: float, height: int,
                    width: int) -> tuple[slice, slice, np.ndarray]:
    """Rows, columns and the fraction (0..1) of each pixel the shape covers (antialiasing)."""
    n = _ANTIALIAS_SAMPLES
    rows, cols, _ = _shape_mask(shape, cx, cy, size, height, width)
    cover = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.float32)
    for i in range(n):
        for j in range(n):
            # Shifting the shape by -offset samples each pixel at center + offset.
            dy, dx = (i + 0.5) / n - 0.5, (j + 0.5) / n - 0.5
            _, _, mask = _shape_mask(shape, cx - dx, cy - dy, size, height, width,
                                     bounds=(rows, cols))
            cover += mask
    return rows, cols, cover / (n * n)


def _x264_options(crf: int = 23) -> dict[str, str]:
    """Encoder options that give the same bitstream on every run (see _X264_AVX512_FLAGS)."""
    options = dict(_X264_OPTIONS) | {"crf": str(crf)}
    flags = _cpu_flags()
    if _X264_AVX512_FLAGS <= flags and _X264_AVX2_FLAGS <= flags:
        options["x264-params"] = "asm=AVX2"
    return options


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError as error:
        logger.debug("no CPU flags from /proc/cpuinfo (%s); x264 chooses its own", error)
    # Elsewhere x264 keeps its own choice, AVX-512 included: encoding may then not be
    # byte-identical from run to run (rendered frames and annotations still are).
    return frozenset()


def _write_job(job: tuple[int, int, WorldConfig, Path]) -> tuple[int, str, dict[str, Any]]:
    """Plan and write one video (a top-level function, so worker processes can run it)."""
    seed, index, config, video_dir = job
    plan = plan_video(seed, index, config)
    write_video(plan, video_dir / f"{plan.video_id}.mp4")
    return index, plan.video_id, plan.annotation()


def _still_job(job: tuple[int, int, WorldConfig, Path]) -> tuple[int, str, str, str]:
    """Plan one video and write one random frame of it as a still image."""
    seed, index, config, image_dir = job
    plan = plan_video(seed, index, config)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 2]))
    k = int(rng.integers(len(plan.events)))
    track = plan.tracks[k]
    frame = int(rng.integers(track.start_frame, track.end_frame))
    rgb = render_frame(plan, frame, int(rng.integers(0, 2**63 - 1)))
    quality = (int(rng.integers(_STILL_QUALITY[0], _STILL_QUALITY[1] + 1))
               if config.vary and rng.random() < 0.5 else None)
    name = f"{plan.video_id}.{'png' if quality is None else 'jpg'}"
    write_image(rgb, image_dir / name, quality)
    return index, plan.video_id, name, plan.events[k].appearance


def map_jobs(function: Any, jobs: list[Any], workers: int, progress: bool, unit: str,
             desc: str = "ShapesWorld") -> Iterator[Any]:
    """``function`` over ``jobs``, in worker processes when ``workers > 1``, in any order, with
    a tqdm bar (``function`` must be a top-level function: workers are spawned)."""
    if workers == 1:
        yield from tqdm(map(function, jobs), total=len(jobs), unit=unit, desc=desc,
                        disable=not progress)
        return
    # spawn, not fork: the caller may hold threads (tqdm, torch) that fork would copy
    # mid-operation.
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs))) as pool:
        yield from tqdm(pool.imap_unordered(function, jobs), total=len(jobs), unit=unit,
                        desc=desc, disable=not progress)


if __name__ == "__main__":
    raise SystemExit(main())
