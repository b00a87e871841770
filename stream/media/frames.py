"""The one frame sampling and conversion path, shared by training, evaluation and streaming.

Frames are sampled by presentation time at ``sample_fps`` (never by frame index) and converted to
RGB at the model's input size inside libswscale, so that training and runtime see identical pixels.

Example:
    >>> for frame in iter_sampled_frames("clip.mp4", sample_fps=10, size=(224, 224)):
    ...     print(frame.index, frame.time, frame.rgb.shape)   # 0 0.0 (224, 224, 3)
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from stream.errors import MediaError, reason
from stream.media.hwaccel import report_software_fallback, resolve

log = logging.getLogger(__name__)

# Sample times are k / sample_fps; a frame whose time is within this tolerance of a sample time
# counts as at that time (PTS are rationals, their float conversion is not exact).
TIME_EPS = 1e-6
HD_PIXELS = 1280 * 720  # files at least this large decode with frame threading
# A timestamp this many seconds before the latest one is a restart of the clock, not jitter.
_JUMP_BACK = 0.5
# Bilinear is cheap and, unlike FFmpeg's default (bicubic), has no ringing on flat synthetic
# colours; what matters most is that every caller uses the same one.
_INTERPOLATION = "BILINEAR"


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame.

    Attributes:
        index: position in the sampled sequence (0, 1, 2, ...).
        time: presentation time in seconds from the start of the video.
        rgb: (H, W, 3) uint8 RGB pixels at the requested size.
    """

    index: int
    time: float
    rgb: np.ndarray


class TimeSampler:
    """Decides, frame by frame, which frames to keep so that kept frames are ``1/fps`` apart.

    A frame is kept when it is the first at or after the next sample time; the next sample time
    is then the first grid point ``k / fps`` after the kept frame. ``fps=None`` keeps every frame.
    ``start`` begins the sampling at the first grid point at or after that time.
    Sources at 25, 30 or 60 fps therefore give the same sample times (up to a source frame).

    Example:
        >>> sampler = TimeSampler(10)
        >>> [t for t in (0.0, 0.04, 0.08, 0.12, 0.16, 0.2) if sampler.accept(t)]
        [0.0, 0.12, 0.2]
    """

    def __init__(self, fps: float | None, start: float = 0.0) -> None:
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"sample fps must be a positive number, got {fps!r}")
        self.fps = fps
        # ``start`` > 0 (a resume, a chunk): the next sample time is the first grid point at
        # or after it, as in a run from the beginning; a fresh sampler would keep the first
        # frame it sees, off the grid.
        self._next = -math.inf if start <= 0 or fps is None else (
            math.ceil(start * fps - TIME_EPS) / fps)

    def due(self, time: float) -> bool:
        """Whether the frame at ``time`` seconds would be sampled (nothing advances)."""
        return self.fps is None or time >= self._next - TIME_EPS

    def accept(self, time: float) -> bool:
        """Return whether the frame at ``time`` seconds is sampled (and advance if so)."""
        if self.fps is None:
            return True
        if not self.due(time):
            return False
        self._next = (math.floor(time * self.fps + TIME_EPS) + 1) / self.fps
        return True


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int],
                 reformatter: VideoReformatter | None = None) -> np.ndarray:
    """Convert a decoded frame to (H, W, 3) uint8 RGB at ``size`` = (width, height) in swscale.

    ``reformatter``: one per thread that converts a stream's frames, so that its swscale
    context is built once rather than for every frame (a new one each call otherwise)."""
    width, height = size
    converted = (reformatter or VideoReformatter()).reformat(
        frame, width=width, height=height, format="rgb24", interpolation=_INTERPOLATION,
        threads=1)
    return np.ascontiguousarray(converted.to_ndarray())


