"""``python -m export.recover``: rebuild the training checkpoint a bundle was exported from.

    python -m export.recover --bundle models/shapes --out runs/shapes/recovered.pt

Training runs are not committed, but a bundle holds every trainable weight: the checkpoint is
rebuilt in the format of :func:`lrcn.checkpoint.save_checkpoint` (config and vocabulary from
bundle.json, the model's ``trainable_state_dict()`` from the graphs), so the same weights can be
exported again, for instance in a new bundle format.

Where each weight is found (the graphs are followed, not their generated names):

- a named initializer is a parameter of the graph's wrapper module (export/graphs.py), which
  maps to the model's state-dict key (``project.1.weight`` in encoder.onnx is
  ``memory.project.1.weight``);
- an LSTM node belongs to the model LSTM whose state it starts from (graph input ``h``: the
  memory, ``word_h``: the captioner's word LSTM); its layer is the number of LSTM nodes of that
  module upstream of it. ONNX's W, R, B (gates i, o, f, c) become PyTorch's ``weight_ih``,
  ``weight_hh``, ``bias_ih``, ``bias_hh`` (gates i, f, g, o);
- an unnamed table gathered by the ``token`` input is the word embedding; an unnamed Gemm,
  MatMul or Conv weight is the layer of the named bias added to it (transposed back as needed).

Weights stored in float16 (``--weights float16``) come back as float32 exactly: they are the
training weights rounded to float16, which is all the bundle kept. The frozen ImageNet backbone is
not in the trainable state dict (the model loads it from its installed file); its
BatchNorm-folded convolutions are checked against a re-export instead.

Before anything is written the recovery is verified: every trainable key gets a value of its
shape and no recovered value is left over; the checkpoint is exported again with the current
exporter and the bundle's own settings, and every graph's outputs (random inputs, several batch
sizes) and initializers are compared with the bundle's (and whether the files come out
byte-identical is reported). The checkpoint's provenance says where
it came from (``recovered_from``: the bundle, its files' sha256), so that nobody takes it for a
training output; a training checkpoint at ``--out`` is never replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from export.build import export_bundle
from export.graphs import example_inputs, graph_modules
from export.precision import restore_weights_fp32
from lrcn.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from lrcn.model import LRCN, LRCNConfig
from lrcn.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary
from stream.cli.arguments import Parser
from stream.errors import StreamError
from stream.files import sha256_file, write_atomically
from stream.model.bundle import BUNDLE_FILE, GRAPH_IO, Bundle, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
BATCHES = (1, 2, 5)

# The graph input an LSTM's initial state comes from -> the model's LSTM (the bundle's interface,
# stream/model/bundle.py, names the state of each).
_LSTM_STATE = {"h": "memory.lstm", "word_h": "captioner.lstm"}
# What python -m export adds to the checkpoint's provenance in bundle.json.
_ADDED_BY_EXPORT = ("checkpoint", "checkpoint_sha256", "epoch", "train_seconds")
# ONNX LSTM gates (i, o, f, c) in PyTorch's order (i, f, g = c, o).
_TORCH_GATES = (0, 2, 3, 1)


class RecoveryError(ValueError):
    """The bundle's weights cannot be recovered, or the recovery does not verify (one line)."""


@dataclass
class Report:
    """What the recovery found and how closely the re-export matches the bundle."""

    keys: int = 0
    max_diff: dict[str, float] = field(default_factory=dict)  # graph -> max abs output diff
    bitwise: dict[str, bool] = field(default_factory=dict)  # graph -> outputs bitwise equal
    initializers: dict[str, str] = field(default_factory=dict)  # graph -> comparison summary
    unused: dict[str, int] = field(default_factory=dict)  # graph -> initializers of no weight
    same_file: dict[str, bool] = field(default_factory=dict)  # graph -> re-export byte-identical
    seconds: float = 0.0


