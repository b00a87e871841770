"""What a user types as a source, mapped to what PyAV opens.

One function, :func:`parse_source`, turns a string into a :class:`Source`: the URL or path,
the FFmpeg input format and options, whether the source is live, and a display name with any
credentials removed. Forms::

    clip.mp4, /data/archive/cam1.mkv       a file of any container and codec FFmpeg decodes
    photo.jpg, frame.png                   a still image (one frame, one caption)
    webcam, webcam:1, /dev/video0          a camera: v4l2 (Linux), avfoundation (macOS), dshow
                                           (Windows; webcam:NAME takes the device's name)
    rtsp://user:pw@host:554/stream         RTSP over TCP, read timeout, small probe: fast start
    http(s)://host/live.m3u8               HTTP(S) and HLS (live when the input has no duration;
                                           reopened after errors, and after a clean end when
                                           it has no length either: a stream, not a file)
    lavfi:testsrc2=size=640x480:rate=30    an FFmpeg filter graph; live when it holds "realtime"
    /tmp/cam.fifo                          a named pipe (or other character device) that a
                                           producer writes a stream into: live

Live sources are never waited on: the decoder drops their oldest queued frames to keep latency
bounded. Files are never dropped from. Every live source has a read timeout, so that one that
stops sending is reconnected instead of blocking its decoder for good: network inputs through
PyAV's ``timeout`` (FFmpeg's interrupt callback, which their socket reads poll), cameras through
non-blocking reads that the decoder retries up to the timeout (a blocking camera read sits in
the kernel, where no interrupt callback reaches), named pipes through :class:`PipeReader`,
which the decoder keeps open across reopenings.

Example:
    >>> source = parse_source("rtsp://admin:secret@10.0.0.5/cam")
    >>> source.name, source.live, source.options["rtsp_transport"]
    ('rtsp://***@10.0.0.5/cam', True, 'tcp')
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from stream.errors import MediaError, reason
from stream.files import read_list
from stream.media.hwaccel import HWACCELS, resolve
from stream.stopping import POLL

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "srt", "udp", "tcp")
# user:password@ (or user@) right after "scheme://", up to the last "@" before the path (a
# password may hold "@", "?", "#" or spaces; erring towards hiding too much); and secrets in
# query parameters.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/]*@")
_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&](?:password|passwd|pwd|pass|token|access_token|key|apikey|api_key|secret|"
    r"auth|signature|sig)=)[^&#\s]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


@dataclass(frozen=True)
class SourceOptions:
    """How sources are opened; every field has a default that suits most users.

    Attributes:
        timeout: seconds to wait for a network source to open and for each read before
            giving up (then reconnecting, for live sources).
        rtsp_transport: "tcp" (default: no packet loss, passes NAT) or "udp".
        camera_fps: frame rate asked of a webcam (None: the camera's default).
        camera_size: (width, height) asked of a webcam (None: the camera's default).
        hwaccel: decoding of files and network streams on a hardware decoder: one of
            :data:`stream.media.hwaccel.HWACCELS` (default "none": software).
        realtime: play video files at their own speed, as a camera sends its frames: a file
            becomes a live source, whose frames are dropped when the captioner falls behind
            (for demos and load tests; default: files are read as fast as they are captioned).
    """

    timeout: float = 5.0
    rtsp_transport: str = "tcp"
    camera_fps: float | None = None
    camera_size: tuple[int, int] | None = None
    hwaccel: str = "none"
    realtime: bool = False

    def __post_init__(self) -> None:
        if self.hwaccel not in HWACCELS:
            raise ValueError(f"hwaccel must be one of {', '.join(HWACCELS)}, got "
                             f"{self.hwaccel!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp transport must be tcp or udp, got {self.rtsp_transport!r}")
        if self.camera_fps is not None and not self.camera_fps > 0:
            raise ValueError(f"camera fps must be positive, got {self.camera_fps}")
        if self.camera_size is not None and min(self.camera_size) <= 0:
            raise ValueError(f"camera size must be positive, got {self.camera_size}")


@dataclass(frozen=True)
class Source:
    """A parsed source, ready for :func:`open_source`.

    Attributes:
        kind: "file", "image", "webcam", "rtsp", "network" (HTTP(S), HLS and other URLs),
            "lavfi" or "pipe" (a named pipe or character device).
        url: what PyAV opens (may hold credentials: never print it; print ``name``).
        name: the source for people: the URL with credentials replaced by ``***``.
        format: the FFmpeg input format to force (v4l2, lavfi, ...) or None to probe.
        options: FFmpeg options for opening.
        live: frames arrive in real time and are dropped when the pipeline falls behind;
            None: decided once opened (a network input without a duration is live).
        timeout: (open, read) timeout in seconds, for inputs that can stall.
        hwaccel: the hardware decoding asked for (see :mod:`stream.media.hwaccel`); cameras,
            filter graphs and still images always decode in software.
        paced: a file played in real time (``SourceOptions.realtime``): its frames are released
            at their timestamps from ``start`` seconds on.
        start: seconds into a file where captioning starts (seeking to the key frame before
            it; a paced file plays from there, a resumed stream goes on from there).
    """

    kind: str
    url: str = field(repr=False)
    name: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    live: bool | None = False
    timeout: tuple[float, float] | None = None
    hwaccel: str = "none"
    paced: bool = False
    start: float = 0.0

    @property
    def read_timeout(self) -> float:
        """Seconds a read may wait for data (the default of :class:`SourceOptions` when the
        source has no timeout of its own)."""
        return self.timeout[1] if self.timeout else SourceOptions.timeout


def redact(text: str) -> str:
    """Replace the credentials of every URL in ``text`` with ``***`` (and escape control
    characters): the form of a source that may be shown or written anywhere.

    Example:
        >>> redact("cannot open rtsp://bob:pw@cam/live")
        'cannot open rtsp://***@cam/live'
    """
    # Control characters (newlines, terminal escapes) are shown escaped: one line, inert.
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return _SECRET_PARAMS.sub(r"\g<key>***", _CREDENTIALS.sub(r"\g<scheme>***@", text))


def expand_source_lists(specs: Sequence[str]) -> list[str]:
    """``specs`` with every ``@FILE`` replaced by the sources its lines name (one per line,
    ``#`` comment lines and empty lines skipped). A relative file path in a list is taken from
    the list's own directory.

    Raises:
        MediaError: a list cannot be read, or names no source.
    """
    expanded: list[str] = []
    for spec in specs:
        if not spec.startswith("@"):
            expanded.append(spec)
            continue
        path = Path(spec[1:]).expanduser()
        try:
            entries = read_list(path)
        except OSError as error:
            raise MediaError(f"{spec}: cannot read the source list ({reason(error)})") from error
        if not entries:
            raise MediaError(f"{spec}: the source list names no source")
        expanded += [_from_list_dir(entry, path.parent) for entry in entries]
    return expanded


def _from_list_dir(entry: str, base: Path) -> str:
    lowered = entry.lower()
    if "://" in entry or lowered.startswith(("lavfi:", "webcam", "~")):
        return entry
    return str(base / entry)  # an absolute path stays as it is


def parse_source(
    spec: str, options: SourceOptions | None = None, platform: str = sys.platform
) -> Source:
    """Map a user's source string to a :class:`Source` (see the module docstring for forms).

    Raises:
        MediaError: the string names no source this runtime knows (a missing file, an empty
            string, a malformed webcam or lavfi spec).
    """
    options = options or SourceOptions()
    text = spec.strip()
    if not text:
        raise MediaError("empty source string")
    lowered = text.lower()
    if lowered == "webcam" or lowered.startswith("webcam:") or _is_v4l2_path(text):
        return _webcam(text, options, platform)
    if lowered.startswith("lavfi:"):
        graph = text[len("lavfi:"):]
        if not graph:
            raise MediaError(f"{redact(text)}: empty lavfi filter graph")
        return Source(kind="lavfi", url=graph, name=redact(text), format="lavfi",
                      live="realtime" in graph)
    scheme = lowered.split("://", 1)[0] if "://" in lowered else ""
    if scheme in ("rtsp", "rtsps"):
        micros = str(int(options.timeout * 1_000_000))
        return Source(kind="rtsp", url=text, name=redact(text), live=True,
                      hwaccel=options.hwaccel,
                      options={"rtsp_transport": options.rtsp_transport,
                               "timeout": micros,  # socket timeout, in microseconds
                               "probesize": "32", "analyzeduration": "0"},
                      timeout=(options.timeout, options.timeout))
    if scheme in _NETWORK_SCHEMES:
        return Source(kind="network", url=text, name=redact(text), live=None,
                      timeout=(options.timeout, options.timeout), hwaccel=options.hwaccel)
    if scheme == "file":
        text = text[len("file://"):]
    elif scheme:
        raise MediaError(f"{redact(text)}: unknown URL scheme {scheme!r}")
    path = Path(text).expanduser()
    if not path.exists():
        raise MediaError(f"{redact(text)}: no such file")
    if path.is_dir():
        raise MediaError(f"{redact(text)}: is a directory, not a video")
    if path.is_fifo() or path.is_char_device():
        # Probing reads up to 1 MB, enough to reach a keyframe when it starts mid-stream (after
        # a stall; 32 bytes gave 0x0 video there), but stops as soon as the stream's
        # parameters are known: no frame-rate analysis, and an analysis duration of 1 us (0
        # would mean FFmpeg's default of 5 s). Measured: first frame 0.21 s after the writer
        # started, as with a 32-byte probe, against 2.2 s with the default analysis.
        return Source(kind="pipe", url=str(path), name=redact(str(path)), live=True,
                      options={"probesize": "1000000", "analyzeduration": "1",
                               "fpsprobesize": "0"},
                      timeout=(options.timeout, options.timeout), hwaccel=options.hwaccel)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Source(kind="image", url=str(path), name=redact(str(path)))
    return Source(kind="file", url=str(path), name=redact(str(path)), hwaccel=options.hwaccel,
                  live=options.realtime, paced=options.realtime)


def _is_v4l2_path(text: str) -> bool:
    return re.fullmatch(r"/dev/video\d+", text) is not None


def _webcam(text: str, options: SourceOptions, platform: str) -> Source:
    system = "win32" if platform.startswith("win") else platform
    camera_format = _CAMERA_FORMATS.get(system)
    if camera_format is None:
        raise MediaError(f"{redact(text)}: webcams are not supported on {platform}")
    if _is_v4l2_path(text):
        if camera_format != "v4l2":
            raise MediaError(f"{redact(text)}: /dev/video devices exist only on Linux")
        device = text
    else:
        which = text.split(":", 1)[1] if ":" in text else "0"
        if not which:
            raise MediaError(f"{redact(text)}: say which webcam, e.g. webcam:0")
        if camera_format == "dshow":
            device = f"video={_dshow_name(which) if which.isdigit() else which}"
        elif not which.isdigit():
            raise MediaError(f"{redact(text)}: a webcam is chosen by number here, e.g. webcam:0")
        elif camera_format == "v4l2":
            device = f"/dev/video{which}"
        else:
            device = f"{which}:none"  # avfoundation: video device N, no audio
    # Non-blocking reads (v4l2, avfoundation and dshow all honour it): a camera that stalls
    # gives EAGAIN, which the decoder retries until the read timeout.
    opts: dict[str, str] = {"fflags": "nonblock"}
    if options.camera_fps is not None:
        opts["framerate"] = f"{options.camera_fps:g}"
    if options.camera_size is not None:
        opts["video_size"] = f"{options.camera_size[0]}x{options.camera_size[1]}"
    return Source(kind="webcam", url=device, name=redact(text), format=camera_format, options=opts,
                  live=True, timeout=(options.timeout, options.timeout))


def _dshow_name(number: str) -> str:
    cameras = list_devices("dshow")
    index = int(number)
    if index >= len(cameras):
        raise MediaError(f"webcam:{number}: found {len(cameras)} DirectShow camera(s)")
    return cameras[index]


def list_devices(camera_format: str | None = None) -> list[str]:
    """Names of the capture devices FFmpeg finds for this platform's camera input format."""
    system = "win32" if sys.platform.startswith("win") else sys.platform
    camera_format = camera_format or _CAMERA_FORMATS.get(system)
    if camera_format is None:
        return []
    try:
        found = av.enumerate_input_devices(camera_format)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"cannot list {camera_format} devices ({error})") from error
    return [str(d) for d in found]


def open_pipe(source: Source, stop: threading.Event | None = None) -> PipeReader:
    """The reader of a named-pipe source, or :class:`MediaError` naming it."""
    try:
        return PipeReader(source.url, source.read_timeout, stop)
    except OSError as error:
        raise MediaError(f"{source.name}: cannot open ({redact(reason(error))})") from error


@contextlib.contextmanager
def open_source(
    source: Source, stop: threading.Event | None = None, pipe: PipeReader | None = None
) -> Iterator[av.container.InputContainer]:
    """Open ``source`` with PyAV (a context manager), raising :class:`MediaError` with a
    one-line reason that names the source by its redacted name, never its URL.

    A named pipe is read through ``pipe`` when given: the caller keeps it open across
    reopenings, so that the writer never finds the pipe without a reader (it would die of
    SIGPIPE) and no byte in the pipe is lost. Otherwise it gets a reader of its own, closed
    with the container. ``stop`` makes a pipe's waiting reads end at once (an end of stream).
    """
    with contextlib.ExitStack() as own:
        if source.kind == "pipe" and pipe is None:
            pipe = own.enter_context(open_pipe(source, stop))
        try:
            accel = resolve(source.hwaccel)
            if pipe is not None:
                container = av.open(pipe, "r", format=source.format,
                                    options=dict(source.options), hwaccel=accel)
            else:
                container = av.open(source.url, "r", format=source.format,
                                    options=dict(source.options), timeout=source.timeout,
                                    hwaccel=accel)
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"{source.name}: cannot open ({redact(reason(error))})") from error
        with container:
            yield container


class PipeReader(io.RawIOBase):
    """A named pipe read without blocking for good: a read that gets no byte for ``timeout``
    seconds raises :class:`TimeoutError` (then a live source is reconnected).

    FFmpeg reads a pipe with a blocking ``read()`` in the kernel, which its interrupt callback
    (PyAV's ``timeout``) never reaches: a producer that pauses would hold the decoder forever.
    Here the pipe is opened non-blocking (opening does not wait for a writer) and each read
    waits in ``poll`` in short slices, watching ``stop``. Until the first byte arrives, "no
    writer" means "not yet" (the producer may start after the reader); after it, the writer
    closing the pipe is its end.
    """

    def __init__(self, path: str, timeout: float, stop: threading.Event | None = None) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._poll = select.poll()  # not select(): it refuses descriptors from 1024 on
        self._poll.register(self._fd, select.POLLIN)
        self._received = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set():
            try:
                data: bytes | None = os.read(self._fd, len(buffer))
            except BlockingIOError:  # a writer, with nothing written yet
                data = None
            if data or (data == b"" and self._received):
                self._received = True
                buffer[: len(data)] = data
                return len(data)  # 0: the writer closed the pipe
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no data for {self.timeout:g} s")
            if data is None:
                self._poll.poll(min(remaining, POLL) * 1000)
            else:  # no writer yet: poll would return at once
                self.stop.wait(min(remaining, POLL))
        return 0  # stopping: an end of stream

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def stream_ids(specs: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """A short, unique, file-name-safe id per source string, free of credentials, unique
    among themselves and against the ids ``taken`` already.

    Files give their stem, network sources their host and path, cameras ``webcam0``...

    Example:
        >>> stream_ids(["a/cam.mp4", "b/cam.mp4", "rtsp://u:p@10.0.0.5/live", "webcam"])
        ['cam', 'cam-2', '10.0.0.5-live', 'webcam0']
        >>> stream_ids(["c/cam.mp4"], taken=["cam", "cam-2"])
        ['cam-3']
    """
    ids: list[str] = []
    used = [i.lower() for i in taken]  # case-insensitive file systems
    for spec in specs:
        text = spec.strip()
        lowered = text.lower()
        if lowered.startswith("lavfi:"):
            base = "lavfi"
        elif lowered == "webcam" or lowered.startswith("webcam:"):
            base = "webcam" + (text.split(":", 1)[1] if ":" in text else "0")
        elif "://" in text:
            rest = _CREDENTIALS.sub(r"\g<scheme>", text).split("://", 1)[1]
            host, _, path = rest.partition("/")
            base = "-".join(p for p in (host.split(":")[0], path.split("?")[0]) if p)
        else:
            base = Path(text).stem or "source"
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")[:64] or "source"
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}-{n}"
        ids.append(name)
        used.append(name.lower())
    return ids


def parse_sources(
    specs: Sequence[str], options: SourceOptions | None = None,
    ids: Sequence[str] | None = None,
) -> dict[str, Source | MediaError]:
    """Parse source strings under unique stream ids (``ids``, or made by :func:`stream_ids`);
    a bad string maps to its error."""
    parsed: dict[str, Source | MediaError] = {}
    for stream, spec in zip(stream_ids(specs) if ids is None else ids, specs, strict=True):
        try:
            parsed[stream] = parse_source(spec, options)
        except MediaError as error:
            parsed[stream] = error
    return parsed
