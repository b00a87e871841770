"""The model bundle: what ``python -m export`` writes and the runtime reads.

A bundle is a directory::

    encoder.onnx    frames (B, S, S, 3) uint8 RGB -> features (B, F), run on key frames only
    memory.onnx     T frames of each of B streams in one call: the recurrent memory over the
                    frames' held features and thumbnails (B, T, 3, m, m)
                    (model.keyframes.thumbnails), and each frame's word LSTM start
    captioner.onnx  one word for N captions: token, context, word state -> log-probs, word state
    encoder_int8.onnx  optional: encoder.onnx statically quantized to int8 (python -m
                    export.quantize), the same inputs and outputs; bundle.json's
                    ``precision.int8`` says how it was made and how often its captions agree
                    with fp32's. The session settings' ``precision`` chooses between the two.
    bundle.json     format, model settings (the key-frame rule among them), vocabulary, tensor
                    names and shapes, sha256 of every file, training provenance and evaluation
                    numbers

Every axis named ``batch`` is dynamic, so any number of streams is stepped in one call, and the
axis named ``steps`` too, so any number of frames of each.
:func:`open_bundle` checks all of it (files, checksums, graph inputs and outputs against
bundle.json, the vocabulary against the captioner's output, one dummy run) before anything
streams; each problem is one :class:`BundleError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stream.errors import BundleError, reason
from stream.files import sha256_file, write_text_atomically
from stream.model.keyframes import KeyFrameRule
from stream.model.sessions import (
    SessionSettings,
    choose_providers,
    create_session,
    int8_instructions,
)

log = logging.getLogger(__name__)

# 2: key frames; the thumbnail left the encoder graph. 3: memory.onnx steps T frames per stream
# in one call.
FORMAT_VERSION = 3
BUNDLE_FILE = "bundle.json"
BATCH = "batch"  # the name of every dynamic batch axis
STEPS = "steps"  # the name of the dynamic axis of a stream's frames in one call

# Graph name -> (input names, output names). The runtime relies on these roles.
GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("frames",), ("features",)),
    "memory": (("features", "thumbnail", "reset", "h", "c", "prev", "avg"),
               ("context", "word_h", "word_c", "h_out", "c_out", "prev_out", "avg_out")),
    "captioner": (("token", "context", "word_h", "word_c"), ("logp", "word_h_out", "word_c_out")),
}
# Graphs a bundle may carry besides those: role -> (input names, output names).
INT8_ROLE = "encoder_int8"
OPTIONAL_GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    INT8_ROLE: GRAPH_IO["encoder"],
}
# Share of frames whose captions must be token-identical to fp32's (recorded in bundle.json's
# precision.int8.agreement) before precision auto runs the int8 encoder.
INT8_AGREEMENT = 0.99
SPECIAL_TOKENS = ("pad", "bos", "eos", "unk")

# ONNX Runtime's type strings for the element types a bundle uses.
_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(bool)": "bool", "tensor(int64)": "int64"}
NUMPY_TYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16, "bool": np.bool_,
               "int64": np.int64}

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type (numpy name) and shape (``batch`` and
    ``steps`` dynamic)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def concrete(self, batch: int, steps: int = 1) -> tuple[int, ...]:
        """The shape with every ``batch`` axis set to ``batch`` and ``steps`` axis to ``steps``."""
        return tuple(batch if d == BATCH else steps if d == STEPS else int(d) for d in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file of the bundle and its interface."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs]}


@dataclass(frozen=True)
class Bundle:
    """The parsed bundle.json of the bundle at ``path`` (nothing run yet)."""

    path: Path
    backbone: str
    input_size: int
    sample_fps: float
    tokens: tuple[str, ...]
    specials: dict[str, int]
    max_caption_len: int
    opset: int
    precision: dict[str, Any]  # weights, compute (str); int8 (dict) with an int8 encoder
    graphs: dict[str, GraphSpec]  # GRAPH_IO's roles, and those of OPTIONAL_GRAPH_IO present
    checksums: dict[str, str]
    keyframes: KeyFrameRule = KeyFrameRule()
    provenance: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    created: str = ""  # ISO 8601, UTC
    config: dict[str, Any] = field(default_factory=dict)  # the model's settings, for training
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes

    def to_json(self) -> dict[str, Any]:
        """bundle.json's content: what :func:`read_bundle` reads back into an equal Bundle."""
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "created": self.created,
            "model": {"backbone": self.backbone, "input_size": self.input_size,
                      "config": self.config},
            "sample_fps": self.sample_fps,
            "keyframes": self.keyframes.to_json(),
            "max_caption_len": self.max_caption_len,
            "vocabulary": {"tokens": list(self.tokens), **self.specials},
            "precision": self.precision,
            "opset": self.opset,
            "graphs": {role: graph.to_json() for role, graph in self.graphs.items()},
            "files": {name: {"sha256": sha, "bytes": self.sizes.get(name)}
                      for name, sha in self.checksums.items()},
            "provenance": self.provenance,
            "evaluation": self.evaluation,
        }

    def write(self) -> Path:
        """Write bundle.json into the bundle's directory (atomically); returns its path."""
        file = self.path / BUNDLE_FILE
        write_text_atomically(file, json.dumps(self.to_json(), indent=1) + "\n")
        return file

    def with_file(self, name: str) -> Bundle:
        """This bundle with file ``name``'s checksum and size taken anew from the disk."""
        file = self.path / name
        return replace(self, checksums={**self.checksums, name: sha256_file(file)},
                       sizes={**self.sizes, name: file.stat().st_size})

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def int8_agreement(self) -> float | None:
        """The recorded share of frames whose captions with the int8 encoder are
        token-identical to fp32's, or None (no int8 encoder, or not measured)."""
        agreement = (self.precision.get("int8") or {}).get("agreement") or {}
        share = agreement.get("identical_share") if isinstance(agreement, dict) else None
        return float(share) if isinstance(share, int | float) else None

    @property
    def motion_pool(self) -> int:
        """Input pixels per thumbnail pixel, along each side."""
        return self.input_size // int(self.graphs["memory"].input("thumbnail").shape[-1])

    def fingerprint(self) -> str:
        """sha256 of what shapes the captions: the graphs' checksums and interfaces, the
        vocabulary, the input size, the sample rate and the caption length. Provenance and
        recorded evaluations are left out: recording a result changes no caption."""
        shaping = {"checksums": self.checksums, "tokens": self.tokens, "specials": self.specials,
                   "input_size": self.input_size, "sample_fps": self.sample_fps,
                   "keyframes": self.keyframes.to_json(),
                   "max_caption_len": self.max_caption_len, "precision": self.precision,
                   "graphs": {role: graph.to_json() for role, graph in self.graphs.items()}}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()

    def detokenize(self, ids: list[int]) -> str:
        """Caption text of token ids (specials dropped, stops at ``<eos>``)."""
        skip = {self.specials["pad"], self.specials["bos"]}
        words = []
        for i in ids:
            if i == self.specials["eos"]:
                break
            if i not in skip:
                words.append(self.tokens[i])
        return " ".join(words)


