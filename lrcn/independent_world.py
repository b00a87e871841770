"""A second, independent ShapesWorld renderer: for evaluation only, never for training.

The shipped model is judged by outsiders on ShapesWorld videos drawn by *their* code, and a
model trained on :mod:`lrcn.world`'s pictures can learn that renderer's quirks (its exact
colours, hard or 16-sample edges, gray ramps, crf encodes). This module draws the same stories
with other pictures, so that an evaluation on its splits measures how far the model carries to a
renderer it has never seen. Its splits must never be used for training or model selection.

Shared with lrcn.world (its grammar, imported by name, see ``tests/lrcn/test_independent_world``):
  * :func:`lrcn.world.plan_video`: the events, their captions and holdout handling, and each
    object's track (which shape, where, how big, when), in the plan's 320x240 coordinate frame;
  * the annotation layouts (``captions.json`` with ``appearance`` and ``evident``;
    ``annotations.json`` in the COCO captions layout for stills) and the ``EVIDENT_*`` rules.

Its own (nothing of lrcn.world's drawing, colours, noise or encoding is used):
  * look per video, from its own random stream: frame size 320x240 to 640x480 (4:3, the plan's
    geometry scaled, so the annotations stay true), 24 to 60 fps (the plan is drawn at that rate:
    events and ``evident`` stay in seconds), flat, linear, radial or smoothly textured
    backgrounds, Gaussian or Poisson (shot) noise or none, an optional slight lens blur;
  * colours: each colour word has its own range of plausible shades (:data:`PALETTE`, in HSV),
    one drawn per video and word; blue and white never lean toward purple;
  * shapes drawn with Pillow on an 8x supersampled canvas, box-filtered down (antialiased);
  * encoding: its own RGB to YUV 4:2:0 (BT.601, limited range) and H.264 by bit rate
    (250 kbit/s to 2 Mbit/s) at several x264 presets; stills as PNG or JPEG (quality 40-95).

Layout (what :func:`lrcn.data.load_dataset` and ``lrcn.evaluate`` read)::

    <out>/captions.json             video splits: ActivityNet Captions, as lrcn.world writes
    <out>/videos/indep_s<seed>_<index>.mp4
    <out>/annotations.json          --stills: COCO captions, captioned with the appearance
    <out>/images/indep_s<seed>_<index>.png|.jpg

Everything is a function of ``(seed, index)`` (and the grammar's options), so videos can be
rendered in any order or in parallel; the ``indep_`` prefix keeps ids apart from lrcn.world's.

Example:
    python -m lrcn.independent_world --out data/shapes/independent --videos 60 --seed 31 \\
        --holdout default --workers 2
    python -m lrcn.independent_world --out data/shapes/independent-stills --videos 300 \\
        --seed 32 --holdout default --stills
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import av
import numpy as np
from av.video.stream import VideoStream
from PIL import Image, ImageDraw, ImageFilter

from lrcn.world import (
    CAPTIONS_NAME,
    IMAGES_DIR,
    STILLS_NAME,
    VIDEOS_DIR,
    VideoPlan,
    WorldConfig,
    add_split_arguments,
    map_jobs,
    plan_video,
    split_config,
)
from stream.cli.arguments import Parser
from stream.files import write_atomically, write_text_atomically
from stream.model.sessions import cpu_flags

logger = logging.getLogger(__name__)

ID_PREFIX = "indep"
PLAN_SIZE = (320, 240)  # the coordinate frame plans are drawn in; frames scale it
FRAME_SIZES = ((320, 240), (384, 288), (400, 300), (480, 360), (512, 384), (560, 420),
               (640, 480))
FRAME_RATES = (24, 25, 30, 48, 50, 60)
BACKDROPS = ("flat", "linear", "radial", "texture")
NOISES = ("none", "gaussian", "poisson")
BIT_RATES = (250_000, 500_000, 1_000_000, 2_000_000)
PRESETS = ("veryfast", "fast", "medium")
JPEG_QUALITIES = (40, 55, 70, 85, 95)

_SUPERSAMPLE = 8  # canvas pixels per frame pixel and side: edges in 1/8 px steps
_BACKDROP_VALUE = (0.05, 0.43)  # HSV value of background colours: dark to mid, below the shapes
_BACKDROP_SATURATION = 0.25
_TEXTURE_LEVELS = (4.0, 12.0)  # amplitude of a textured background, in 8-bit levels
_TEXTURE_GRIDS = ((4, 3), (8, 6), (16, 12))  # coarse random grids, smoothly upsampled
_GAUSSIAN_SIGMA = (1.5, 8.0)  # 8-bit levels
_PHOTONS = (300.0, 3000.0)  # Poisson noise: photons a full-scale pixel collects
_BLUR_RADIUS = (0.4, 1.0)  # Gaussian lens blur, in frame pixels
_BLUR_CHANCE = 0.35
_PNG_CHANCE = 0.4
# Each random stream of a video is SeedSequence([seed, index, stream]); lrcn.world's plan uses
# [seed, index] and its own looks [seed, index, 1] and [seed, index, 2].
_LOOK_STREAM, _STILL_STREAM = 101, 102


class IndependentWorldError(ValueError):
    """A bad argument of the independent renderer; the message names it."""


@dataclass(frozen=True)
class Shade:
    """The plausible shades of one colour word, in HSV: hue ranges in degrees (a range may
    cross 0), saturation and value ranges in 0..1."""

    hues: tuple[tuple[float, float], ...]
    saturation: tuple[float, float]
    value: tuple[float, float]

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """One shade of the word, as 8-bit RGB."""
        low, high = self.hues[int(rng.integers(len(self.hues)))]
        hue = float(rng.uniform(low, high)) % 360.0
        saturation = float(rng.uniform(*self.saturation))
        value = float(rng.uniform(*self.value))
        return _rgb(colorsys.hsv_to_rgb(hue / 360.0, saturation, value))


# Hues sit well inside what people call each word: red wraps around 0, blue stops at 232
# (purple starts past 260) and white is barely tinted, warm or cool, never pink or violet.
PALETTE: Mapping[str, Shade] = MappingProxyType({
    "red": Shade(((-8.0, 8.0),), (0.70, 0.95), (0.70, 0.95)),
    "green": Shade(((105.0, 145.0),), (0.55, 0.90), (0.60, 0.90)),
    "blue": Shade(((208.0, 232.0),), (0.60, 0.90), (0.70, 0.95)),
    "yellow": Shade(((48.0, 60.0),), (0.70, 0.95), (0.85, 1.00)),
    "purple": Shade(((270.0, 288.0),), (0.55, 0.85), (0.60, 0.85)),
    "white": Shade(((25.0, 60.0), (185.0, 215.0)), (0.00, 0.07), (0.88, 1.00)),
})


@dataclass(frozen=True)
class Look:
    """How one video is drawn and encoded (drawn by :func:`draw_look`).

    Attributes:
        width, height: frame size (4:3, even); the plan's geometry is scaled by ``scale``.
        fps: frames per second (the plan is drawn at this rate).
        backdrop: one of :data:`BACKDROPS`; ``backdrop_colors`` its two colours (flat: the
            first; linear: from first to second along ``backdrop_angle``; radial: first at
            ``backdrop_center`` (fractions of the frame), second at the farthest corner;
            texture: the first, with smooth random texture of ``texture`` levels).
        shades: the RGB each colour word is drawn with in this video.
        noise: one of :data:`NOISES`; ``noise_level`` is the Gaussian sigma in 8-bit levels or
            the photons a full-scale pixel collects (Poisson).
        blur: radius of a Gaussian lens blur in pixels (0: none).
        bit_rate, preset: H.264 bit rate (bits per second) and x264 preset.
        seed: seeds the texture and each frame's noise.
    """

    width: int
    height: int
    fps: int
    backdrop: str
    backdrop_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    backdrop_angle: float
    backdrop_center: tuple[float, float]
    texture: float
    shades: tuple[tuple[str, tuple[int, int, int]], ...]
    noise: str
    noise_level: float
    blur: float
    bit_rate: int
    preset: str
    seed: int

    @property
    def scale(self) -> float:
        """Frame pixels per plan pixel."""
        return self.width / PLAN_SIZE[0]

    def shade(self, color: str) -> tuple[int, int, int]:
        """The RGB this video draws ``color`` (a colour word) with."""
        return dict(self.shades)[color]


@dataclass(frozen=True)
class IndependentVideo:
    """One video: lrcn.world's plan of its events (at the look's fps) and this module's look."""

    video_id: str
    plan: VideoPlan
    look: Look

    def annotation(self) -> dict[str, Any]:
        """Its entry in ``captions.json``: the plan's (times, sentences, appearance, evident)."""
        return self.plan.annotation()


