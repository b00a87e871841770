"""The encoder's precision: which CPUs count as having int8 dot products, what auto, fp32 and
int8 choose, and the one-line errors where int8 cannot run."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stream.errors import BundleError, DeviceError
from stream.model import sessions
from stream.model.bundle import INT8_ROLE, choose_precision, open_bundle, read_bundle
from stream.model.sessions import SessionSettings, cpu_flags, int8_instructions
from tests.tools.commands import ROOT, run_stream

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
VNNI = {"avx2", "avx512f", "avx512_vnni"}
AVX2 = {"avx2", "fma"}


@pytest.mark.parametrize(("flags", "expected"), [
    (set(), None),  # nothing known (no /proc/cpuinfo)
    (AVX2, None),  # an AVX2-only CPU
    ({"avx2", "avx512f"}, None),  # AVX-512 without VNNI
    ({"avx2", "avx_vnni"}, "AVX-VNNI"),  # e.g. Alder Lake
    (VNNI, "AVX512-VNNI"),  # e.g. Cascade Lake, Zen 4
    ({*VNNI, "amx_tile", "amx_int8"}, "AMX"),  # Sapphire Rapids: AMX named first
])
def test_int8_instructions_from_cpu_flags(flags, expected):
    assert int8_instructions(flags) == expected


def test_this_machines_flags_are_read():
    assert isinstance(cpu_flags(), frozenset)
    assert int8_instructions() == int8_instructions(cpu_flags())


def test_an_unknown_precision_is_refused_in_one_line():
    with pytest.raises(DeviceError, match="unknown precision 'int4'"):
        SessionSettings(precision="int4")


def _with(bundle, share):
    """``bundle`` with its recorded int8 agreement set to ``share`` (None: not measured)."""
    record = dict(bundle.precision["int8"])
    if share is None:
        record.pop("agreement", None)
    else:
        record["agreement"] = {**record.get("agreement", {}), "identical_share": share}
    return replace(bundle, precision={**bundle.precision, "int8": record})


@pytest.fixture(scope="module")
def int8(tiny_int8_bundle):
    return read_bundle(tiny_int8_bundle)


@pytest.fixture(scope="module")
def plain(tiny_bundle):
    return read_bundle(tiny_bundle)


@pytest.mark.parametrize(("asked", "has_int8", "share", "providers", "flags", "expected"), [
    ("auto", True, 0.995, CPU, VNNI, ("int8", "CPU has AVX512-VNNI")),
    ("auto", True, 0.995, CPU, {"amx_int8"}, ("int8", "CPU has AMX")),
    ("auto", True, 0.995, CPU, AVX2, ("fp32", "no VNNI/AMX")),  # int8 gains little there
    ("auto", True, 0.995, CUDA, VNNI, ("fp32", "the model runs with CUDAExecutionProvider")),
    ("auto", True, 0.98, CPU, VNNI, ("fp32", "CPU has AVX512-VNNI, but the int8 encoder's "
                                             "captions agree with fp32 on 98.00% of frames, "
                                             "below 99%")),
    ("auto", True, None, CPU, VNNI, ("fp32", "CPU has AVX512-VNNI, but the int8 encoder's "
                                             "caption agreement with fp32 is not recorded")),
    ("auto", False, None, CPU, VNNI, ("fp32", "the bundle has no int8 encoder")),
    ("fp32", True, 0.995, CPU, VNNI, ("fp32", "asked for")),
    ("int8", True, 0.5, CPU, AVX2, ("int8", "asked for")),  # asked for: no gate
])
def test_choose_precision(int8, plain, asked, has_int8, share, providers, flags, expected):
    bundle = _with(int8, share) if has_int8 else plain
    assert choose_precision(bundle, SessionSettings(precision=asked), providers,
                            flags) == expected


@pytest.mark.parametrize(("has_int8", "providers", "message"), [
    (False, CPU, "precision int8: the bundle has no int8 encoder (add one with python -m "
                 "export.quantize)"),
    (True, CUDA, "precision int8 runs on the CPU only, not with CUDAExecutionProvider"),
])
def test_int8_where_it_cannot_run_is_one_line_naming_the_bundle(int8, plain, has_int8,
                                                                 providers, message):
    bundle = int8 if has_int8 else plain
    with pytest.raises(BundleError) as raised:
        choose_precision(bundle, SessionSettings(precision="int8"), providers, VNNI)
    text = str(raised.value)
    assert text.startswith(f"{bundle.path}: ") and message in text and "\n" not in text


@pytest.fixture
def agreed(tiny_int8_bundle, tmp_path):
    """A copy of the int8 bundle whose recorded agreement passes the gate."""
    out = tmp_path / "agreed"
    shutil.copytree(tiny_int8_bundle, out)
    _with(read_bundle(out), 1.0).write()  # bundle.json is not among the checksummed files
    return out


@pytest.mark.parametrize(("flags", "precision", "line"), [
    (VNNI, "int8", "encoder: int8 (CPU has AVX512-VNNI)"),
    (AVX2, "fp32", "encoder: fp32 (no VNNI/AMX)"),
])
def test_open_bundle_runs_the_chosen_encoder_as_the_encoder_and_says_so(
        agreed, monkeypatch, caplog, flags, precision, line):
    monkeypatch.setattr(sessions, "cpu_flags", lambda: frozenset(flags))
    with caplog.at_level(logging.INFO, logger="stream.model.bundle"):
        loaded = open_bundle(agreed, SessionSettings(device="cpu"))
    assert loaded.precision == precision
    assert [r.getMessage() for r in caplog.records if r.name == "stream.model.bundle"] == [line]
    assert set(loaded.sessions) == {"encoder", "memory", "captioner"}
    file = loaded.bundle.graphs[INT8_ROLE if precision == "int8" else "encoder"].file
    direct = sessions.create_session(agreed / file, SessionSettings(device="cpu"), CPU)
    shape = loaded.bundle.graphs["encoder"].input("frames").concrete(2)
    frames = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    np.testing.assert_array_equal(loaded.sessions["encoder"].run(None, {"frames": frames})[0],
                                  direct.run(None, {"frames": frames})[0])


def test_a_bundle_without_the_int8_encoder_still_loads(tiny_bundle, monkeypatch):
    monkeypatch.setattr(sessions, "cpu_flags", lambda: frozenset(VNNI))
    loaded = open_bundle(tiny_bundle, SessionSettings(device="cpu"))
    assert loaded.precision == "fp32" and INT8_ROLE not in loaded.bundle.graphs
    assert open_bundle(tiny_bundle, SessionSettings(device="cpu", precision="fp32")).precision \
        == "fp32"


def test_run_stream_precision_int8_without_the_graph_exits_3_in_one_line(tiny_bundle):
    sample = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"
    result = run_stream(str(sample), "--model", str(tiny_bundle), "--precision", "int8",
                        "--device", "cpu", "--quiet", timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tiny_bundle) in lines[0] and "no int8 encoder" in lines[0]
