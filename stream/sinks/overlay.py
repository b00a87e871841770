"""Burned-in captions: a copy of a video with its current caption drawn on every frame.

``run_stream.py clip.mp4 --overlay out.mp4`` captions the file, then writes ``out.mp4``: every
source frame (not only the sampled ones) with the caption in force at its time, in outlined
white text at the bottom, re-encoded with H.264 at the source's frame rate and timestamps, and
the source's audio copied as it is. The file appears under its name only once complete.

The font is DejaVu Sans Bold from the system (Debian's fonts-dejavu-core) when present, else
Pillow's built-in scalable font.
"""

from __future__ import annotations

import bisect
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.errors import MediaError, StreamError, reason
from stream.events import CaptionEvent, Event
from stream.files import write_atomically
from stream.media.frames import StreamClock, open_video
from stream.sinks.base import Sink

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
              "/Library/Fonts/Arial Bold.ttf", "C:/Windows/Fonts/arialbd.ttf")


def load_font(size: int) -> Any:
    """A readable bold font at ``size`` pixels: the system's DejaVu Sans Bold if found."""
    from PIL import ImageFont

    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


class CaptionPainter:
    """Draws a caption on RGB frames of one size (the font and layout are computed once)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.size = max(12, height // 16)
        self.font = load_font(self.size)
        self.stroke = max(2, self.size // 10)

    def paint(self, rgb: np.ndarray, text: str) -> np.ndarray:
        """``rgb`` (H, W, 3) uint8 with ``text`` drawn, centred at the bottom, outlined."""
        if not text:
            return rgb
        from PIL import Image, ImageDraw

        image = Image.fromarray(rgb)
        draw = ImageDraw.Draw(image)
        box = draw.textbbox((0, 0), text, font=self.font, stroke_width=self.stroke)
        x = max(0, (self.width - (box[2] - box[0])) // 2)
        y = self.height - (box[3] - box[1]) - self.size // 2 - self.stroke
        draw.text((x, y), text, font=self.font, fill=(255, 255, 255),
                  stroke_width=self.stroke, stroke_fill=(0, 0, 0))
        return np.asarray(image)


def write_overlay(source: str | Path, out: str | Path,
                  captions: list[tuple[float, str]]) -> Path:
    """Write ``out``: ``source`` with the caption in force drawn on every frame.

    Args:
        source: a video file.
        out: the output video (.mp4, .mkv, ...).
        captions: (pts seconds, caption) of the sampled frames, in time order; a caption holds
            from its pts until the next one.
    """
    times = [pts for pts, _ in captions]
    texts = [text for _, text in captions]
    out = Path(out)
    return write_atomically(out, lambda tmp: _encode(Path(source), tmp, out.suffix, times,
                                                     texts))


class OverlayRecorder(Sink):
    """Keeps the captions of the streams that get an overlay; :meth:`write_overlays` writes
    them once the run is over (a run cut short writes none).

    Args:
        targets: stream id -> (the video file, the overlay to write).

    Raises:
        ImportError: there are targets and Pillow (the ``web`` extra) is not installed: said
            before the run, not after it.
    """

    def __init__(self, targets: dict[str, tuple[str, Path]]) -> None:
        if targets:
            try:
                import PIL  # noqa: F401 - the painter's, imported when the overlays are written
            except ImportError as error:
                raise ImportError(f"--overlay needs Pillow (pip install 'lrcn-stream[web]'): "
                                  f"{error}") from error
        self.targets = targets
        self.captions: dict[str, list[tuple[float, str]]] = {s: [] for s in targets}

    def write(self, event: Event) -> None:
        if event.stream in self.captions and isinstance(event, CaptionEvent):
            self.captions[event.stream].append((event.pts, event.caption))

    def write_overlays(self, skip: set[str]) -> dict[str, str]:
        """Write each overlay not yet written but those of the streams in ``skip`` (they
        failed); returns stream -> the error of an overlay that could not be written."""
        errors = {}
        for stream, (source, target) in list(self.targets.items()):
            del self.targets[stream]  # one try each: a second call writes only the rest
            if stream in skip:
                continue
            try:
                write_overlay(source, target, self.captions[stream])
                print(f"overlay: {target}", file=sys.stderr)
            except (StreamError, OSError, ValueError) as error:
                errors[stream] = f"--overlay {target}: {error}"
        return errors


def _encode(source: Path, tmp: Path, suffix: str, times: list[float],
            texts: list[str]) -> None:
    try:
        _encode_unchecked(source, tmp, suffix, times, texts)
    except (av.FFmpegError, ValueError) as error:  # also from closing the output
        raise MediaError(f"{source}: overlay failed ({reason(error)})") from error


def _encode_unchecked(source: Path, tmp: Path, suffix: str, times: list[float],
                      texts: list[str]) -> None:
    if suffix.lower() not in CONTAINERS:
        raise ValueError(f"write the overlay as {', '.join(sorted(CONTAINERS))}, not {suffix!r}")
    with open_video(source) as (container, video):
        audio = container.streams.audio[0] if container.streams.audio else None
        with av.open(str(tmp), "w", format=CONTAINERS[suffix.lower()]) as output:
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            encoder = output.add_stream("libx264", rate=rate)
            encoder.width = video.codec_context.width - video.codec_context.width % 2
            encoder.height = video.codec_context.height - video.codec_context.height % 2
            encoder.pix_fmt = "yuv420p"
            encoder.codec_context.time_base = video.time_base or Fraction(1, 90000)
            encoder.options = {"crf": "20", "preset": "veryfast"}
            if audio is not None and suffix.lower() != ".mkv" \
                    and audio.codec_context.name not in MP4_AUDIO:
                log.warning("%s: %s audio cannot go into %s; the overlay has no sound", source,
                            audio.codec_context.name, suffix)
                audio = None
            copied = output.add_stream_from_template(audio) if audio is not None else None
            painter = CaptionPainter(encoder.width, encoder.height)
            # The captions' clock (timestamps that restart carry on), so that each frame gets
            # the caption of its time; output timestamps follow the same clock (the source's
            # own until a restart, then carried on), and so does the audio: nothing goes back.
            clock = StreamClock(video)
            time_base = encoder.codec_context.time_base
            sound = StreamClock(audio) if audio is not None else None
            streams = [video] + ([audio] if audio is not None else [])
            try:
                for packet in container.demux(streams):
                    if packet.stream is audio and copied is not None and sound is not None:
                        if packet.dts is not None and packet.time_base is not None:
                            sound.at(float(packet.dts * packet.time_base))
                            shift = round(sound.shift / packet.time_base)
                            packet.dts += shift
                            if packet.pts is not None:
                                packet.pts += shift
                            packet.stream = copied
                            output.mux(packet)
                        continue
                    for frame in packet.decode():
                        if not isinstance(frame, av.VideoFrame):
                            continue
                        time = clock.time(frame)
                        text = _caption_at(times, texts, time)
                        rgb = frame.to_ndarray(format="rgb24", width=encoder.width,
                                               height=encoder.height)
                        drawn = av.VideoFrame.from_ndarray(painter.paint(rgb, text),
                                                           format="rgb24")
                        drawn.pts = round(((clock.origin or 0.0) + time) / time_base)
                        drawn.time_base = time_base
                        output.mux(encoder.encode(drawn.reformat(format="yuv420p")))
                output.mux(encoder.encode())
            except av.FFmpegError as error:
                raise MediaError(f"{source}: overlay failed ({reason(error)})") from error


def _caption_at(times: list[float], texts: list[str], time: float) -> str:
    """The caption in force at ``time``: that of the last sampled frame at or before it."""
    i = bisect.bisect_right(times, time + 1e-6) - 1
    return texts[i] if i >= 0 else ""
