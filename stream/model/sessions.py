"""ONNX Runtime sessions: which execution provider runs the graphs, and with how many threads.

``device`` is what the user asks for:

- ``cpu``: the CPU provider.
- ``cuda`` / ``tensorrt``: that provider, or a :class:`DeviceError` if it cannot be created.
- ``auto``: CUDA when it really works here, otherwise the CPU, said in one log line.

The onnxruntime-gpu wheel lists CUDA and TensorRT among its available providers even on machines
without a GPU or without the CUDA libraries; asking for them then silently falls back to the
CPU. So a provider counts as working only when a session created with it reports it in
``session.get_providers()``. The answer is found once per process and device and reused.
Before the first CUDA or TensorRT session, pip's CUDA libraries are loaded
(:func:`stream.cuda.prepare`); when the provider still does not work, the error or log line
says why (:func:`stream.cuda.diagnose`: no driver, no GPU, a version mismatch, missing
libraries).

``precision`` chooses the encoder graph of a bundle that also carries an int8 one
(``encoder_int8``, see stream/model/bundle.py): ``fp32``, ``int8``, or ``auto``: int8 on the CPU
provider where the CPU has int8 dot-product instructions (:func:`int8_instructions`: VNNI or
AMX), fp32 elsewhere. On CPUs without them int8 kernels are often no faster and less exact.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from stream import cuda
from stream.errors import DeviceError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PRECISIONS = ("auto", "fp32", "int8")
PRECISION_HELP = ("the encoder's precision: auto runs the bundle's int8 encoder where the model "
                  "runs on a CPU with VNNI or AMX (int8 dot products) and the int8 encoder's "
                  "recorded caption agreement with fp32 is at least 99%%, fp32 elsewhere "
                  "(default: auto)")

# /proc/cpuinfo flags of int8 dot-product instructions, by the name a log line gives them.
_INT8_FLAGS = (("amx_int8", "AMX"), ("amx_tile", "AMX"), ("avx512_vnni", "AVX512-VNNI"),
               ("avx_vnni", "AVX-VNNI"))

_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

# ONNX Runtime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Its messages are kept
# one notch below the user's level: a user at WARNING sees ONNX Runtime's errors, not its
# warnings about node placement.
_SEVERITY = ((logging.DEBUG, 1), (logging.INFO, 2), (logging.WARNING, 3))


def ort_severity(level: int) -> int:
    """ONNX Runtime log severity for a Python logging level."""
    for threshold, severity in _SEVERITY:
        if level <= threshold:
            return severity
    return 4


def default_threads() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SessionSettings:
    """How graphs are run.

    Attributes:
        device: one of :data:`DEVICES`.
        threads: ONNX Runtime intra-op threads; None = every usable core. On a small machine
            leave a core to the decoders (the streaming runtime chooses this).
        spinning: let idle intra-op threads spin (lower latency, but they burn CPU that decoder
            threads need; off by default).
        log_level: the user's Python logging level; ONNX Runtime logs below it.
        precision: one of :data:`PRECISIONS`, the encoder graph to run (see the module's
            docstring).
    """

    device: str = "auto"
    threads: int | None = None
    spinning: bool = False
    log_level: int = logging.WARNING
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise DeviceError(f"unknown device {self.device!r}: choose one of "
                              f"{', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise DeviceError(f"unknown precision {self.precision!r}: choose one of "
                              f"{', '.join(PRECISIONS)}")
        if self.threads is not None and self.threads < 1:
            raise DeviceError(f"threads must be at least 1, got {self.threads}")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:  # no /proc: no flags known, so auto never chooses int8
        return frozenset()
    return frozenset()


def int8_instructions(flags: Iterable[str] | None = None) -> str | None:
    """The CPU's int8 dot-product instructions ("AMX", "AVX512-VNNI" or "AVX-VNNI"), or None.

    ``flags`` are /proc/cpuinfo's (default: this machine's, :func:`cpu_flags`).

    Example:
        >>> int8_instructions({"avx2", "avx512_vnni"})
        'AVX512-VNNI'
    """
    have = set(cpu_flags() if flags is None else flags)
    return next((name for flag, name in _INT8_FLAGS if flag in have), None)


def _options(settings: SessionSettings, severity: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = severity
    options.intra_op_num_threads = settings.threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if settings.spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def _try_session(
    path: Path, settings: SessionSettings, providers: list[str], severity: int
) -> ort.InferenceSession:
    # A provider whose libraries are missing makes ONNX Runtime print an "EP Error" banner to
    # stdout and fall back; the caller reports the outcome in its own words instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return ort.InferenceSession(str(path), _options(settings, severity),
                                    providers=[_with_options(p) for p in providers])


# cuDNN's exhaustive search of convolution algorithms runs again for every new input shape; the
# runtime's batches change size all the time (streams come and go, key frames are few), and on
# an H200 the search made a 150-video caption comparison run past three minutes. The heuristic
# choice costs nothing per shape.
_PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}


def _with_options(provider: str) -> str | tuple[str, dict[str, str]]:
    options = _PROVIDER_OPTIONS.get(provider)
    return (provider, options) if options else provider


@functools.cache
def _working_provider(device: str, probe: Path) -> str | None:
    """The provider for ``device`` if a session on ``probe`` really uses it, else None."""
    wanted = _PROVIDER[device]
    if wanted not in ort.get_available_providers():
        return None
    cuda.prepare()  # pip's CUDA libraries, before any CUDA or TensorRT session exists
    # Loading a provider's libraries logs through ONNX Runtime's process-wide default logger
    # (straight to the C++ stderr); an expected failure here is reported by the caller instead.
    ort.set_default_logger_severity(4)
    try:
        session = _try_session(probe, SessionSettings(device="cpu"),
                               [wanted, "CPUExecutionProvider"], severity=4)
    except Exception:  # noqa: BLE001 - any failure to create the provider means "not here"
        return None
    return wanted if wanted in session.get_providers() else None


def choose_providers(settings: SessionSettings, probe: str | Path) -> list[str]:
    """Execution providers for ``settings.device``, checked by creating a session on ``probe``.

    Raises:
        DeviceError: CUDA or TensorRT was asked for explicitly and cannot be used.
    """
    try:
        return _choose(settings, Path(probe))
    finally:
        ort.set_default_logger_severity(ort_severity(settings.log_level))


def _choose(settings: SessionSettings, probe: Path) -> list[str]:
    device = settings.device
    if device == "cpu":
        return ["CPUExecutionProvider"]
    candidates = ["cuda"] if device == "auto" else [device]
    for candidate in candidates:
        provider = _working_provider(candidate, probe)
        if provider is not None:
            if device == "auto":
                log.info("device auto: using %s", provider)
            fallback = ["CUDAExecutionProvider"] if provider.startswith("Tensorrt") else []
            return [provider, *fallback, "CPUExecutionProvider"]
    if device == "auto":
        log.info("device auto: CUDA is not usable here (%s); using the CPU",
                 _cuda_problem().cause)
        return ["CPUExecutionProvider"]
    raise DeviceError(f"device {device}: {_device_problem(device)}")


def _device_problem(device: str) -> str:
    """Why ``device`` (cuda or tensorrt) cannot run here, in one line."""
    if _PROVIDER[device] not in ort.get_available_providers():
        return (f"this onnxruntime has no {_PROVIDER[device]} (pip uninstall onnxruntime, then "
                f"{cuda.INSTALL})")
    problem = _cuda_problem()
    if device == "tensorrt" and problem.cause.startswith("ONNX Runtime cannot create"):
        return ("CUDA works, but ONNX Runtime cannot create TensorrtExecutionProvider "
                "(TensorRT's libraries, libnvinfer, are missing): use --device cuda")
    return str(problem)


@functools.cache
def _cuda_problem() -> cuda.Problem:
    return cuda.diagnose()


def create_session(
    path: str | Path, settings: SessionSettings, providers: list[str]
) -> ort.InferenceSession:
    """A session for the graph at ``path`` on ``providers`` (see :func:`choose_providers`)."""
    ort.set_default_logger_severity(ort_severity(settings.log_level))
    return _try_session(Path(path), settings, providers, ort_severity(settings.log_level))
