"""Precision options for exported graphs.

- Weight storage in float16 (``weights="float16"``): every large float32 initializer is stored
  as float16 and cast back to float32 when the session loads (ONNX Runtime folds the casts), so
  the graph still computes in float32 but the files are half the size. Rounding the weights is
  a small, measured change of the model (see the README); the float32 export is the one that
  matches PyTorch to 1e-4.
- Compute in float16 (``fp16=True``, for GPUs): the encoder graph computes in float16 with its
  uint8 input and float32 outputs unchanged. The recurrent graphs stay float32: their state is
  carried for hours and small, so half precision would save nothing and drift.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stream.files import write_atomically

# Biases and norms are tiny; only tensors at least this large are worth storing in half.
_MIN_ELEMENTS = 1024


def store_weights_fp16(path: Path) -> int:
    """Store the graph's large float32 initializers as float16; return how many changed."""
    model = onnx.load(str(path))
    graph = model.graph
    initializers, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < _MIN_ELEMENTS:
            initializers.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}__fp16")
        initializers.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    nodes = [*casts, *graph.node]  # the casts first keeps the node list topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    write_atomically(path, lambda tmp: onnx.save(model, str(tmp)))
    return len(casts)


def restore_weights_fp32(model: onnx.ModelProto) -> int:
    """Undo :func:`store_weights_fp16` in ``model``: each float16 initializer cast to float32
    becomes the float32 initializer again (exactly: every float16 value is a float32 value).
    Returns how many were restored."""
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    restored, kept = {}, []
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == TensorProto.FLOAT and node.input[0] in halves:
            array = numpy_helper.to_array(halves[node.input[0]]).astype(np.float32)
            restored[node.input[0]] = numpy_helper.from_array(array, node.output[0])
        else:
            kept.append(node)
    if not restored:
        return 0
    initializers = [i for i in graph.initializer if i.name not in restored]
    del graph.initializer[:]
    graph.initializer.extend([*initializers, *restored.values()])
    del graph.node[:]
    graph.node.extend(kept)
    return len(restored)


def compute_fp16(path: Path) -> None:
    """Convert the graph to float16 compute, keeping its input and output types (weights stored
    in float16 by :func:`store_weights_fp16` are first restored, then converted once)."""
    from onnxconverter_common import float16

    model = onnx.load(str(path))
    restore_weights_fp32(model)
    with warnings.catch_warnings():  # one note per weight below float16's range, set to 1e-7
        warnings.simplefilter("ignore", UserWarning)
        # Cast nodes stay float32: converted, the uint8 -> float cast of the input frames keeps
        # its "to float" attribute while its output is declared float16, an invalid graph.
        model = float16.convert_float_to_float16(
            model, keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])
    onnx.checker.check_model(model)
    write_atomically(path, lambda tmp: onnx.save(model, str(tmp)))
