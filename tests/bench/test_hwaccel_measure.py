"""python -m bench.hwaccel: the model's input through a hardware decoder's download format
against software decoding."""

from __future__ import annotations

import functools
import json

from bench.hwaccel import main
from stream.media import hwaccel
from stream.paths import SAMPLE_VIDEO


def test_nv12_frames_reach_the_model_as_software_decodings_do(tmp_path, capsys):
    """NVDEC hands 8-bit 4:2:0 frames back as NV12: the same samples, converted by the same
    swscale call, give the same pixels (measured on the test split too: README, "GPU")."""
    out = tmp_path / "nv12.json"
    assert main(["--simulate", "nv12", str(SAMPLE_VIDEO), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["frames"] == 89 and summary["identical_frames"] == 89
    assert summary["max_abs"] == 0
    assert "89 identical" in capsys.readouterr().out


def test_a_10_bit_download_format_is_measured_not_assumed(tmp_path):
    out = tmp_path / "p010.json"
    assert main(["--simulate", "p010le", str(SAMPLE_VIDEO), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["frames"] == 89 and summary["max_abs"] == 0  # 8-bit samples, scaled exactly


def test_without_a_hardware_decoder_it_says_so_in_one_line(capsys, monkeypatch):
    hwaccel.resolve.cache_clear()
    if hwaccel.resolve("cuda") is not None:  # a GPU machine: hidden, so that this never skips
        monkeypatch.setattr(hwaccel, "device_problem",
                            functools.cache(lambda device_type: "hidden by the test"))
        hwaccel.resolve.cache_clear()
    assert main(["--hwaccel", "cuda", str(SAMPLE_VIDEO)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: hwaccel cuda: no hardware decoder works here")
