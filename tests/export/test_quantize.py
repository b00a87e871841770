"""export.quantize: a bundle's int8 encoder, its interface, its record in bundle.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from export import __main__ as export_cli
from export import quantize
from export.quantize import INT8_FILE, QuantSettings, quantize_bundle
from stream.errors import BundleError
from stream.media.frames import read_sampled_frames
from stream.model.bundle import INT8_ROLE, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings

FP32 = SessionSettings(device="cpu", precision="fp32")
INT8 = SessionSettings(device="cpu", precision="int8")


def _videos(world):
    return sorted(str(v) for v in (world / "videos").glob("*.mp4"))


def test_int8_encoder_keeps_the_encoders_interface_and_is_recorded(tiny_int8_bundle):
    bundle = read_bundle(tiny_int8_bundle)
    check_files(bundle)
    int8, fp32 = bundle.graphs[INT8_ROLE], bundle.graphs["encoder"]
    assert int8.file == INT8_FILE and INT8_FILE in bundle.checksums
    assert (int8.inputs, int8.outputs) == (fp32.inputs, fp32.outputs)
    graph = onnx.load(str(tiny_int8_bundle / INT8_FILE)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    record = bundle.precision["int8"]
    assert record["settings"] == {**QuantSettings().__dict__, "float_ops": []}
    assert len(record["float_nodes"]) == QuantSettings().float_first_convs
    assert record["calibration"]["videos"] == 2 and record["calibration"]["frames"] > 0
    agreement = record["agreement"]
    assert agreement["videos"] == 2 and agreement["frames"] > 20
    assert bundle.int8_agreement == agreement["identical_share"]
    assert 0.0 <= agreement["identical_share"] <= 1.0


def test_int8_encoder_runs_and_stays_near_fp32(tiny_int8_bundle, tiny_world):
    fp32, int8 = open_bundle(tiny_int8_bundle, FP32), open_bundle(tiny_int8_bundle, INT8)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    size = fp32.bundle.input_size
    frames, _ = read_sampled_frames(_videos(tiny_world)[3], fp32.bundle.sample_fps, (size, size))
    a = fp32.sessions["encoder"].run(None, {"frames": frames})[0]
    b = int8.sessions["encoder"].run(None, {"frames": frames})[0]
    assert a.shape == b.shape and b.dtype == np.float32 and np.isfinite(b).all()
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert cosine.mean() > 0.9, cosine


def test_quantizing_in_place_replaces_the_bundle_as_a_set(tiny_bundle, tiny_world, tmp_path):
    """The CLI on an existing bundle; without --agreement nothing says int8 may be used."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    code = quantize.main(["--bundle", str(copy), "--calibration", _videos(tiny_world)[0],
                          "--calibration-frames", "16"])
    assert code == 0
    bundle = read_bundle(copy)
    assert INT8_ROLE in bundle.graphs and bundle.int8_agreement is None
    assert bundle.precision["int8"]["calibration"]["frames"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary left
    assert open_bundle(copy, INT8).precision == "int8"


def test_agreement_videos_must_not_be_calibration_videos(tiny_bundle, tiny_world, tmp_path):
    video = _videos(tiny_world)[0]
    with pytest.raises(BundleError, match="must not be calibration videos") as raised:
        quantize_bundle(tiny_bundle, [video], [video], out=tmp_path / "out")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists() and INT8_ROLE not in read_bundle(tiny_bundle).graphs


def test_export_adds_the_int8_encoder_when_asked(tiny_checkpoint, tiny_world, tmp_path):
    videos = _videos(tiny_world)
    out = tmp_path / "bundle"
    code = export_cli.main(["--checkpoint", str(tiny_checkpoint), "--out", str(out),
                            "--int8-calibration", *videos[:2], "--int8-agreement", videos[2],
                            "--int8-calibration-frames", "32"])
    assert code == 0
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["graphs"][INT8_ROLE]["file"] == INT8_FILE and INT8_FILE in manifest["files"]
    assert manifest["precision"]["int8"]["agreement"]["videos"] == 1
    assert open_bundle(out, INT8).precision == "int8"
