"""Bundle validation: every kind of damage is refused with one line naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from stream.errors import BundleError
from stream.model.bundle import open_bundle, read_bundle, record_evaluation, sha256_file
from stream.model.captioning import CaptionCore
from stream.model.sessions import SessionSettings

CPU = SessionSettings(device="cpu")


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle, free to damage."""
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def _edit(bundle, change):
    file = bundle / "bundle.json"
    manifest = json.loads(file.read_text())
    change(manifest)
    file.write_text(json.dumps(manifest))


def _tensor(manifest, graph, kind, name):
    return next(t for t in manifest["graphs"][graph][kind] if t["name"] == name)


def _rehash(manifest, bundle, name):
    manifest["files"][name]["sha256"] = sha256_file(bundle / name)


def _missing_file(bundle):
    (bundle / "memory.onnx").unlink()


def _edited_bytes(bundle):
    data = bytearray((bundle / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    (bundle / "encoder.onnx").write_bytes(bytes(data))


def _garbage_onnx_with_matching_checksum(bundle):
    (bundle / "captioner.onnx").write_bytes(b"not a protobuf" * 100)
    _edit(bundle, lambda m: _rehash(m, bundle, "captioner.onnx"))


def _wrong_input_shape(bundle):
    _edit(bundle, lambda m: _tensor(m, "encoder", "inputs", "frames").update(
        shape=["batch", 96, 96, 3]))


def _wrong_state_shape_on_both_sides(bundle):
    def change(m):
        _tensor(m, "memory", "inputs", "h")["shape"] = [2, "batch", 65]
        _tensor(m, "memory", "outputs", "h_out")["shape"] = [2, "batch", 65]
    _edit(bundle, change)


def _vocabulary_larger_than_the_captioner(bundle):
    _edit(bundle, lambda m: m["vocabulary"]["tokens"].append("zebra"))


def _vocabulary_and_manifest_agree_but_not_the_graph(bundle):
    def change(m):
        m["vocabulary"]["tokens"].append("zebra")
        logp = _tensor(m, "captioner", "outputs", "logp")
        logp["shape"] = ["batch", logp["shape"][1] + 1]
    _edit(bundle, change)


def _future_format(bundle):
    _edit(bundle, lambda m: m.update(format=99))


def _old_format(bundle):
    _edit(bundle, lambda m: m.update(format=2))  # one memory call per frame: re-export


def _missing_field(bundle):
    _edit(bundle, lambda m: m.pop("sample_fps"))


def _wrong_typed_field(bundle):
    _edit(bundle, lambda m: m["model"].update(input_size="64"))


def _boolean_where_a_number_belongs(bundle):
    _edit(bundle, lambda m: m.update(max_caption_len=True))


def _not_json(bundle):
    (bundle / "bundle.json").write_text("{ truncated")


def _no_manifest(bundle):
    (bundle / "bundle.json").unlink()


def _file_outside_the_bundle(bundle):
    _edit(bundle, lambda m: m["files"].update({"../escape.onnx": {"sha256": "0" * 64}}))


def _renamed_graph_output(bundle):
    _edit(bundle, lambda m: _tensor(m, "captioner", "outputs", "logp").update(name="probs"))


CASES = [
    # (damage, the file the message must name, words it must contain)
    (_missing_file, "memory.onnx", "missing"),
    (_edited_bytes, "encoder.onnx", "sha256"),
    (_garbage_onnx_with_matching_checksum, "captioner.onnx", "not a loadable ONNX graph"),
    (_wrong_input_shape, "bundle.json", "frames"),
    (_wrong_state_shape_on_both_sides, "memory.onnx", "'h'"),
    (_vocabulary_larger_than_the_captioner, "bundle.json", "vocabulary has"),
    (_vocabulary_and_manifest_agree_but_not_the_graph, "captioner.onnx", "'logp'"),
    (_future_format, "bundle.json", "newer"),
    (_old_format, "bundle.json", "older than this runtime reads (3: a stream's frames in one "
                                 "memory call); export it again with python -m export"),
    (_missing_field, "bundle.json", "'sample_fps'"),
    (_wrong_typed_field, "bundle.json", "'model.input_size' must be int"),
    (_boolean_where_a_number_belongs, "bundle.json", "'max_caption_len'"),
    (_not_json, "bundle.json", "not valid JSON"),
    (_no_manifest, "bundle.json", "missing"),
    (_file_outside_the_bundle, "bundle.json", "escape.onnx"),
    (_renamed_graph_output, "bundle.json", "outputs"),
]


@pytest.mark.parametrize("damage, file, words", CASES, ids=[c[0].__name__ for c in CASES])
def test_damaged_bundle_is_refused_with_one_line(bundle, damage, file, words):
    damage(bundle)
    with pytest.raises(BundleError) as info:
        open_bundle(bundle, CPU)
    message = str(info.value)
    assert "\n" not in message
    assert file in message and words in message, message


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="absent: model bundle directory not found"):
        read_bundle(tmp_path / "absent")


def test_a_valid_bundle_opens_and_reads(bundle):
    loaded = open_bundle(bundle, CPU)
    assert loaded.providers == ["CPUExecutionProvider"]
    assert loaded.bundle.sample_fps == 5.0 and loaded.bundle.vocab_size > 10
    assert loaded.bundle.detokenize([loaded.bundle.specials["bos"], 5, 2, 6]) == \
        loaded.bundle.tokens[5]
    CaptionCore(loaded)  # the core is built from a validated bundle only


def test_recorded_evaluation_keeps_the_bundle_valid(bundle):
    record_evaluation(bundle, "onnx_core", {"frame_exact_match": 0.5})
    loaded = open_bundle(bundle, CPU)
    assert loaded.bundle.evaluation["onnx_core"] == {"frame_exact_match": 0.5}


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_bundle_json_is_written_by_its_reader_s_owner_and_reads_back_equal(which, bundle,
                                                                           tmp_path):
    """Bundle.to_json writes exactly what read_bundle read (export writes through it too)."""
    from dataclasses import replace

    from stream.paths import DEFAULT_BUNDLE

    source = bundle if which == "tiny" else DEFAULT_BUNDLE
    original = json.loads((source / "bundle.json").read_text())
    parsed = read_bundle(source)
    assert parsed.to_json() == original
    copy = shutil.copytree(source, tmp_path / "copy")
    replace(parsed, path=copy, name="renamed").write()
    again = read_bundle(copy)
    assert again.name == "renamed" and replace(again, path=source, name=parsed.name) == parsed
    open_bundle(copy, CPU)  # still valid: bundle.json is not checksummed
