"""Exception types for errors a user can cause; each carries a one-line message naming the input."""

from __future__ import annotations


class StreamError(Exception):
    """Base class of the runtime's user-facing errors."""


class MediaError(StreamError):
    """A media input cannot be opened or decoded (names the input)."""


class BundleError(StreamError):
    """A model bundle is missing, damaged or inconsistent (names the file and the problem)."""


class DeviceError(StreamError):
    """The requested execution device (CUDA, TensorRT) cannot be used."""


def reason(error: BaseException) -> str:
    """The first line of an exception's message (FFmpeg's and the OS's are long): for one-line
    errors that name the input."""
    text = str(getattr(error, "strerror", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