def iter_sampled_frames(
    path: str | Path,
    sample_fps: float | None,
    size: tuple[int, int],
    thread_type: str | None = None,
    hwaccel: str = "none",
) -> Iterator[SampledFrame]:
    """Decode ``path`` and yield its frames sampled by presentation time.

    Args:
        path: a video file or a still image (an image is a one-frame video).
        sample_fps: samples per second of video time; None keeps every frame.
        size: (width, height) of the RGB output.
        thread_type: PyAV decoder threading ("AUTO", "FRAME", "SLICE") or None for FFmpeg's default.
        hwaccel: hardware decoding (see :mod:`stream.media.hwaccel`); frames come back to the same
            conversion.

    Raises:
        MediaError: the input cannot be opened, has no video stream, or fails to decode.
    """
    name = str(path)

    def opened(_container: av.container.InputContainer, video: av.VideoStream) -> None:
        if thread_type is not None:
            video.thread_type = thread_type

    yield from decode_sampled(lambda: open_video(name, hwaccel), name, sample_fps, size,
                              opened=opened)


Opener = Callable[[], contextlib.AbstractContextManager[
    tuple[av.container.InputContainer, av.VideoStream]]]


def decode_sampled(
    open_input: Opener,
    name: str,
    sample_fps: float | None,
    size: tuple[int, int],
    first: float = 0.0,
    opened: Callable[[av.container.InputContainer, av.VideoStream], None] | None = None,
    packets: Callable[[av.container.InputContainer, av.VideoStream],
                      Iterable[av.Packet]] | None = None,
    counter: FrameCounter | None = None,
) -> Iterator[SampledFrame]:
    """The one media path: open an input, seek to ``first`` seconds, sample on the grid,
    count and convert. The live decoder (start and resume), the archive's tasks and
    :func:`iter_sampled_frames` all read through it.

    Args:
        open_input: opens the input: a context manager giving (container, video stream).
            Called again to decode from the start when the input cannot seek.
        name: the input's name in errors (already redacted for a URL).
        sample_fps: samples per second of video time; None keeps every frame.
        size: (width, height) of the RGB output.
        first: the first time (seconds from the stream's start) to give; see :func:`frames_from`.
        opened: called with (container, video) on each opening, before decoding (decoder
            threading, a status).
        packets: the packets to decode instead of the container's demuxing (a webcam's
            retried reads), from (container, video).
        counter: counts every decoded frame, sampled or not (a caller's, to go on across
            openings; the live decoder's metrics).

    Frames leave with ``index`` counted from 0 over this call. Stopping the iteration closes
    the input.

    Raises:
        MediaError: naming ``name``: the input cannot be opened, seeks fail, decoding fails
            ("decode failed after N frames"), or it has no decodable video frame.
    """
    counter = counter if counter is not None else FrameCounter()
    before = counter.decoded  # what this call decodes is counted from here
    index = 0

    def decode(seek: bool) -> Iterator[SampledFrame]:
        nonlocal index
        with open_input() as (container, video):
            if opened is not None:
                opened(container, video)
            reformatter = VideoReformatter()  # one swscale context for the whole input
            try:
                for time, frame in frames_from(
                        container, video, first, sample_fps, counter, name, seek,
                        None if packets is None else packets(container, video)):
                    yield SampledFrame(index=index, time=time,
                                       rgb=frame_to_rgb(frame, size, reformatter))
                    index += 1
            except (av.FFmpegError, OSError) as error:
                raise MediaError(f"{name}: decode failed after {counter.decoded - before} "
                                 f"frames ({reason(error)})") from error

    try:
        yield from decode(seek=True)
    except UnseekableError as error:  # raised before any frame: decoded from the start
        log.info("%s; decoding from the start to %.3f s", error, first)
        yield from decode(seek=False)
    if counter.decoded == before:
        raise MediaError(f"{name}: no decodable video frames")