class _Reader:
    """Typed access to bundle.json fields; every failure names the file and the field."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, message: str) -> BundleError:
        return BundleError(f"{self.file}: {message}")

    def get(self, data: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        name = f"{where}.{key}" if where else key
        if not isinstance(data, dict) or key not in data:
            raise self.fail(f"missing field {name!r}")
        value = data[key]
        # bool is an int in Python; a JSON true where a number belongs is still wrong.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            expected = " or ".join(k.__name__ for k in _tuple(kind))
            raise self.fail(f"field {name!r} must be {expected}, got {type(value).__name__}")
        return value

    def tensor(self, data: Any, where: str) -> TensorSpec:
        name = self.get(data, "name", str, where)
        dtype = self.get(data, "dtype", str, where)
        if dtype not in NUMPY_TYPES:
            raise self.fail(f"field {where}.dtype: unknown element type {dtype!r}")
        shape = self.get(data, "shape", list, where)
        for d in shape:
            if not ((isinstance(d, int) and not isinstance(d, bool) and d > 0)
                    or d in (BATCH, STEPS)):
                raise self.fail(f"field {where}.shape: {shape} has a dimension that is neither "
                                f"a positive integer nor {BATCH!r} or {STEPS!r}")
        return TensorSpec(name, dtype, tuple(shape))

    def graph(self, data: Any, role: str) -> GraphSpec:
        where = f"graphs.{role}"
        spec = GraphSpec(
            self.get(data, "file", str, where),
            tuple(self.tensor(t, f"{where}.inputs[{i}]")
                  for i, t in enumerate(self.get(data, "inputs", list, where))),
            tuple(self.tensor(t, f"{where}.outputs[{i}]")
                  for i, t in enumerate(self.get(data, "outputs", list, where))))
        if Path(spec.file).name != spec.file or spec.file.startswith("."):
            raise self.fail(f"field {where}.file must be a plain file name, got {spec.file!r}")
        inputs, outputs = {**GRAPH_IO, **OPTIONAL_GRAPH_IO}[role]
        got_in = tuple(t.name for t in spec.inputs)
        got_out = tuple(t.name for t in spec.outputs)
        if set(got_in) != set(inputs) or set(got_out) != set(outputs):
            raise self.fail(f"{where} must have inputs {list(inputs)} and outputs "
                            f"{list(outputs)}, got {list(got_in)} and {list(got_out)}")
        return spec


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def read_bundle(path: str | Path) -> Bundle:
    """Parse and type-check ``<path>/bundle.json`` (files and graphs are checked later).

    Raises:
        BundleError: the directory or bundle.json is missing, not JSON, of a newer format, or
            has a missing or wrong-typed field.
    """
    root = Path(path)
    file = root / BUNDLE_FILE
    r = _Reader(file)
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle directory not found")
    if not file.is_file():
        raise BundleError(f"{file}: missing (not a model bundle directory?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise r.fail(f"not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise r.fail("must hold a JSON object")
    version = r.get(data, "format", int)
    if version > FORMAT_VERSION:
        raise r.fail(f"bundle format {version} is newer than this runtime reads "
                     f"({FORMAT_VERSION}); upgrade lrcn-stream")
    if version < FORMAT_VERSION:
        raise r.fail(f"bundle format {version} is older than this runtime reads "
                     f"({FORMAT_VERSION}: a stream's frames in one memory call); export it again "
                     f"with python -m export --checkpoint CKPT (or, without the checkpoint, "
                     f"python -m export.recover first)")

    model = r.get(data, "model", dict)
    vocab = r.get(data, "vocabulary", dict)
    tokens = r.get(vocab, "tokens", list, "vocabulary")
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise r.fail("field 'vocabulary.tokens' must be a non-empty list of strings")
    specials = {k: r.get(vocab, k, int, "vocabulary") for k in SPECIAL_TOKENS}
    for name, index in specials.items():
        if not 0 <= index < len(tokens):
            raise r.fail(f"field 'vocabulary.{name}' = {index} is outside the vocabulary of "
                         f"{len(tokens)} tokens")
    graphs_data = r.get(data, "graphs", dict)
    graphs = {role: r.graph(r.get(graphs_data, role, dict, "graphs"), role) for role in GRAPH_IO}
    for role in OPTIONAL_GRAPH_IO:
        if role in graphs_data:
            graphs[role] = r.graph(r.get(graphs_data, role, dict, "graphs"), role)
    files = r.get(data, "files", dict)
    checksums, sizes = {}, {}
    for name in files:
        entry = r.get(files, name, dict, "files")
        checksums[name] = r.get(entry, "sha256", str, f"files.{name}")
        if isinstance(entry.get("bytes"), int):
            sizes[name] = entry["bytes"]
    sample_fps = r.get(data, "sample_fps", (int, float))
    input_size = r.get(model, "input_size", int, "model")
    max_len = r.get(data, "max_caption_len", int)
    if not (math.isfinite(sample_fps) and sample_fps > 0):
        raise r.fail(f"field 'sample_fps' must be a positive number, got {sample_fps}")
    if input_size < 1 or max_len < 1:
        raise r.fail("fields 'model.input_size' and 'max_caption_len' must be positive")
    precision = r.get(data, "precision", dict)
    int8 = {"int8": r.get(precision, "int8", dict, "precision")} if "int8" in precision else {}
    keys = r.get(data, "keyframes", dict)
    try:
        keyframes = KeyFrameRule(r.get(keys, "every", int, "keyframes"),
                                 float(r.get(keys, "threshold", (int, float), "keyframes")),
                                 r.get(keys, "cells", int, "keyframes"))
    except ValueError as error:
        raise r.fail(str(error)) from None
    return Bundle(
        path=root,
        backbone=r.get(model, "backbone", str, "model"),
        input_size=input_size,
        sample_fps=float(sample_fps),
        tokens=tuple(tokens),
        specials=specials,
        max_caption_len=max_len,
        opset=r.get(data, "opset", int),
        precision={**{k: r.get(precision, k, str, "precision") for k in ("weights", "compute")},
                   **int8},
        graphs=graphs,
        checksums=checksums,
        keyframes=keyframes,
        provenance=data.get("provenance") or {},
        evaluation=data.get("evaluation") or {},
        name=str(data.get("name") or ""),
        created=str(data.get("created") or ""),
        config=model.get("config") or {},
        sizes=sizes,
    )


def check_files(bundle: Bundle) -> None:
    """Every graph file is listed, present, and has the recorded sha256."""
    r = _Reader(bundle.path / BUNDLE_FILE)
    for role, graph in bundle.graphs.items():
        if graph.file not in bundle.checksums:
            raise r.fail(f"graphs.{role}.file {graph.file!r} has no entry in 'files'")
    for name, expected in bundle.checksums.items():
        if Path(name).name != name or name == BUNDLE_FILE:
            raise r.fail(f"files: {name!r} is not a plain file name of the bundle")
        file = bundle.path / name
        if not file.is_file():
            raise BundleError(f"{file}: missing (listed in {BUNDLE_FILE})")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(f"{file}: sha256 {actual[:12]}... does not match "
                              f"{BUNDLE_FILE} ({expected[:12]}...): the file was changed or "
                              f"damaged")


@dataclass
class LoadedBundle:
    """A validated bundle with one ONNX Runtime session per role of :data:`GRAPH_IO`;
    ``sessions["encoder"]`` runs the encoder graph of ``precision`` ("fp32": encoder.onnx,
    "int8": the optional encoder_int8)."""

    bundle: Bundle
    sessions: dict[str, ort.InferenceSession]
    providers: list[str]
    precision: str = "fp32"


def open_bundle(path: str | Path, settings: SessionSettings | None = None) -> LoadedBundle:
    """Validate the bundle at ``path`` completely and create its sessions.

    Checks bundle.json, the files and their checksums, each graph's inputs and outputs against
    bundle.json, the graphs against each other (the vocabulary against the captioner's output),
    and runs every graph once on dummy input. Of the two encoders of a bundle with an int8 one,
    only the one ``settings.precision`` chooses (:func:`choose_precision`) gets a session, is
    checked and run; the choice is logged once.

    Raises:
        BundleError: the first problem found, as one line naming the file; or precision int8
            where the bundle has no int8 encoder or the model runs on a GPU.
        DeviceError: the requested device cannot be used.
    """
    settings = settings or SessionSettings()
    bundle = read_bundle(path)
    check_files(bundle)
    _check_consistency(bundle)
    files = {role: bundle.path / g.file for role, g in bundle.graphs.items()}
    providers = choose_providers(settings, files["captioner"])
    precision, why = choose_precision(bundle, settings, providers)
    log.info("encoder: %s (%s)", precision, why)
    chosen = {role: role for role in GRAPH_IO} | {"encoder": _encoder_role(precision)}
    sessions = {}
    for role, source in chosen.items():
        try:
            sessions[role] = create_session(files[source], settings, providers)
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
            raise BundleError(f"{files[source]}: not a loadable ONNX graph "
                              f"({reason(err)})") from None
        _check_interface(files[source], bundle.graphs[source], sessions[role])
    loaded = LoadedBundle(bundle, sessions, providers, precision)
    _dummy_run(loaded)
    return loaded


def choose_precision(bundle: Bundle, settings: SessionSettings, providers: Sequence[str],
                     flags: Iterable[str] | None = None) -> tuple[str, str]:
    """The encoder to run, "fp32" or "int8", and why (a few words for the log).

    ``settings.precision`` auto chooses int8 when the bundle has an int8 encoder whose recorded
    caption agreement with fp32 is at least :data:`INT8_AGREEMENT`, the model runs on the CPU
    provider (``providers[0]``), and the CPU has VNNI or AMX (``flags``: /proc/cpuinfo's, by
    default this machine's; see :func:`stream.model.sessions.int8_instructions`).

    Raises:
        BundleError: int8 was asked for, and the bundle has none or the model runs on a GPU.
    """
    has_int8 = INT8_ROLE in bundle.graphs
    provider = providers[0]
    on_cpu = provider == "CPUExecutionProvider"
    if settings.precision == "fp32":
        return "fp32", "asked for"
    if settings.precision == "int8":
        if not has_int8:
            raise BundleError(f"{bundle.path}: precision int8: the bundle has no int8 encoder "
                              f"(add one with python -m export.quantize)")
        if not on_cpu:
            raise BundleError(f"{bundle.path}: precision int8 runs on the CPU only, not with "
                              f"{provider} (use device cpu, or precision fp32)")
        return "int8", "asked for"
    if not has_int8:
        return "fp32", "the bundle has no int8 encoder"
    if not on_cpu:
        return "fp32", f"the model runs with {provider}"
    instructions = int8_instructions(flags)
    if instructions is None:
        return "fp32", "no VNNI/AMX"
    share = bundle.int8_agreement
    if share is None:
        return "fp32", (f"CPU has {instructions}, but the int8 encoder's caption agreement with "
                        f"fp32 is not recorded")
    if share < INT8_AGREEMENT:
        return "fp32", (f"CPU has {instructions}, but the int8 encoder's captions agree with "
                        f"fp32 on {share:.2%} of frames, below {INT8_AGREEMENT:.0%}")
    return "int8", f"CPU has {instructions}"


def _encoder_role(precision: str) -> str:
    return INT8_ROLE if precision == "int8" else "encoder"


def _check_consistency(bundle: Bundle) -> None:
    r = _Reader(bundle.path / BUNDLE_FILE)
    enc, mem, cap = (bundle.graphs[k] for k in ("encoder", "memory", "captioner"))
    frames = enc.input("frames")
    size = bundle.input_size
    if frames.dtype != "uint8" or frames.shape != (BATCH, size, size, 3):
        raise r.fail(f"graphs.encoder input 'frames' must be uint8 {[BATCH, size, size, 3]}, "
                     f"got {frames.dtype} {list(frames.shape)}")
    thumb = mem.input("thumbnail")
    m = thumb.shape[-1] if len(thumb.shape) == 5 else None
    if (thumb.dtype != "float32" or m is None or thumb.shape[:3] != (BATCH, STEPS, 3)
            or thumb.shape[3] != m or not isinstance(m, int) or size % m):
        raise r.fail(f"graphs.memory input 'thumbnail' must be float32 "
                     f"[{BATCH!r}, {STEPS!r}, 3, m, m] with m dividing the input size {size}, "
                     f"got {thumb.dtype} {list(thumb.shape)}")
    # (output, input, whether the output has a steps axis the input lacks)
    links = [(enc.output("features"), mem.input("features"), False),
             (mem.output("context"), cap.input("context"), True),
             (mem.output("word_h"), cap.input("word_h"), True),
             (mem.output("word_c"), cap.input("word_c"), True)]
    for state in ("h", "c", "prev", "avg"):
        links.append((mem.output(f"{state}_out"), mem.input(state), False))
    for state in ("word_h", "word_c"):
        links.append((cap.output(f"{state}_out"), cap.input(state), False))
    for out, inp, per_step in links:
        # The memory's features are per step; the encoder's are per frame.
        out_shape = out.shape[:1] + out.shape[2:] if per_step else out.shape
        inp_shape = inp.shape[:1] + inp.shape[2:] if inp.name == "features" else inp.shape
        if out_shape != inp_shape or out.dtype != inp.dtype:
            raise r.fail(f"output {out.name!r} {out.dtype} {list(out.shape)} does not fit input "
                         f"{inp.name!r} {inp.dtype} {list(inp.shape)}")
    logp = cap.output("logp")
    if logp.shape[-1] != bundle.vocab_size:
        raise r.fail(f"the vocabulary has {bundle.vocab_size} tokens but the captioner's "
                     f"'logp' has {logp.shape[-1]} entries per word")
    int8 = bundle.graphs.get(INT8_ROLE)
    if int8 is not None and (int8.inputs, int8.outputs) != (enc.inputs, enc.outputs):
        raise r.fail(f"graphs.{INT8_ROLE} must have the inputs and outputs of graphs.encoder")


def _check_interface(file: Path, graph: GraphSpec, session: ort.InferenceSession) -> None:
    for kind, specs, actual in (("input", graph.inputs, session.get_inputs()),
                                ("output", graph.outputs, session.get_outputs())):
        found = {a.name: a for a in actual}
        for spec in specs:
            a = found.pop(spec.name, None)
            if a is None:
                raise BundleError(f"{file}: has no {kind} {spec.name!r} (listed in "
                                  f"{BUNDLE_FILE})")
            dtype = _ORT_TYPES.get(a.type, a.type)
            shape = tuple(d if isinstance(d, int) else d if d in (BATCH, STEPS) else BATCH
                          for d in a.shape)
            if dtype != spec.dtype or shape != spec.shape:
                raise BundleError(f"{file}: {kind} {spec.name!r} is {dtype} {list(shape)} but "
                                  f"{BUNDLE_FILE} says {spec.dtype} {list(spec.shape)}")
        if found:
            raise BundleError(f"{file}: unexpected {kind}s {sorted(found)} (not in "
                              f"{BUNDLE_FILE})")


def zeros(spec: TensorSpec, batch: int) -> np.ndarray:
    """A zero array of ``spec``'s type and shape."""
    return np.zeros(spec.concrete(batch), NUMPY_TYPES[spec.dtype])


def _dummy_run(loaded: LoadedBundle) -> None:
    bundle = loaded.bundle
    values: dict[str, np.ndarray] = {}
    for role in ("encoder", "memory", "captioner"):
        graph = bundle.graphs[role]
        feeds = {t.name: zeros(t, 1) for t in graph.inputs}
        if role == "memory":
            feeds["features"] = values["features"][:, None]  # one step of one stream
            feeds["reset"] = np.ones(1, np.bool_)
        if role == "captioner":
            feeds |= {name: values[name][:, 0] for name in ("context", "word_h", "word_c")}
            feeds["token"] = np.full(1, bundle.specials["bos"], np.int64)
        source = _encoder_role(loaded.precision) if role == "encoder" else role
        file = bundle.path / bundle.graphs[source].file
        try:
            outputs = loaded.sessions[role].run(None, feeds)
        except Exception as err:  # noqa: BLE001
            raise BundleError(f"{file}: a dummy run failed ({reason(err)})") from None
        for spec, value in zip(loaded.sessions[role].get_outputs(), outputs, strict=True):
            expected = graph.output(spec.name).concrete(1)
            if value.shape != expected or not np.all(np.isfinite(value)):
                raise BundleError(f"{file}: a dummy run gave {spec.name!r} of shape "
                                  f"{list(value.shape)} (expected {list(expected)}) or "
                                  f"non-finite values")
            values[spec.name] = value


def record_evaluation(path: str | Path, key: str, results: dict[str, Any]) -> None:
    """Store evaluation ``results`` under ``evaluation.<key>`` in a bundle's bundle.json.

    bundle.json is not among the checksummed files, so this does not invalidate the bundle.
    """
    bundle = read_bundle(path)
    replace(bundle, evaluation={**bundle.evaluation, key: results}).write()
