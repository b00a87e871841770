"""CUDA's libraries are loaded before any CUDA session, and each reason CUDA cannot run is one
line that names it: simulated through stream.cuda's seams (the loader, the library search,
the driver query), since this machine has no GPU."""

from __future__ import annotations

import ctypes

import onnxruntime as ort
import pytest

from stream import cuda
from stream.errors import DeviceError
from stream.model import sessions
from stream.model.sessions import SessionSettings, choose_providers, create_session

NEEDED = "13.0"
ORT_NEEDS = f"ONNX Runtime {ort.__version__} needs"


def loader(missing: set[str]):
    """A dlopen that fails for the names in ``missing`` and loads nothing for real."""
    def load(name: str) -> ctypes.CDLL:
        if name in missing:
            raise OSError(f"{name}: cannot open shared object file")
        return object()  # type: ignore[return-value]
    return load


def driver(version: int = 13000, init_result: int = 0, devices: int = 1):
    return lambda library: cuda.Driver(version, init_result, devices)


def diagnose(missing=(), found=None, **driver_kwargs) -> cuda.Problem:
    return cuda.diagnose(load=loader(set(missing)), find=lambda stem: (found or {}).get(stem),
                         driver=driver(**driver_kwargs), cuda_version=NEEDED)


def test_no_driver_is_named():
    problem = diagnose(missing={cuda.DRIVER_LIBRARY})
    assert str(problem) == (f"no NVIDIA driver ({cuda.DRIVER_LIBRARY} cannot be loaded): "
                            f"install the NVIDIA driver, or use --device cpu")


@pytest.mark.parametrize("init_result, devices", [(100, 0), (0, 0)])
def test_no_gpu_is_named(init_result, devices):
    problem = diagnose(init_result=init_result, devices=devices)
    assert problem.cause == "no GPU (the NVIDIA driver finds no CUDA device)"


def test_a_driver_that_cannot_start_gives_its_error_code():
    assert "cuInit error 999" in diagnose(init_result=999).cause


def test_an_old_driver_is_a_version_mismatch():
    problem = diagnose(version=12040)
    assert str(problem) == (f"version mismatch: the NVIDIA driver supports CUDA 12.4, "
                            f"{ORT_NEEDS} CUDA 13.0: update the NVIDIA driver")


def test_missing_libraries_give_the_install_command():
    problem = diagnose(missing={"libcublasLt.so.13", "libcudnn.so.9"})
    assert str(problem) == ("CUDA libraries missing (libcublasLt.so.13, libcudnn.so.9): "
                            "pip install 'lrcn-stream[gpu]'")


def test_libraries_of_another_cuda_are_a_version_mismatch():
    problem = diagnose(missing={"libcublas.so.13"}, found={"cublas": "libcublas.so.12"})
    assert str(problem) == (f"version mismatch: found libcublas.so.12, {ORT_NEEDS} "
                            f"libcublas.so.13 (CUDA 13.0): pip install 'lrcn-stream[gpu]'")


def test_everything_loading_points_at_onnx_runtimes_own_message():
    assert "--log-level debug" in str(diagnose())


def test_this_machine_is_diagnosed_for_real():
    """Whatever this machine lacks, the real loader names one cause in one line."""
    problem = cuda.diagnose()
    assert "\n" not in str(problem) and problem.cause and problem.fix
    assert cuda.required_libraries("13.0")[0] == "libcudart.so.13"


@pytest.fixture
def fresh_choice():
    """Forget which providers work and what was preloaded, for one test."""
    for cached in (sessions._working_provider, sessions._cuda_problem, cuda.prepare):
        cached.cache_clear()
    yield
    for cached in (sessions._working_provider, sessions._cuda_problem, cuda.prepare):
        cached.cache_clear()


@pytest.mark.parametrize("device", ["auto", "cuda", "tensorrt"])
def test_cuda_libraries_are_preloaded_before_the_first_gpu_session(
        tiny_bundle, fresh_choice, monkeypatch, device):
    calls: list[str] = []
    real_session = ort.InferenceSession

    def preload(*args, **kwargs):
        calls.append("preload")
        print("Failed to load libcublasLt.so.13: not here")  # kept out of the terminal

    asked: list = []

    def session(path, options=None, providers=None, **kwargs):
        asked.extend(providers or [])
        names = [p if isinstance(p, str) else p[0] for p in providers or []]
        calls.append("session " + ",".join(names))
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "preload_dlls", preload)
    monkeypatch.setattr(ort, "InferenceSession", session)
    try:
        choose_providers(SessionSettings(device=device), tiny_bundle / "captioner.onnx")
    except DeviceError:
        pass  # no GPU here: what matters is the order
    gpu_sessions = [i for i, c in enumerate(calls) if "CUDA" in c or "Tensorrt" in c]
    assert calls[0] == "preload" and gpu_sessions and min(gpu_sessions) > 0
    assert calls.count("preload") == 1
    assert cuda.prepare() == ("Failed to load libcublasLt.so.13: not here",)
    # cuDNN picks convolutions by heuristic: an exhaustive search per new batch shape cost
    # minutes on an H200 (README, "GPU")
    if device != "tensorrt":  # the TensorRT probe asks for TensorRT alone
        assert ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}) in asked


def test_the_cpu_needs_no_cuda_libraries(tiny_bundle, fresh_choice, monkeypatch):
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: pytest.fail("preloaded for cpu"))
    settings = SessionSettings(device="cpu")
    providers = choose_providers(settings, tiny_bundle / "captioner.onnx")
    create_session(tiny_bundle / "encoder.onnx", settings, providers)


def test_explicit_cuda_error_names_the_simulated_cause(tiny_bundle, fresh_choice, monkeypatch):
    """With the driver and GPU simulated present, a missing cuBLAS is the error's cause."""
    problem = diagnose(missing={"libcublas.so.13"})
    monkeypatch.setattr(cuda, "diagnose", lambda: problem)
    monkeypatch.setattr(sessions, "_working_provider", lambda device, probe: None)
    with pytest.raises(DeviceError, match=r"^device cuda: CUDA libraries missing "
                                          r"\(libcublas.so.13\): pip install"):
        choose_providers(SessionSettings(device="cuda"), tiny_bundle / "captioner.onnx")