@contextlib.contextmanager
def open_video(
    path: str | Path, hwaccel: str = "none"
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """``with open_video(path) as (container, video):`` a media file and its first video
    stream, closed on leaving; raises :class:`MediaError` naming the file when it cannot be
    opened or has no video.

    ``hwaccel`` asks for hardware decoding (see :mod:`stream.media.hwaccel`), software where there
    is none."""
    accel = resolve(hwaccel)
    try:
        container = av.open(str(path), hwaccel=accel)
    except (av.FFmpegError, OSError) as error:
        raise MediaError(f"{path}: cannot open ({reason(error)})") from error
    with container:
        video = video_stream(container, str(path))
        report_software_fallback(str(path), video, hwaccel)
        yield container, video


def video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    """The container's first video stream, or :class:`MediaError` when it has none or FFmpeg
    has no decoder for it."""
    if not container.streams.video:
        raise MediaError(f"{name}: no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise MediaError(f"{name}: no decoder for its video codec")
    return stream


def use_file_threading(video: av.VideoStream) -> None:
    """Frame threading for a file of at least 1280x720 (see stream.engines.decoder's measurements);
    it adds frames of delay, so live sources never use it."""
    context = video.codec_context
    if context.width * context.height >= HD_PIXELS:
        video.thread_type = "AUTO"


@dataclass
class FrameCounter:
    """How many frames :func:`sampled_frames` decoded (sampled or not)."""

    decoded: int = 0


class StreamClock:
    """Seconds from a video stream's start for each of its frames, in decode order: the one
    clock of sampling, the archive and the overlay.

    The origin is the stream's start time, or its first frame's time when the container gives
    none. Frames without a timestamp (still images, some raw streams) are timed by their
    position and the stream's rate. Timestamps that restart (joined recordings, a recorder's
    restart) carry time on one frame after the last instead of going back.

    Example:
        >>> clock = StreamClock(stream)
        >>> [clock.time(frame) for frame in container.decode(stream)][:3]
        [0.0, 0.04, 0.08]
    """

    def __init__(self, video: av.stream.Stream, origin: float | None = None) -> None:
        self.origin = origin  # given: the stream's start as found before a seek
        if origin is None and video.start_time is not None and video.time_base is not None:
            self.origin = float(video.start_time * video.time_base)
        rate = getattr(video, "average_rate", None)
        self.rate = float(rate) if rate else 25.0
        self.frames = 0  # frames timed so far
        self.restarts = 0  # times the timestamps went back
        self.shift = 0.0  # seconds added to the timestamps since they restarted
        self._last = -math.inf

    def time(self, frame: av.VideoFrame) -> float:
        """The frame's seconds from the stream's start (call once per frame, in order)."""
        return self.at(frame.time)

    def at(self, timestamp: float | None) -> float:
        """Seconds from the stream's start of the next frame or packet, from its timestamp in
        seconds (None: timed by position)."""
        if timestamp is None:
            timestamp = self.frames / self.rate
        self.frames += 1
        if self.origin is None:
            self.origin = timestamp
        time = timestamp - self.origin + self.shift
        if time < self._last - _JUMP_BACK:
            self.shift += self._last - time + 1 / self.rate
            time = self._last + 1 / self.rate
            self.restarts += 1
        self._last = max(self._last, time)
        return time


def sampled_frames(
    container: av.container.InputContainer,
    video: av.VideoStream,
    sampler: TimeSampler,
    counter: FrameCounter | None = None,
    packets: Iterable[av.Packet] | None = None,
    clock: StreamClock | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode ``stream`` and yield (seconds from its start, frame) for sampled frames.

    Times come from :class:`StreamClock` (``clock``, or a new one for the stream). ``packets``
    replaces the container's demuxing (a live source's stall-watching reader). FFmpeg errors
    propagate for the caller to name the input.
    """
    counter = counter if counter is not None else FrameCounter()
    clock = clock or StreamClock(video)
    # An intra-only codec (MJPEG) decodes each packet to its own frame at the packet's time:
    # a packet whose time is not sampled is never decoded (a 30 fps webcam sampled at 10 saves
    # two decodes in three).
    skip = sampler.fps is not None and bool(getattr(video.codec_context.codec, "intra_only",
                                                    False))
    for packet in container.demux(video) if packets is None else packets:
        if skip and packet.size:
            time = clock.at(float(packet.pts * packet.time_base)
                            if packet.pts is not None and packet.time_base is not None else None)
            if not sampler.due(time):
                continue
            for frame in packet.decode():
                counter.decoded += 1
                if sampler.accept(time):
                    yield time, frame
            continue
        for frame in packet.decode():
            time = clock.time(frame)
            counter.decoded += 1
            if sampler.accept(time):
                yield time, frame


class UnseekableError(MediaError):
    """The input cannot seek (a raw H.264 or MJPEG stream): decode it from its start instead."""


# FFmpeg's answer to a seek in an input that has no index to seek in (EPERM)
_UNSEEKABLE = (av.error.PermissionError,)


def frames_from(
    container: av.container.InputContainer,
    video: av.VideoStream,
    first: float,
    sample_fps: float | None,
    counter: FrameCounter | None = None,
    name: str = "",
    seek: bool = True,
    packets: Iterable[av.Packet] | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """The sampled frames at or after ``first`` seconds from the stream's start: the one seek
    of the live decoder's start and resume and of the archive's chunks.

    Frames are sampled at ``sample_fps`` on the whole stream's grid (None: every frame). The
    seek is to a keyframe at or before ``first``, on the stream's own clock (its start time
    is the origin). Some containers (MPEG-TS) land after the target; then the seek is retried
    further back, doubling the margin, down to the start. ``seek=False`` decodes from the start
    and skips (for an input that cannot seek). ``counter`` counts every decoded frame.

    Raises:
        UnseekableError: the input cannot seek, or even a seek to its start lands late (raised
            before any frame; reopen it and pass ``seek=False``).
        MediaError: the seek failed otherwise, naming ``name``.
    """
    counter = counter if counter is not None else FrameCounter()
    sampler = TimeSampler(sample_fps, start=first)
    if first <= 0 or not seek or video.time_base is None:
        # decoded from the start: the sampler skips what comes before ``first`` (and, for an
        # intra-only codec, does not even decode it)
        frames = sampled_frames(container, video, sampler, counter, packets)
    else:
        frames = (item for item in _seek(container, video, first, counter, name)
                  if sampler.accept(item[0]))
    for time, frame in frames:
        if time >= first - TIME_EPS:  # the sampler's grid point, or any frame without fps
            yield time, frame


def _seek(container: av.container.InputContainer, video: av.VideoStream, first: float,
          counter: FrameCounter, name: str) -> Iterator[tuple[float, av.VideoFrame]]:
    time_base = video.time_base
    assert time_base is not None  # checked by the caller
    origin = StreamClock(video).origin
    if origin is None:  # the stream's clock starts at its first frame: read it before seeking
        opening = next(container.decode(video), None)
        origin = float(opening.time) if opening is not None and opening.time is not None else 0.0
    margin = 0.0
    while True:
        target = max(0.0, first - margin)
        try:
            container.seek(int((target + origin) / time_base), stream=video,
                           backward=True)
        except _UNSEEKABLE as error:
            raise UnseekableError(f"{name}: cannot seek ({reason(error)})") from error
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"{name}: seek to {first:.3f} s failed ({reason(error)})") from error
        frames = sampled_frames(container, video, TimeSampler(None), counter,
                                clock=StreamClock(video, origin=origin))
        head = next(frames, None)
        if head is not None and head[0] <= first + TIME_EPS:
            break
        # Nothing decoded (a seek past the end) or a first frame after ``first``: go back.
        if target == 0.0:  # even a seek to the start lands late (MPEG-TS at times)
            raise UnseekableError(f"{name}: seeks land after their target")
        margin = max(1.0, 2 * margin)
    yield head
    yield from frames


def read_sampled_frames(
    path: str | Path, sample_fps: float | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Return all sampled frames of ``path`` as ((T, H, W, 3) uint8, (T,) float64 seconds)."""
    frames = list(iter_sampled_frames(path, sample_fps, size))
    width, height = size
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8), np.zeros((0,), np.float64)
    rgb = np.stack([f.rgb for f in frames])
    times = np.array([f.time for f in frames], dtype=np.float64)
    return rgb, times
