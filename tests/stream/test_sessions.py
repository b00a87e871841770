"""Execution provider choice and fallback, as far as a machine without a GPU can tell."""

from __future__ import annotations

import logging
import shutil

import pytest

from stream import cuda
from stream.errors import DeviceError
from stream.model.sessions import (
    SessionSettings,
    choose_providers,
    create_session,
    default_threads,
    ort_severity,
)

# Whether this machine has an NVIDIA GPU with a driver; the expectations follow from it.
HAS_GPU = shutil.which("nvidia-smi") is not None


@pytest.fixture
def probe(tiny_bundle):
    return tiny_bundle / "captioner.onnx"


def test_cpu_is_plain_cpu(probe):
    assert choose_providers(SessionSettings(device="cpu"), probe) == ["CPUExecutionProvider"]


def test_auto_uses_cuda_only_where_it_really_works_and_says_which(probe, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="stream.model.sessions"):
        providers = choose_providers(SessionSettings(device="auto"), probe)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("device auto: ")
    if HAS_GPU:
        assert providers[0] == "CUDAExecutionProvider"
    else:
        assert providers == ["CPUExecutionProvider"] and "using the CPU" in lines[0]
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "libcu" not in out + err


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_device_fails_clearly_without_a_gpu(probe, device, capfd):
    settings = SessionSettings(device=device)
    if HAS_GPU and device == "cuda":
        assert choose_providers(settings, probe)[0] == "CUDAExecutionProvider"
        return
    if HAS_GPU:  # TensorRT also needs its own libraries; either outcome is legitimate
        try:
            assert choose_providers(settings, probe)[0] == "TensorrtExecutionProvider"
        except DeviceError:
            pass
        return
    with pytest.raises(DeviceError) as raised:
        choose_providers(settings, probe)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"device {device}: ")
    assert message == f"device {device}: {cuda.diagnose()}"  # the cause, found the same way
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Failed to load" not in out + err


@pytest.mark.parametrize("kwargs, words", [
    ({"device": "tpu"}, "unknown device 'tpu'"),  # not a device we know
    ({"threads": 0}, "threads must be at least 1"),  # nonsense thread count
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(DeviceError, match=words):
        SessionSettings(**kwargs)


def test_threads_and_spinning_are_set_explicitly(probe):
    settings = SessionSettings(device="cpu", threads=1)
    session = create_session(probe, settings, ["CPUExecutionProvider"])
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = create_session(probe, SessionSettings(device="cpu"), ["CPUExecutionProvider"])
    assert default.get_session_options().intra_op_num_threads == default_threads()


def test_onnxruntime_logs_below_the_users_level():
    assert ort_severity(logging.DEBUG) < ort_severity(logging.INFO) < \
        ort_severity(logging.WARNING) < ort_severity(logging.ERROR)
    assert ort_severity(logging.WARNING) == 3  # a user at WARNING sees ORT errors only
