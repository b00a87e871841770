"""The decoder thread: one per source, from PyAV to the mailbox.

It opens the source, samples frames by presentation time at the bundle's ``sample_fps``,
converts each sampled frame to RGB at the model's input size inside libswscale (the one path of
:mod:`stream.media.frames`), computes its motion thumbnail and key-frame signature when the
pipeline asks (numpy sums, then in parallel with the model rather than on the one inference
thread; see :class:`~stream.model.keyframes.FrameSignals`), and queues it with its timestamps.
Frames that are not sampled are never converted.

Live sources (webcam, RTSP, live network streams) are reopened when they end, fail or stall past
the read timeout, with exponential backoff and a limit on consecutive failures. The first frame
after a reopening carries the reset flag (the stream's memory starts over at the
discontinuity), and its PTS continues from where the stream left off plus the time the outage
took, so that times keep increasing. Every step is reported as a status event.

A network input (HTTP(S), HLS, RTMP, SRT, ...) is live when it has no duration. Failures and
stalls reopen it; a clean end reopens it only when its input also has no length: FFmpeg knows
no size for it (``container.size < 0``), which over HTTP means a response without
``Content-Length``. That is what a camera or an encoder sends (MJPEG
``multipart/x-mixed-replace``, HTTP-FLV, MPEG-TS over HTTP): a stream has no length in advance,
and its clean end (the server ending the response, its most common failure) is an outage,
reopened like RTSP's. (Over HTTP the clean end of such a response is a chunked one's last
chunk; one cut off without it FFmpeg reports as an I/O error, reconnected as any error.) A file
has a length: a plain HTTP server sends a ``Content-Length`` for an MPEG-TS file, which has no
duration either, so it ends at its end instead of being replayed forever; only a file sent
without its length (a rare dynamic server) would be replayed. Pacing (frames arriving no faster
than their timestamps) was not chosen as the sign of a stream: MJPEG over HTTP carries no
timestamps (FFmpeg's ``mpjpeg`` demuxer counts 1/25 s a frame whatever the camera's rate, so a
60 fps camera looks 2.4 times too fast), and the probe hands over the frames it buffered at
once. A named pipe's writer closing it is its end too.

Decoder settings, measured on the 2-core machine. 640x480 H.264 with noise, decode plus
conversion of every frame: FFmpeg's default slice threading 254 fps vs frame threading 239-261
and AUTO 255; swscale ``threads=1`` 254 fps vs its own threading 232. Slice threading adds no
frames of latency (frame threading adds one per thread), so live sources keep the default. For
files, frame threading (AUTO) decoded 1920x1080 at 237-240 fps against 199 (sampling at 10 fps)
and raised the whole pipeline on a 1080p file from 142 to 180 source frames/s, but lowered it on
640x480 (418 against 431-442): files of at least 1280x720 use it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import av
import numpy as np

from stream.engines.mailbox import FrameItem, Mailbox
from stream.errors import MediaError
from stream.events import ENDED, OPENED, RECONNECTING, StatusEvent
from stream.media.frames import FrameCounter, decode_sampled, use_file_threading, video_stream
from stream.media.hwaccel import report_software_fallback
from stream.media.sources import PipeReader, Source, open_pipe, open_source, redact

Signals = Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray | None]]
"""A sampled frame (S, S, 3) -> its thumbnail and signature, or (None, None)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often a live source is reopened.

    Attributes:
        attempts: consecutive failed attempts (no frame in between) before giving up;
            0 never reconnects.
        delay: seconds before the first attempt; doubled after each failure.
        max_delay: the longest wait between attempts.
    """

    attempts: int = 10
    delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"reconnect attempts must be 0 or more, got {self.attempts}")
        if not (0 <= self.delay <= self.max_delay):
            raise ValueError(f"reconnect delays must satisfy 0 <= delay <= max delay, got "
                             f"{self.delay} and {self.max_delay}")

    def wait(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1, 2, ...)."""
        return float(min(self.max_delay, self.delay * 2 ** (failures - 1)))


@dataclass(frozen=True)
class Resume:
    """Where a stream that was captioned elsewhere carries on (another process took over).

    Attributes:
        index: the index of its next sampled frame (indexes are never emitted twice).
        pts: the presentation time of its last captioned frame.
        decoded_at: the wall-clock time that frame was decoded.
    """

    index: int
    pts: float
    decoded_at: float