def video_id(seed: int, index: int) -> str:
    """The id (and file stem) of video ``index`` of the split rendered with ``seed``."""
    return f"{ID_PREFIX}_s{seed}_{index:05d}"


def draw_look(seed: int, index: int) -> Look:
    """The look of video ``index`` of the split with ``seed``, from its own random stream."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, _LOOK_STREAM]))
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    backdrop = BACKDROPS[int(rng.integers(len(BACKDROPS)))]
    noise = NOISES[int(rng.integers(len(NOISES)))]
    level = {"none": 0.0, "gaussian": float(rng.uniform(*_GAUSSIAN_SIGMA)),
             "poisson": float(rng.uniform(*_PHOTONS))}[noise]
    return Look(
        width=width, height=height, fps=int(rng.choice(FRAME_RATES)), backdrop=backdrop,
        backdrop_colors=(_backdrop_color(rng), _backdrop_color(rng)),
        backdrop_angle=float(rng.uniform(0.0, 2 * math.pi)),
        backdrop_center=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
        texture=float(rng.uniform(*_TEXTURE_LEVELS)),
        shades=tuple((word, shade.draw(rng)) for word, shade in PALETTE.items()),
        noise=noise, noise_level=level,
        blur=float(rng.uniform(*_BLUR_RADIUS)) if rng.random() < _BLUR_CHANCE else 0.0,
        bit_rate=int(rng.choice(BIT_RATES)), preset=str(rng.choice(PRESETS)),
        seed=int(rng.integers(0, 2**63 - 1)),
    )


def plan_independent_video(seed: int, index: int,
                           config: WorldConfig | None = None) -> IndependentVideo:
    """Video ``index`` of the split with ``seed``: its look, and lrcn.world's plan of its events
    drawn at the look's fps in the 320x240 plan frame.

    Of ``config`` only the grammar counts (events per video and their lengths, holdout); its
    size, fps and look options are lrcn.world's and are ignored.
    """
    if seed < 0 or index < 0:
        raise IndependentWorldError(f"seed and index must be non-negative, got {seed}, {index}")
    look = draw_look(seed, index)
    return IndependentVideo(video_id(seed, index),
                            plan_video(seed, index, _grammar(config, look.fps)), look)


@functools.lru_cache(maxsize=4)
def backdrop(look: Look) -> np.ndarray:
    """The video's empty frame, (height, width, 3) float32 in 0..255 (the same every frame)."""
    height, width = look.height, look.width
    first, second = (np.array(c, np.float32) for c in look.backdrop_colors)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + np.float32(0.5)
    if look.backdrop == "flat":
        weight = np.zeros((height, width), np.float32)
    elif look.backdrop == "linear":
        along = (math.cos(look.backdrop_angle) * (x - width / 2)
                 + math.sin(look.backdrop_angle) * (y - height / 2))
        weight = np.clip(along / np.abs(along).max() / 2 + 0.5, 0.0, 1.0)
    elif look.backdrop == "radial":
        cx, cy = look.backdrop_center[0] * width, look.backdrop_center[1] * height
        distance = np.hypot(x - cx, y - cy)
        weight = distance / distance.max()
    else:  # texture: smooth, low-contrast blobs, much larger than any shape's edge
        weight = np.zeros((height, width), np.float32)
        rng = np.random.default_rng(look.seed)
        for octave, (columns, rows) in enumerate(_TEXTURE_GRIDS):
            grid = rng.standard_normal((rows, columns)).astype(np.float32)
            smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
            weight += np.asarray(smooth, np.float32) / 2**octave
        weight *= look.texture / max(float(np.abs(weight).max()), 1e-6)
        return np.clip(first + weight[:, :, None], 0.0, 255.0)
    return first + weight[:, :, None] * (second - first)


