"""Hardware decoding through PyAV's HWAccel (NVDEC with ``cuda``), falling back to software.

``--hwaccel`` is one of :data:`HWACCELS`:

- ``none`` (the default): FFmpeg's software decoders.
- ``cuda``: NVIDIA's decoder. Where it cannot run (no GPU, no driver, an FFmpeg without it) the
  source is decoded in software, said in one warning line per process.
- ``auto``: the first device type FFmpeg has (cuda, videotoolbox, vaapi, d3d11va) that really
  decodes here; otherwise software, said in one info line.

Whether a device really decodes is found once per process and device type, by decoding a tiny
H.264 clip made in memory with the device (PyAV raises at opening when the device cannot be
created, and a decoder without the device's support would silently decode in software). A
source whose codec the device cannot decode (say, MJPEG on NVDEC) is decoded in software, said
in one line for that source.

Decoded frames are downloaded to system memory (NV12 for 8-bit 4:2:0 on NVDEC) and go through
the one conversion path (:func:`stream.media.frames.frame_to_rgb`): the model sees pixels converted
by the same swscale call as in software decoding. How far they differ is measured by
``python -m bench.hwaccel``. The CUDA device is opened on the GPU's primary context, so that
hundreds of streams share one context instead of one each.
"""

from __future__ import annotations

import functools
import io
import logging

import av
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available

from stream.errors import reason

log = logging.getLogger(__name__)

HWACCELS = ("none", "auto", "cuda")
_AUTO_ORDER = ("cuda", "videotoolbox", "vaapi", "d3d11va")
_CUDA_USE_PRIMARY_CONTEXT = 1  # AV_CUDA_USE_PRIMARY_CONTEXT, for av_hwdevice_ctx_create


def make_hwaccel(device_type: str, fallback: bool = True) -> HWAccel:
    """PyAV's settings for decoding on ``device_type`` (CUDA on its primary context)."""
    flags = _CUDA_USE_PRIMARY_CONTEXT if device_type == "cuda" else None
    return HWAccel(device_type=device_type, allow_software_fallback=fallback, flags=flags)


@functools.cache
def _probe_clip() -> bytes:
    """Two 64x64 frames of H.264 in MP4, made in memory (a few milliseconds)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for value in (0, 128):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


@functools.cache
def device_problem(device_type: str) -> str | None:
    """None when ``device_type`` decodes H.264 here, else why not (one line); found once."""
    if device_type not in hwdevices_available():
        return f"this FFmpeg has no {device_type} support"
    try:
        with av.open(io.BytesIO(_probe_clip()), "r",
                     hwaccel=make_hwaccel(device_type, False)) as c:
            stream = c.streams.video[0]
            frames = len(list(c.decode(stream)))
            used = stream.codec_context.is_hwaccel
    except (av.FFmpegError, OSError, RuntimeError) as error:
        if device_type == "cuda":  # FFmpeg says only "Operation not permitted"
            from stream import cuda  # onnxruntime, only where it matters

            return f"{reason(error)}: {cuda.diagnose().cause}"
        return reason(error)
    if not used or frames == 0:
        return "its decoder decoded nothing on the device"
    return None


@functools.cache
def resolve(choice: str) -> HWAccel | None:
    """The HWAccel to open sources with for ``choice`` (see :data:`HWACCELS`), or None for
    software decoding; a fallback is logged once per process and choice."""
    if choice not in HWACCELS:
        raise ValueError(f"unknown hwaccel {choice!r}: choose one of {', '.join(HWACCELS)}")
    if choice == "none":
        return None
    candidates = ("cuda",) if choice == "cuda" else _AUTO_ORDER
    problems = []
    for device_type in candidates:
        if choice == "auto" and device_type not in hwdevices_available():
            continue
        problem = device_problem(device_type)
        if problem is None:
            log.info("hwaccel %s: decoding on %s", choice, device_type)
            return make_hwaccel(device_type)
        problems.append(f"{device_type}: {problem}")
    level = logging.WARNING if choice == "cuda" else logging.INFO
    log.log(level, "hwaccel %s: no hardware decoder works here (%s); decoding in software",
            choice, "; ".join(problems) or "FFmpeg has none of " + ", ".join(_AUTO_ORDER))
    return None


def report_software_fallback(name: str, video: av.VideoStream, choice: str) -> None:
    """Say in one line when ``stream`` of source ``name`` was opened for hardware decoding
    (``choice`` resolved to a device) but its codec is decoded in software."""
    if resolve(choice) is not None and not video.codec_context.is_hwaccel:
        log.info("%s: hwaccel %s cannot decode %s; decoding in software", name, choice,
                 video.codec_context.name)