class Decoder(threading.Thread):
    """Decode one source into ``mailbox`` until it ends, gives up, or ``stop`` is set.

    A failure of the source (cannot open, no video, decode error, reconnects exhausted) ends the
    stream with an ``ended`` status carrying the error; other streams are unaffected. Any other
    exception is a bug: it is kept in :attr:`error` for the pipeline to re-raise.

    With ``resume``, the stream continues one that ran elsewhere: its indexes go on from
    ``resume.index``; a file is decoded from just after ``resume.pts``; a live source's clock
    goes on from ``resume.pts`` plus the time since that frame, as after a reconnect.

    ``signals`` gives each queued frame its thumbnail and key-frame signature, or (None, None)
    where the pipeline wants the inference worker to compute them; without it, it always does.
    """

    def __init__(
        self,
        stream: str,
        source: Source,
        mailbox: Mailbox,
        sample_fps: float | None,
        size: tuple[int, int],
        reconnect: ReconnectPolicy,
        stop: threading.Event,
        resume: Resume | None = None,
        halt: threading.Event | None = None,
        signals: Signals | None = None,
    ) -> None:
        super().__init__(name=f"decoder-{stream}", daemon=True)
        self.stream = stream
        self.source = source
        self.mailbox = mailbox
        self.sample_fps = sample_fps
        self.size = size
        self.reconnect = reconnect
        self.stop = stop
        self.halt = stop if halt is None else halt  # set on a bug: the whole pipeline stops
        self.signals = signals
        self.error: BaseException | None = None
        self.index = 0  # sampled frames queued so far
        self.decoded = FrameCounter()  # frames decoded, sampled or not, over every opening
        self.reconnects = 0
        self._last: tuple[float, float] | None = None  # (pts, monotonic time) of the last frame
        self._frames_since_open = 0
        self._unsized = False  # the last opening's input had no length (a network stream)
        self._pipe: PipeReader | None = None  # a named pipe stays open across reopenings
        self._announced = False  # this opening's OPENED status was sent
        if resume is not None:
            self.index = resume.index
            if source.kind == "file":  # the frames after the last one captioned
                self.source = replace(source, start=max(source.start, resume.pts + 1e-6))
            else:
                since = max(0.0, time.time() - resume.decoded_at)
                self._last = (resume.pts, time.monotonic() - since)

    def run(self) -> None:
        try:
            failure = self._decode_until_done()
            done = "stopped" if self.stop.is_set() else "end of stream"
            # The last status and the stream's close in one step (then its id is free again).
            self.mailbox.finish(self.stream, self._status_event(ENDED, failure or done, failure))
        except BaseException as error:  # a bug: the pipeline re-raises it in the main thread
            self.error = error
            self.halt.set()
            self.mailbox.close(self.stream)
        finally:
            if self._pipe is not None:
                self._pipe.close()

    def _decode_until_done(self) -> str | None:
        """Decode, reopening live sources; return None at a normal end, else the failure."""
        failures = 0
        while not self.stop.is_set():
            try:
                failure = self._decode_once()
            except MediaError as error:
                failure = redact(str(error))
            if self.stop.is_set():
                return None
            if not self._reconnects() or self.reconnect.attempts == 0:
                return failure
            if failure is None and not self._reopens_at_end():
                return None  # a file over the network, or a pipe's writer closing it
            if self._frames_since_open:  # the source worked for a while: start counting anew
                failures = 0
            failures += 1
            if failures > self.reconnect.attempts:
                return (f"{self.source.name}: gave up after {self.reconnect.attempts} "
                        f"reconnect attempt(s); last: {failure or 'end of stream'}")
            delay = self.reconnect.wait(failures)
            self._status(RECONNECTING, f"{failure or 'end of stream'}; reopening in "
                                       f"{delay:.1f}s (attempt {failures}/"
                                       f"{self.reconnect.attempts})")
            self.reconnects += 1
            self.stop.wait(delay)
        return None

    def _reconnects(self) -> bool:
        """Cameras, RTSP and pipes reopen; so does a network source unless it proved to be a
        file."""
        kind, live = self.source.kind, self.source.live
        return kind in ("webcam", "rtsp", "pipe") or (kind == "network" and live is not False)

    def _reopens_at_end(self) -> bool:
        """Whether a clean end is an outage to reopen: always for cameras and RTSP; for a live
        network input only when its last opening had no length (a stream, not a file: see the
        module docstring); never for a pipe (its writer closed it)."""
        if self.source.kind == "network":
            return bool(self.source.live) and self._unsized
        return self.source.kind != "pipe"

    def _decode_once(self) -> str | None:
        """Open the source and queue its sampled frames; return None at its end (or a stop),
        else why not.

        Raises MediaError when the source cannot be opened, seeked or decoded, or has no video.
        """
        self._frames_since_open = 0
        self._announced = False
        if self.source.kind == "pipe" and self._pipe is None:
            self._pipe = open_pipe(self.source, self.stop)
        offset = 0.0
        if self._last is not None:  # continue the clock across the outage
            offset = self._last[0] + (time.monotonic() - self._last[1])
        pace = _Pace() if self.source.paced else None
        packets = None
        if self.source.kind == "webcam":  # opened non-blocking: retried up to a timeout
            def packets(container: av.container.InputContainer,
                        video: av.VideoStream) -> Iterator[av.Packet]:
                return retried_packets(container, video, self.source.read_timeout, self.stop)
        frames = decode_sampled(self._open, self.source.name, self.sample_fps, self.size,
                                self.source.start, self._opened, packets, self.decoded)
        for frame in frames:
            if pace is not None and not pace.wait(frame.time, self.stop):
                return None
            if self.stop.is_set():
                return None
            now = time.monotonic()
            decoded_at = time.time()
            thumb, sig = (None, None) if self.signals is None else self.signals(frame.rgb)
            item = FrameItem(stream=self.stream, index=self.index, pts=offset + frame.time,
                             decoded_at=decoded_at, decoded_mono=now, rgb=frame.rgb,
                             reset=self._frames_since_open == 0, thumb=thumb, signature=sig)
            if not self.mailbox.put(self.stream, item):
                return None
            self.index += 1
            self._frames_since_open += 1
            self._last = (item.pts, now)
        return None

    @contextlib.contextmanager
    def _open(self) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
        with open_source(self.source, self.stop, self._pipe) as container:
            yield container, video_stream(container, self.source.name)

    def _opened(self, container: av.container.InputContainer, video: av.VideoStream) -> None:
        """What an opening learns (live or a file, sized or not) and says (one OPENED status;
        a reopening to decode an unseekable file from its start says nothing new)."""
        if self.source.live is None:  # a network input: live unless it has a duration
            self.source = replace(self.source, live=container.duration is None)
            self.mailbox.set_live(self.stream, bool(self.source.live))
        if self.source.kind == "network":  # no Content-Length over HTTP: a stream
            self._unsized = container.size < 0
        if not self.source.live:
            use_file_threading(video)
        report_software_fallback(self.source.name, video, self.source.hwaccel)
        if self._announced:
            return
        self._announced = True
        context = video.codec_context
        where = " (hardware decoding)" if context.is_hwaccel else ""
        self._status(OPENED, f"{self.source.name}: {context.name} "
                             f"{context.width}x{context.height}{where}")

    def _status(self, kind: str, message: str, error: str | None = None) -> None:
        self.mailbox.put(self.stream, self._status_event(kind, message, error))

    def _status_event(self, kind: str, message: str, error: str | None) -> StatusEvent:
        level = logging.WARNING if error or kind == RECONNECTING else logging.INFO
        log.log(level, "%s %s: %s", self.stream, kind, message)
        return StatusEvent(stream=self.stream, kind=kind, at=time.time(), message=message,
                           dropped=self.mailbox.dropped(self.stream),
                           reconnects=self.reconnects, error=error)