def recover_checkpoint(
    bundle_dir: str | Path, out: str | Path, batches: Sequence[int] = BATCHES,
    tolerance: float = TOLERANCE,
) -> Report:
    """Rebuild the checkpoint of the bundle at ``bundle_dir``, verify it, write it to ``out``.

    Example:
        >>> recover_checkpoint("models/shapes", "runs/shapes/recovered.pt").max_diff
        {'encoder': 0.0, 'memory': 0.0, 'captioner': 0.0}

    Raises:
        RecoveryError: a weight cannot be placed or the re-export differs from the bundle.
        BundleError: the bundle is missing or damaged.
    """
    began = time.monotonic()
    bundle_dir, out = Path(bundle_dir), Path(out)
    bundle = read_bundle(bundle_dir)
    check_files(bundle)
    _refuse_training_checkpoint(out)
    model, vocab = _rebuild(bundle)
    report = Report()
    state = recover_state_dict(bundle, model, report)
    model.load_state_dict(state, strict=False)  # every trainable key checked above
    report.keys = len(state)
    with tempfile.TemporaryDirectory(prefix="recover-") as tmp:
        checkpoint = Path(tmp) / out.name
        save_checkpoint(checkpoint, model.eval(), vocab, **_extras(bundle))
        _verify(bundle, model, checkpoint, Path(tmp) / "bundle", batches, tolerance, report)
        write_atomically(out, lambda dest: shutil.copyfile(checkpoint, dest))
    report.seconds = time.monotonic() - began
    return report


def recover_state_dict(
    bundle: Bundle, model: LRCN, report: Report | None = None
) -> dict[str, torch.Tensor]:
    """The model's trainable state dict, found in the bundle's graphs (see the module docstring).

    Raises RecoveryError unless every key gets a value of its shape (a key found in two graphs
    must agree) and every value found is a trainable weight. Initializers that are no trainable
    weight (a frozen backbone's) are counted in ``report.unused``.
    """
    expected = model.trainable_state_dict()
    found: dict[str, tuple[np.ndarray, str]] = {}

    def put(key: str, value: np.ndarray, where: str) -> None:
        if key not in expected:
            raise RecoveryError(f"{where}: {key} is not a trainable weight of the model "
                                f"(a backbone trained with it cannot be recovered)")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise RecoveryError(f"{where}: {key} has shape {list(value.shape)}, the model "
                                f"{list(expected[key].shape)}")
        if key in found and not np.array_equal(found[key][0], value):
            raise RecoveryError(f"{where}: {key} differs from the copy in {found[key][1]}")
        found.setdefault(key, (np.ascontiguousarray(value, dtype=np.float32), where))

    for role, wrapper in graph_modules(model).items():
        file = bundle.path / bundle.graphs[role].file
        weights, unused = _graph_weights(file, wrapper, model)
        for key, value, where in weights:
            put(key, value, where)
        if report is not None:
            report.unused[role] = unused
    missing = [k for k in expected if k not in found]
    if missing:
        raise RecoveryError(f"{bundle.path}: no value found for {len(missing)} trainable "
                            f"weights (e.g. {missing[:3]})")
    return {k: torch.from_numpy(found[k][0].copy()) for k in expected}


def _rebuild(bundle: Bundle) -> tuple[LRCN, Vocabulary]:
    """The model (the installed backbone, other weights as initialised) and the vocabulary."""
    where = bundle.path / BUNDLE_FILE
    if bundle.precision.get("compute") != "float32":
        raise RecoveryError(f"{where}: the graphs compute in {bundle.precision.get('compute')}; "
                            "recover from the float32-compute bundle it was converted from")
    try:
        config = LRCNConfig.from_dict(dict(bundle.config))
    except (TypeError, ValueError) as error:
        raise RecoveryError(f"{where}: model.config does not build a model ({error})") from None
    if config.finetune or not config.pretrained:
        raise RecoveryError(f"{where}: the backbone was trained (finetune, or no ImageNet "
                            "weights): its BatchNorm-folded convolutions cannot be unfolded")
    specials = {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "unk": UNK_ID}
    if bundle.specials != specials or len(bundle.tokens) != config.vocab_size:
        raise RecoveryError(f"{where}: vocabulary does not match the model (specials "
                            f"{bundle.specials}, {len(bundle.tokens)} tokens)")
    return LRCN(config), Vocabulary.from_json(list(bundle.tokens))