def coverage(shape: str, cx: float, cy: float, size: float, height: int,
             width: int) -> tuple[slice, slice, np.ndarray]:
    """Rows, columns and the fraction (0..1, float32) of each frame pixel that ``shape`` covers.

    ``(cx, cy)`` is the shape's center and ``size`` its radius or half side, in frame pixels,
    pixel (row r, column c) spanning [c, c+1) x [r, r+1); the triangle points up, with its apex
    ``size`` above the center and its base ``2 * size`` wide, ``size`` below.
    """
    r0, r1 = max(0, math.floor(cy - size) - 1), min(height, math.ceil(cy + size) + 1)
    c0, c1 = max(0, math.floor(cx - size) - 1), min(width, math.ceil(cx + size) + 1)
    n = _SUPERSAMPLE
    canvas = Image.new("L", ((c1 - c0) * n, (r1 - r0) * n), 0)
    draw = ImageDraw.Draw(canvas)

    def at(x: float, y: float) -> tuple[int, int]:
        return round((x - c0) * n), round((y - r0) * n)

    if shape in ("circle", "square"):
        (left, top), (right, bottom) = at(cx - size, cy - size), at(cx + size, cy + size)
        # Pillow's boxes include their last pixel: stop one canvas pixel short.
        box = (left, top, right - 1, bottom - 1)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=255)
    elif shape == "triangle":
        corners = (at(cx, cy - size), at(cx + size, cy + size), at(cx - size, cy + size))
        draw.polygon([(x - 0.5, y - 0.5) for x, y in corners], fill=255)
    else:
        raise IndependentWorldError(f"unknown shape {shape!r}")
    alpha = np.asarray(canvas.reduce(n), np.float32) / np.float32(255.0)
    return slice(r0, r1), slice(c0, c1), alpha