class _Pace:
    """Releases a paced file's frames at their timestamps, as a camera sends them: the first
    frame at once, each later one when as much time has passed as between their timestamps."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (pts, monotonic time) of the first

    def wait(self, pts: float, stop: threading.Event) -> bool:
        """Wait for the frame at ``pts``; False when ``stop`` was set meanwhile."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = (pts, now)
        due = self._origin[1] + (pts - self._origin[0])
        return due <= now or not stop.wait(due - now)


_RETRY = 0.005  # seconds between reads of a non-blocking input that had nothing


def retried_packets(
    container: av.container.InputContainer, video: av.VideoStream, timeout: float,
    stop: threading.Event,
) -> Iterator[av.Packet]:
    """The packets of an input opened non-blocking (``fflags=nonblock``): a read that finds
    nothing yet (EAGAIN) is retried every few milliseconds, and ``timeout`` seconds without a
    packet raise :class:`TimeoutError`. Ends at the input's end, or quietly once ``stop`` is set.
    """
    waiting_since: float | None = None
    while not stop.is_set():
        try:
            for packet in container.demux(video):
                waiting_since = None
                yield packet
                if stop.is_set():
                    return
            return
        except BlockingIOError:
            now = time.monotonic()
            waiting_since = waiting_since or now
            if now - waiting_since >= timeout:
                raise TimeoutError(f"no frame for {timeout:g} s") from None
            stop.wait(_RETRY)
