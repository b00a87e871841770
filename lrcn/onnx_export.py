"""One way to turn a PyTorch module into an ONNX file, shared by the feature cache and export/."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from stream.files import write_atomically

OPSET = 17


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = OPSET,
) -> None:
    """Trace ``module`` (in eval mode) on ``example`` and write the graph atomically to ``path``.

    The legacy TorchScript exporter (``dynamo=False``) takes ``dynamic_axes`` and handles the
    LSTMs here; it prints deprecation and constant-folding notes, which are silenced.
    """
    module.eval()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              opset_version=opset, dynamo=False, do_constant_folding=True)

    write_atomically(Path(path), write)