def draw_frame(video: IndependentVideo, index: int, clean: bool = False) -> np.ndarray:
    """Frame ``index`` of ``video``, a (height, width, 3) uint8 RGB array.

    ``clean`` leaves out the sensor noise (the lens blur stays): what tests measure. Each
    frame's noise has its own seed, so any frame can be drawn alone, in any order.
    """
    plan, look = video.plan, video.look
    k = next((k for k, t in enumerate(plan.tracks) if t.start_frame <= index < t.end_frame),
             None)
    if k is None:
        raise IndependentWorldError(f"{video.video_id} has frames 0..{plan.n_frames - 1}, "
                                    f"not {index}")
    track, event = plan.tracks[k], plan.events[k]
    frame = backdrop(look).copy()
    cx, cy, size = (value * look.scale for value in track.at(index))
    rows, cols, alpha = coverage(track.shape, cx, cy, size, look.height, look.width)
    under = frame[rows, cols]
    color = np.array(look.shade(event.color), np.float32)
    frame[rows, cols] = under + alpha[:, :, None] * (color - under)
    rgb = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    if look.blur:
        blurred = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(look.blur))
        rgb = np.asarray(blurred, np.uint8)
    if clean or look.noise == "none":
        return rgb
    rng = np.random.default_rng([look.seed, index])
    if look.noise == "gaussian":
        noisy = rgb + rng.standard_normal(rgb.shape, dtype=np.float32) * look.noise_level
    else:  # shot noise: its variance grows with the brightness
        photons = rng.poisson(rgb.astype(np.float32) * (look.noise_level / 255.0))
        noisy = photons * (255.0 / look.noise_level)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def draw_frames(video: IndependentVideo, clean: bool = False) -> Iterator[np.ndarray]:
    """Every frame of ``video`` in order (see :func:`draw_frame`)."""
    for index in range(video.plan.n_frames):
        yield draw_frame(video, index, clean)


