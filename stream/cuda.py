"""CUDA for ONNX Runtime: load pip's CUDA libraries, and say in one line why CUDA cannot run.

onnxruntime-gpu's CUDA provider needs the NVIDIA driver (``libcuda.so.1``, from the driver
package, never from pip) and the CUDA runtime, cuBLAS, cuRAND and cuDNN of the CUDA major
version it was built for (13 for onnxruntime-gpu 1.31). ``pip install 'lrcn-stream[gpu]'``
brings the latter as NVIDIA's wheels, under ``site-packages/nvidia``, where the dynamic loader
does not look: :func:`prepare` has ONNX Runtime load them (``onnxruntime.preload_dlls``) before
any CUDA or TensorRT session is created. With PyTorch imported first, its own CUDA libraries
may already be loaded; loading them again is harmless.

When CUDA still cannot be used, :func:`diagnose` finds the first cause, in the order a user
fixes them::

    no driver        libcuda.so.1 cannot be loaded
    no GPU           the driver loads but cuInit finds no device (or cannot start)
    version mismatch the driver supports an older CUDA than ONNX Runtime's, or the CUDA
                     libraries found are of another major version
    libraries        a CUDA library is missing: the message gives the install command
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import io
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import onnxruntime as ort

log = logging.getLogger(__name__)

INSTALL = "pip install 'lrcn-stream[gpu]'"
DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
_NO_DEVICE = 100  # CUDA_ERROR_NO_DEVICE


def built_cuda_version() -> str | None:
    """The CUDA version this onnxruntime-gpu was built for ("13.0"), or None (a CPU build)."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def required_libraries(cuda_version: str) -> tuple[str, ...]:
    """The CUDA libraries the CUDA provider loads (Linux names), for its CUDA version."""
    major = cuda_version.split(".")[0]
    return (f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}",
            "libcurand.so.10", "libcudnn.so.9")


@dataclass(frozen=True)
class Driver:
    """What the NVIDIA driver reports: its CUDA version (13000 = 13.0), cuInit's result and the
    number of GPUs."""

    version: int
    init_result: int
    devices: int


def load_library(name: str) -> ctypes.CDLL:
    """dlopen ``name`` (raises OSError when it cannot be loaded); a seam for tests."""
    return ctypes.CDLL(name)


def find_library(stem: str) -> str | None:
    """The loader's file name of a library ("cublasLt" -> "libcublasLt.so.12"), or None."""
    return ctypes.util.find_library(stem)


def query_driver(library: ctypes.CDLL) -> Driver:
    """Ask the driver API for its version, whether it starts, and how many GPUs it sees."""
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    library.cuDriverGetVersion(ctypes.byref(version))
    result = int(library.cuInit(0))
    if result == 0:
        library.cuDeviceGetCount(ctypes.byref(count))
    return Driver(version=version.value, init_result=result, devices=count.value)


@functools.cache
def prepare() -> tuple[str, ...]:
    """Load pip's CUDA and cuDNN libraries into this process, once, before any CUDA session.

    Returns the lines ONNX Runtime printed while loading (the libraries it could not load),
    kept out of the user's terminal: :func:`diagnose` says what matters in one line.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or built_cuda_version() is None:
        return ()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            preload()
        except Exception as error:  # noqa: BLE001 - a failed preload is diagnosed later
            print(f"preload_dlls failed: {error}")
    lines = tuple(line.strip() for line in printed.getvalue().splitlines() if line.strip())
    for line in lines:
        log.debug("onnxruntime.preload_dlls: %s", line)
    return lines


@dataclass(frozen=True)
class Problem:
    """Why CUDA cannot run here (``cause``) and what to do (``fix``); ``str()`` is one line."""

    cause: str
    fix: str

    def __str__(self) -> str:
        return f"{self.cause}: {self.fix}"


def diagnose(
    load: Callable[[str], ctypes.CDLL] | None = None,
    find: Callable[[str], str | None] | None = None,
    driver: Callable[[ctypes.CDLL], Driver] | None = None,
    cuda_version: str | None = None,
) -> Problem:
    """The first reason CUDA cannot be used here; the arguments replace the loader, the
    library search and the driver query in tests."""
    load, find, driver = load or load_library, find or find_library, driver or query_driver
    needed = cuda_version or built_cuda_version()
    cpu = "use --device cpu"
    if needed is None:
        return Problem("this onnxruntime is a CPU-only build",
                       f"pip uninstall onnxruntime, then {INSTALL}")
    try:
        library = load(DRIVER_LIBRARY)
    except OSError:
        return Problem(f"no NVIDIA driver ({DRIVER_LIBRARY} cannot be loaded)",
                       f"install the NVIDIA driver, or {cpu}")
    try:
        found = driver(library)
    except (OSError, AttributeError) as error:
        return Problem(f"the NVIDIA driver does not answer ({error})", cpu)
    major, minor = (int(part) for part in (needed.split(".") + ["0"])[:2])
    if found.version and found.version < major * 1000 + minor * 10:
        return Problem(f"version mismatch: the NVIDIA driver supports CUDA "
                       f"{_cuda_text(found.version)}, ONNX Runtime {ort.__version__} needs CUDA "
                       f"{needed}", "update the NVIDIA driver")
    if found.init_result == _NO_DEVICE or (found.init_result == 0 and found.devices == 0):
        return Problem("no GPU (the NVIDIA driver finds no CUDA device)", cpu)
    if found.init_result != 0:
        return Problem(f"the NVIDIA driver cannot start CUDA (cuInit error {found.init_result})",
                       cpu)
    if sys.platform != "linux":
        return Problem("ONNX Runtime cannot create its CUDA provider", f"check {INSTALL}")
    missing = []
    for name in required_libraries(needed):
        try:
            load(name)
        except OSError:
            missing.append(name)
    if not missing:
        return Problem("ONNX Runtime cannot create its CUDA provider although the driver and "
                       "the CUDA libraries load", "run with --log-level debug for its message")
    other = [(name, find(name[3:].split(".so")[0])) for name in missing]
    mismatched = [(name, got) for name, got in other if got and got != name]
    if mismatched:
        name, got = mismatched[0]
        return Problem(f"version mismatch: found {got}, ONNX Runtime {ort.__version__} needs "
                       f"{name} (CUDA {needed})", INSTALL)
    return Problem(f"CUDA libraries missing ({', '.join(missing)})", INSTALL)


def _cuda_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"
