"""Recovering a checkpoint from its bundle: the same weights (float16-rounded where the bundle
stored them in half), verified by exporting them again."""

from __future__ import annotations

import shutil

import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from export import recover
from export.build import export_bundle
from export.precision import _MIN_ELEMENTS
from lrcn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from lrcn.model import LRCN, LRCNConfig
from lrcn.vocab import Vocabulary
from stream.files import sha256_file
from stream.model.bundle import read_bundle


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny model (random weights: no value is a float16 value by chance) with two
    memory layers, grid cells and the motion stream's size signal and object colour, like the
    shipped model."""
    torch.manual_seed(0)
    vocab = Vocabulary.build(["a red circle moves left", "a blue square grows"])
    config = LRCNConfig(vocab_size=len(vocab), input_size=64, grid=2, feature_dim=32,
                        motion_channels=16, motion_dim=32, motion_stats=True, object_colour=True,
                        memory_layers=2, memory_hidden=64, word_embed=16, word_hidden=48,
                        dropout=0.0, key_every=4, key_threshold=0.1, key_cells=4)
    path = tmp_path_factory.mktemp("recover") / "best.pt"
    save_checkpoint(path, LRCN(config), vocab, provenance={"sample_fps": 5}, epoch=3,
                    elapsed=1.5, metrics={"val_frame_acc": 0.5})
    return path


@pytest.fixture(scope="module")
def bundles(checkpoint):
    return {weights: export_bundle(checkpoint, checkpoint.parent / weights, weights=weights)
            for weights in ("float32", "float16")}


@pytest.mark.parametrize("weights", ["float32", "float16"])
def test_the_recovered_checkpoint_holds_the_exported_weights(checkpoint, bundles, weights,
                                                             tmp_path):
    out = tmp_path / "recovered.pt"
    report = recover.recover_checkpoint(bundles[weights], out, batches=(1, 3))
    assert report.max_diff == {"encoder": 0.0, "memory": 0.0, "captioner": 0.0}
    assert all(report.same_file.values())
    assert report.unused["memory"] == report.unused["captioner"] == 0
    original = read_checkpoint(checkpoint)
    payload = read_checkpoint(out)
    assert payload["config"] == original["config"] and payload["vocab"] == original["vocab"]
    assert payload.keys() == original.keys()
    assert payload["state_dict"].keys() == original["state_dict"].keys()
    rounded = 0
    for key, value in original["state_dict"].items():
        half = weights == "float16" and value.numel() >= _MIN_ELEMENTS
        expected = value.half().float() if half else value
        assert torch.equal(payload["state_dict"][key], expected), key
        rounded += half and not torch.equal(expected, value)
    assert rounded > 10 if weights == "float16" else rounded == 0
    source = payload["provenance"]["recovered_from"]
    assert source["checkpoint_sha256"] == sha256_file(checkpoint)
    assert source["sha256"]["memory.onnx"] == sha256_file(bundles[weights] / "memory.onnx")
    assert payload["provenance"]["sample_fps"] == 5 and payload["epoch"] == 3
    model, _, _ = load_checkpoint(out)  # the format load_checkpoint reads
    assert model.config.memory_layers == 2


def test_a_wrong_gate_order_is_caught_by_the_re_export(bundles, tmp_path, monkeypatch):
    monkeypatch.setattr(recover, "_TORCH_GATES", (0, 1, 2, 3))  # ONNX's order, not PyTorch's
    with pytest.raises(recover.RecoveryError, match="memory.onnx: the re-exported graph differs"):
        recover.recover_checkpoint(bundles["float32"], tmp_path / "recovered.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_command_never_replaces_a_training_checkpoint(checkpoint, bundles, capsys):
    before = sha256_file(checkpoint)
    assert recover.main(["--bundle", str(bundles["float32"]), "--out", str(checkpoint)]) == 1
    err = capsys.readouterr().err.strip()
    assert "best.pt" in err and "not a recovered checkpoint" in err and "\n" not in err
    assert sha256_file(checkpoint) == before


def test_a_missing_bundle_is_one_line_naming_it(tmp_path, capsys):
    assert recover.main(["--bundle", str(tmp_path / "nope"), "--out",
                         str(tmp_path / "r.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err
    assert not (tmp_path / "r.pt").exists()


def test_unnamed_and_transposed_weights_are_found_by_following_the_graph(checkpoint, bundles,
                                                                         tmp_path):
    """The word table gathered by ``token`` under a generated name, and the logits layer as
    x @ W.T + b with W.T unnamed (what the exporter writes for some layers)."""
    bundle = shutil.copytree(bundles["float32"], tmp_path / "b")
    model = onnx.load(str(bundle / "captioner.onnx"))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inits["captioner.embed.weight"].name = "onnx::Gather_900"
    weight = numpy_helper.to_array(inits["captioner.logits.weight"])
    graph.initializer.remove(inits["captioner.logits.weight"])
    graph.initializer.append(numpy_helper.from_array(weight.T.copy(), "onnx::MatMul_901"))
    nodes = []
    for node in graph.node:
        node.input[:] = ["onnx::Gather_900" if i == "captioner.embed.weight" else i
                         for i in node.input]
        if node.op_type == "Gemm":  # the logits: x @ W.T, then + b
            x, _, b = node.input
            nodes += [helper.make_node("MatMul", [x, "onnx::MatMul_901"], ["logits_mm"]),
                      helper.make_node("Add", ["logits_mm", b], list(node.output))]
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(bundle / "captioner.onnx"))
    model, _ = recover._rebuild(read_bundle(bundle))
    found = recover.recover_state_dict(read_bundle(bundle), model)
    expected = read_checkpoint(checkpoint)["state_dict"]
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[k], expected[k]) for k in expected)