def yuv420(rgb: np.ndarray) -> np.ndarray:
    """An even-sized RGB frame as planar YUV 4:2:0, BT.601 limited range (what a decoder
    assumes of an untagged stream), chroma averaged over 2x2 blocks: (H * 3 // 2, W) uint8."""
    height, width = rgb.shape[:2]
    r, g, b = (rgb[:, :, k].astype(np.float32) / np.float32(255.0) for k in range(3))
    luma = 16 + 219 * (0.299 * r + 0.587 * g + 0.114 * b)
    blue = 128 + 224 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    red = 128 + 224 * (0.5 * r - 0.418688 * g - 0.081312 * b)

    def half(plane: np.ndarray) -> np.ndarray:
        # (H, W) -> (H/2, W/2) -> (H/4, W): the chroma plane as libav lays it out
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).reshape(-1, width)

    planes = np.concatenate([luma, half(blue), half(red)])
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def encode_video(video: IndependentVideo, path: str | os.PathLike[str]) -> Path:
    """Draw and encode ``video`` to ``path`` (H.264 by bit rate in MP4, frame ``i`` at
    ``i / fps`` s); the file appears only once complete. Returns the path."""
    path = Path(path)
    look = video.look
    time_base = Fraction(1, look.fps)  # the muxer changes the stream's own once it starts
    options = {"threads": "1", "preset": look.preset}  # one thread: a reproducible bitstream
    if "avx512f" in cpu_flags():
        # x264's AVX-512 code makes the bitstream depend on the process's memory state (see
        # lrcn.world); its AVX2 code, which such CPUs have, does not.
        options["x264-params"] = "asm=AVX2"

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = cast(VideoStream, container.add_stream("libx264", rate=look.fps))
            stream.width, stream.height, stream.pix_fmt = look.width, look.height, "yuv420p"
            stream.bit_rate = look.bit_rate
            stream.time_base = time_base
            stream.codec_context.options = options
            for index, rgb in enumerate(draw_frames(video)):
                frame = av.VideoFrame.from_ndarray(yuv420(rgb), format="yuv420p")
                frame.pts, frame.time_base = index, time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write)
    return path


def write_still(rgb: np.ndarray, path: Path, jpeg_quality: int | None = None) -> Path:
    """Save an RGB frame as PNG, or as JPEG at ``jpeg_quality`` (Pillow's 1..95)."""

    def write(tmp: Path) -> None:
        image = Image.fromarray(rgb)
        if jpeg_quality is None:
            image.save(tmp, format="PNG")
        else:
            image.save(tmp, format="JPEG", quality=jpeg_quality)

    write_atomically(path, write)
    return path


def generate_split(out_dir: str | os.PathLike[str], videos: int, seed: int,
                   config: WorldConfig | None = None, workers: int = 1,
                   progress: bool = True) -> Path:
    """Render ``videos`` videos to ``out_dir/videos/`` and write ``out_dir/captions.json``.

    ``config`` gives the grammar (see :func:`plan_independent_video`). The output does not
    depend on ``workers`` (spawned processes: a calling script needs the
    ``if __name__ == "__main__":`` guard). Returns the path of ``captions.json``.
    """
    _check_counts(videos, seed, workers, "videos")
    out_dir = Path(out_dir)
    jobs = [(seed, index, config, out_dir / VIDEOS_DIR) for index in range(videos)]
    logger.info("rendering %d independent ShapesWorld videos (seed %d) in %s with %d "
                "worker(s)", videos, seed, out_dir, workers)
    done = sorted(map_jobs(_video_job, jobs, workers, progress, "video", _DESC))
    captions = {vid: annotation for _, vid, annotation in done}
    path = out_dir / CAPTIONS_NAME
    write_text_atomically(path, json.dumps(captions, indent=1) + "\n")
    logger.info("wrote %s", path)
    return path