class _Graph:
    """An ONNX graph with its float16 weights restored, and ways to follow it."""

    def __init__(self, file: Path) -> None:
        self.file = file
        model = onnx.load(str(file))
        restore_weights_fp32(model)
        self.graph = model.graph
        self.arrays = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.used: set[str] = set()  # initializers a weight was taken from
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def where(self, node: onnx.NodeProto) -> str:
        return f"{self.file} node {node.name or node.op_type}"

    def source(self, name: str) -> tuple[str, tuple[int, ...] | None] | None:
        """The initializer a tensor is (through Identity and Transpose), and the permutation
        that turns the initializer into the tensor; None when it is not one."""
        perm: tuple[int, ...] | None = None
        while name not in self.arrays:
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Transpose"):
                return None
            if node.op_type == "Transpose":
                p = tuple(_attribute(node, "perm", ()))
                perm = p if perm is None else tuple(p[i] for i in perm)
            name = node.input[0]
        return name, perm

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a tensor that is an initializer (marked as used), or None."""
        src = self.source(name)
        if src is None:
            return None
        self.used.add(src[0])
        array = self.arrays[src[0]]
        return array if src[1] is None else np.transpose(array, src[1] or None)

    def upstream(self, name: str) -> tuple[set[str], list[onnx.NodeProto]]:
        """The graph inputs and the nodes a tensor depends on."""
        inputs, nodes, seen, todo = set(), {}, set(), [name]
        while todo:
            tensor = todo.pop()
            if tensor in seen or not tensor:
                continue
            seen.add(tensor)
            node = self.producer.get(tensor)
            if node is None:
                inputs.add(tensor)
            elif node.output[0] not in nodes:  # a node's first output names it
                nodes[node.output[0]] = node
                todo.extend(node.input)
        return inputs, list(nodes.values())


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def _graph_weights(
    file: Path, wrapper: nn.Module, model: LRCN
) -> tuple[list[tuple[str, np.ndarray, str]], int]:
    """(state-dict key, value, where) of every trainable weight found in one graph, and how
    many of its initializers are none."""
    g = _Graph(file)
    trainable = model.trainable_state_dict()
    ids = {id(t): k for k, t in model.state_dict(keep_vars=True).items() if k in trainable}
    # Wrapper names (the graph's initializer names) -> the model's keys, by tensor identity.
    names = {k: ids[id(t)] for k, t in wrapper.state_dict(keep_vars=True).items() if id(t) in ids}
    weights = [(names[n], _constant(g, n), f"{file}:{n}") for n in g.arrays if n in names]
    weights += _lstm_weights(g, wrapper, names)
    weights += _unnamed_weights(g, wrapper, names)
    return weights, len(set(g.arrays) - g.used)


def _lstm_weights(
    g: _Graph, wrapper: nn.Module, names: dict[str, str]
) -> list[tuple[str, np.ndarray, str]]:
    lstms = {names[f"{prefix}.weight_ih_l0"].rsplit(".", 1)[0]: module
             for prefix, module in wrapper.named_modules() if isinstance(module, nn.LSTM)}
    nodes = [n for n in g.graph.node if n.op_type == "LSTM"]
    owner = {}  # a node's first output -> the model's LSTM
    for node in nodes:
        if len(node.input) < 6 or not node.input[5]:
            raise RecoveryError(f"{g.where(node)}: LSTM without an initial state")
        states = g.upstream(node.input[5])[0] & set(_LSTM_STATE)
        if len(states) != 1 or _LSTM_STATE[min(states)] not in lstms:
            raise RecoveryError(f"{g.where(node)}: cannot tell which LSTM of the model it is "
                                f"(its state comes from {sorted(states) or 'no state input'})")
        owner[node.output[0]] = _LSTM_STATE[min(states)]
    weights = []
    for node in nodes:
        prefix = owner[node.output[0]]
        module = lstms[prefix]
        # Layer k of a stack reads the output of layers 0..k-1 of the same LSTM.
        layer = sum(owner.get(n.output[0]) == prefix for n in g.upstream(node.input[0])[1])
        where = g.where(node)
        if (_attribute(node, "direction", b"forward") != b"forward"
                or _attribute(node, "hidden_size", 0) != module.hidden_size
                or any(a.name in ("activations", "clip", "input_forget", "layout")
                       for a in node.attribute)
                or (len(node.input) > 7 and node.input[7]) or module.proj_size
                or module.bidirectional or not 0 <= layer < module.num_layers):
            raise RecoveryError(f"{where}: not a layer of {prefix} as exported (layer {layer})")
        w, r = g.constant(node.input[1]), g.constant(node.input[2])
        b = g.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if w is None or r is None or (b is None) == module.bias:
            raise RecoveryError(f"{where}: its weights are not constants")
        H = module.hidden_size
        weights += [(f"{prefix}.weight_ih_l{layer}", _gates(w[0], H), where),
                    (f"{prefix}.weight_hh_l{layer}", _gates(r[0], H), where)]
        if b is not None:  # (1, 8H): input biases, then recurrent biases
            weights += [(f"{prefix}.bias_ih_l{layer}", _gates(b[0, : 4 * H], H), where),
                        (f"{prefix}.bias_hh_l{layer}", _gates(b[0, 4 * H :], H), where)]
    return weights


def _gates(onnx_gates: np.ndarray, hidden: int) -> np.ndarray:
    """(4H, ...) in ONNX's gate order (i, o, f, c) -> PyTorch's (i, f, g, o)."""
    chunks = [onnx_gates[i * hidden : (i + 1) * hidden] for i in range(4)]
    return np.concatenate([chunks[i] for i in _TORCH_GATES])


def _unnamed_weights(
    g: _Graph, wrapper: nn.Module, names: dict[str, str]
) -> list[tuple[str, np.ndarray, str]]:
    """Embeddings gathered by the ``token`` input, and the weights of layers whose bias is named,
    where the exporter left them unnamed (or folded a transposition into them)."""
    weights = []
    embeds = [names[f"{p}.weight"] for p, m in wrapper.named_modules()
              if isinstance(m, nn.Embedding)]
    for node in g.graph.node:
        src = g.source(node.input[0]) if node.input else None
        if (node.op_type == "Gather" and src is not None and src[0] not in names
                and "token" in g.upstream(node.input[1])[0]):
            if len(embeds) != 1:
                raise RecoveryError(f"{g.where(node)}: a word table but {len(embeds)} "
                                    "embeddings in the model")
            weights.append((embeds[0], _constant(g, node.input[0]), g.where(node)))
        if node.op_type not in ("Gemm", "MatMul", "Conv") or len(node.input) < 2:
            continue
        src = g.source(node.input[1])
        if src is None or src[0] in names:
            continue
        bias = _bias_of(g, node, names)
        if bias is None:  # a frozen backbone's folded convolution: compared on re-export
            continue
        weight = _constant(g, node.input[1])
        if node.op_type == "MatMul" or (node.op_type == "Gemm" and not _attribute(node, "transB",
                                                                                  0)):
            weight = weight.T  # x @ W: PyTorch keeps W as (out, in)
        weights.append((names[bias].removesuffix(".bias") + ".weight", weight, g.where(node)))
    return weights


def _constant(g: _Graph, name: str) -> np.ndarray:
    array = g.constant(name)
    assert array is not None  # callers checked g.source
    return array


def _bias_of(g: _Graph, node: onnx.NodeProto, names: dict[str, str]) -> str | None:
    """The named bias added to a layer's output, if any."""
    candidates = list(node.input[2:3])
    if node.op_type == "MatMul":
        candidates = [i for n in g.consumers.get(node.output[0], []) if n.op_type == "Add"
                      for i in n.input if i != node.output[0]]
    for name in candidates:
        src = g.source(name)
        if src is not None and src[0] in names and names[src[0]].endswith(".bias"):
            return src[0]
    return None