def generate_stills(out_dir: str | os.PathLike[str], images: int, seed: int,
                    config: WorldConfig | None = None, workers: int = 1,
                    progress: bool = True) -> Path:
    """Write ``images`` still frames to ``out_dir/images/`` and their captions (the
    appearance, "a red circle": one frame shows no motion) to ``out_dir/annotations.json``.

    Image ``k`` is a random frame of video ``k`` of the split ``(seed, config)`` renders, with
    its noise, as PNG or JPEG at a random quality. Returns the annotation path.
    """
    _check_counts(images, seed, workers, "images")
    out_dir = Path(out_dir)
    jobs = [(seed, index, config, out_dir / IMAGES_DIR) for index in range(images)]
    done = sorted(map_jobs(_still_job, jobs, workers, progress, "image", _DESC))
    annotation = {
        "images": [{"id": vid, "file_name": name} for _, vid, name, _ in done],
        "annotations": [{"image_id": vid, "caption": caption} for _, vid, _, caption in done],
    }
    path = out_dir / STILLS_NAME
    write_text_atomically(path, json.dumps(annotation, indent=1) + "\n")
    logger.info("wrote %s", path)
    return path


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m lrcn.independent_world``."""
    parser = Parser(
        prog="python -m lrcn.independent_world",
        description="Render a ShapesWorld split with a second, independent renderer (its own "
                    "colours, shapes, backgrounds, noise, frame sizes 320x240 to 640x480, "
                    "24 to 60 fps, H.264 by bit rate; lrcn.world's events and captions), in "
                    f"lrcn.world's layout: <out>/{VIDEOS_DIR}/*.mp4 and <out>/{CAPTIONS_NAME}, "
                    f"or with --stills <out>/{IMAGES_DIR}/* and <out>/{STILLS_NAME}. For "
                    "evaluation only: never train or select models on it.",
        epilog="example: python -m lrcn.independent_world --out data/shapes/independent "
               "--videos 60 --seed 31 --holdout default --workers 2. Exit status 2 on a bad "
               "argument (one line on stderr).",
    )
    add_split_arguments(parser)
    parser.add_argument("--event-seconds", type=float, nargs=2, metavar=("MIN", "MAX"),
                        default=(WorldConfig.min_event_s, WorldConfig.max_event_s),
                        help="an event's length in seconds, drawn uniformly from MIN..MAX "
                             "(default 1.5 4, as lrcn.world)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a bad argument)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = split_config(args, min_event_s=args.event_seconds[0],
                              max_event_s=args.event_seconds[1])
        for fps in FRAME_RATES:  # raises here, not in a worker, where a look's rate misfits
            _grammar(config, fps)
    except ValueError as error:  # split_config's, or WorldConfig's at a look's frame rate
        print(f"python -m lrcn.independent_world: error: {error}", file=sys.stderr)
        return 2
    if args.stills:
        path = generate_stills(args.out, args.videos, args.seed, config, args.workers,
                               not args.no_progress)
        print(f"wrote {args.videos} images to {args.out / IMAGES_DIR} and captions to {path}")
    else:
        path = generate_split(args.out, args.videos, args.seed, config, args.workers,
                              not args.no_progress)
        print(f"wrote {args.videos} videos to {args.out / VIDEOS_DIR} and captions to {path}")
    return 0


_DESC = "independent ShapesWorld"


def _rgb(unit: tuple[float, float, float]) -> tuple[int, int, int]:
    red, green, blue = (int(round(channel * 255)) for channel in unit)
    return red, green, blue


def _backdrop_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A dark to mid, barely coloured background colour (every shade stands out on it)."""
    return _rgb(colorsys.hsv_to_rgb(float(rng.random()),
                                    float(rng.uniform(0.0, _BACKDROP_SATURATION)),
                                    float(rng.uniform(*_BACKDROP_VALUE))))


def _grammar(config: WorldConfig | None, fps: int) -> WorldConfig:
    """What plan_video needs of ``config`` for a video at ``fps``, in the plan's frame."""
    return replace(config or WorldConfig(), width=PLAN_SIZE[0], height=PLAN_SIZE[1], fps=fps,
                   vary=False)


def _check_counts(count: int, seed: int, workers: int, what: str) -> None:
    if count < 1:
        raise IndependentWorldError(f"{what} must be at least 1, got {count}")
    if seed < 0:
        raise IndependentWorldError(f"seed must be non-negative, got {seed}")
    if workers < 1:
        raise IndependentWorldError(f"workers must be at least 1, got {workers}")


def _video_job(job: tuple[int, int, WorldConfig | None, Path]) -> tuple[int, str, dict[str, Any]]:
    """Plan, draw and encode one video (top-level: worker processes run it)."""
    seed, index, config, folder = job
    video = plan_independent_video(seed, index, config)
    encode_video(video, folder / f"{video.video_id}.mp4")
    return index, video.video_id, video.annotation()


def _still_job(job: tuple[int, int, WorldConfig | None, Path]) -> tuple[int, str, str, str]:
    """Plan one video and save one random frame of it as a still image."""
    seed, index, config, folder = job
    video = plan_independent_video(seed, index, config)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, _STILL_STREAM]))
    k = int(rng.integers(len(video.plan.events)))
    track = video.plan.tracks[k]
    rgb = draw_frame(video, int(rng.integers(track.start_frame, track.end_frame)))
    quality = None if rng.random() < _PNG_CHANCE else int(rng.choice(JPEG_QUALITIES))
    name = f"{video.video_id}.{'png' if quality is None else 'jpg'}"
    folder.mkdir(parents=True, exist_ok=True)
    write_still(rgb, folder / name, quality)
    return index, video.video_id, name, video.plan.events[k].appearance


if __name__ == "__main__":
    raise SystemExit(main())