def _extras(bundle: Bundle) -> dict[str, Any]:
    """The checkpoint's provenance as far as the bundle recorded it, and where it came from."""
    recorded = dict(bundle.provenance)
    provenance = {k: v for k, v in recorded.items() if k not in _ADDED_BY_EXPORT}
    provenance.setdefault("sample_fps", bundle.sample_fps)
    files = [BUNDLE_FILE, *sorted(bundle.checksums)]
    provenance["recovered_from"] = {
        "bundle": str(bundle.path),
        "sha256": {name: sha256_file(bundle.path / name) for name in files},
        "checkpoint": recorded.get("checkpoint"),
        "checkpoint_sha256": recorded.get("checkpoint_sha256"),
        "weights": bundle.precision.get("weights"),
        "note": "rebuilt by python -m export.recover from the bundle, not a training output"
                + ("; weights of 1024 or more values are the training weights rounded to "
                   "float16" if bundle.precision.get("weights") == "float16" else ""),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    extras: dict[str, Any] = {"provenance": provenance}
    for key, value in (("epoch", recorded.get("epoch")),
                       ("elapsed", recorded.get("train_seconds")),
                       ("metrics", bundle.evaluation.get("checkpoint_val"))):
        if value is not None:
            extras[key] = value
    return extras


def _refuse_training_checkpoint(out: Path) -> None:
    if not out.exists():
        return
    try:
        provenance = read_checkpoint(out).get("provenance") or {}
    except CheckpointError:
        provenance = {}
    if "recovered_from" not in provenance:
        raise RecoveryError(f"{out}: exists and is not a recovered checkpoint; not replacing it")


def _verify(
    bundle: Bundle, model: LRCN, checkpoint: Path, again: Path, batches: Sequence[int],
    tolerance: float, report: Report,
) -> None:
    """Export ``checkpoint`` like the bundle was and compare the two bundles."""
    settings = SessionSettings(device="cpu", precision="fp32")
    export_bundle(checkpoint, again, opset=bundle.opset, weights=bundle.precision["weights"])
    ours = open_bundle(again, settings)
    theirs = open_bundle(bundle.path, settings)
    # An int8 encoder is made from the exported graphs (export.quantize), not the checkpoint.
    bundle = replace(bundle, graphs={role: bundle.graphs[role] for role in GRAPH_IO},
                     precision={k: v for k, v in bundle.precision.items() if k != "int8"})
    same = ("graphs", "config", "tokens", "specials", "sample_fps", "keyframes",
            "max_caption_len", "input_size", "backbone", "precision", "opset")
    for name in same:
        if getattr(ours.bundle, name) != getattr(bundle, name):
            raise RecoveryError(f"{bundle.path / BUNDLE_FILE}: the re-export's {name} differs "
                                f"({getattr(ours.bundle, name)!r})")
    for role, (input_names, output_names) in GRAPH_IO.items():
        worst, bitwise = 0.0, True
        for seed, batch in enumerate(batches):
            inputs = example_inputs(model, batch, seed=seed + 1)[role]
            feed = {n: inputs[n].numpy() for n in input_names}
            a = ours.sessions[role].run(list(output_names), feed)
            b = theirs.sessions[role].run(list(output_names), feed)
            for x, y in zip(a, b, strict=True):
                if x.shape != y.shape or x.dtype != y.dtype:
                    raise RecoveryError(f"{bundle.path / bundle.graphs[role].file}: output of "
                                        f"shape {y.shape}, the re-export {x.shape}")
                bitwise &= x.tobytes() == y.tobytes()
                worst = max(worst, float(np.abs(x.astype(np.float64) - y).max(initial=0.0)))
        report.max_diff[role], report.bitwise[role] = worst, bitwise
        if not worst <= tolerance:
            raise RecoveryError(f"{bundle.path / bundle.graphs[role].file}: the re-exported "
                                f"graph differs by {worst:.3g} (> {tolerance:g})")
        file = bundle.graphs[role].file
        report.initializers[role] = _compare_initializers(bundle.path / file, again / file,
                                                          tolerance)
        report.same_file[role] = sha256_file(again / file) == bundle.checksums[file]


def _compare_initializers(shipped: Path, again: Path, tolerance: float) -> str:
    """Compare the stored initializers (as stored: float16 ones as float16), by name where
    the two graphs name them alike, otherwise in order where their shapes agree."""
    a = list(onnx.load(str(shipped)).graph.initializer)
    b = list(onnx.load(str(again)).graph.initializer)
    if sorted(i.name for i in a) == sorted(i.name for i in b):
        by_name = {i.name: i for i in b}
        pairs, how = [(i, by_name[i.name]) for i in a], "by name"
    elif [(i.data_type, list(i.dims)) for i in a] == [(i.data_type, list(i.dims)) for i in b]:
        pairs, how = list(zip(a, b, strict=True)), "in order (names differ)"
    else:
        log.warning("%s: initializers not comparable with the re-export's (%d against %d); "
                    "the outputs agree", shipped, len(a), len(b))
        return f"not comparable ({len(a)} against {len(b)} initializers)"
    identical, worst = 0, 0.0
    for x, y in pairs:
        u, v = numpy_helper.to_array(x), numpy_helper.to_array(y)
        if x.data_type != y.data_type or u.shape != v.shape:
            raise RecoveryError(f"{shipped}: initializer {x.name} is {u.dtype} {list(u.shape)}, "
                                f"the re-export's {v.dtype} {list(v.shape)}")
        identical += u.tobytes() == v.tobytes()
        if u.size and np.issubdtype(u.dtype, np.number):
            worst = max(worst, float(np.abs(u.astype(np.float64) - v).max()))
    if not worst <= tolerance:
        raise RecoveryError(f"{shipped}: initializers differ from the re-export's by {worst:.3g}")
    return f"{identical}/{len(pairs)} bitwise identical {how}, max diff {worst:.3g}"


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m export.recover",
        description="Rebuild the training checkpoint a bundle was exported from (trainable "
                    "weights, config, vocabulary), verified by exporting it again and comparing "
                    "every graph with the bundle's.")
    parser.add_argument("--bundle", type=Path, required=True,
                        help="bundle directory (e.g. models/shapes)")
    parser.add_argument("--out", type=Path, required=True,
                        help="checkpoint to write (e.g. runs/shapes/recovered.pt); an earlier "
                             "recovered checkpoint there is replaced, a training one never")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES),
                        help=f"batch sizes of the comparison (default {list(BATCHES)})")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest output difference accepted (default {TOLERANCE:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with torch.no_grad():  # scoped: a caller in the same process keeps its autograd
            report = recover_checkpoint(args.bundle, args.out, args.batches, args.tolerance)
    except (RecoveryError, CheckpointError, StreamError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for role, diff in report.max_diff.items():
        print(f"{role}: outputs max abs diff {diff:.3g} over batches {args.batches}"
              f"{' (bitwise identical)' if report.bitwise[role] else ''}; initializers "
              f"{report.initializers[role]}; {report.unused[role]} not trainable; file "
              f"{'byte-identical' if report.same_file[role] else 'differs'}")
    print(f"wrote {args.out} ({report.keys} trainable weights) in {report.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
