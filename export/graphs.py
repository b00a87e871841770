"""The three step graphs of a bundle as small PyTorch modules, and their ONNX export.

Each wrapper reuses the model's own modules, so the exported graph computes exactly what the
model computes; the wrappers only fix the interface the runtime expects (stream/model/bundle.py):
state as explicit inputs and outputs, the batch axis dynamic everywhere.

    EncoderGraph    frames (B, S, S, 3) uint8 -> features (B, feature_dim)
                    (the backbone, grid pooling and the memory's input projection; key frames
                    only: thumbnails come from stream.model.keyframes.thumbnails for every frame)
    MemoryGraph     features, thumbnail, reset (B,) bool, h, c, prev, avg
                    -> context, word_h, word_c (the word LSTM's start), h', c', prev', avg'
    CaptionerGraph  token (N,) int64, context, word_h, word_c -> logp (N, V), word_h', word_c'
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrcn.model import LRCN, MemoryState
from lrcn.onnx_export import export_onnx
from stream.model.bundle import BATCH, GRAPH_IO, GraphSpec, TensorSpec


class EncoderGraph(nn.Module):
    def __init__(self, model: LRCN) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.project = model.memory.project

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, S, S, 3) uint8 -> features (B, feature_dim)."""
        return self.project(self.encoder(frames))


class MemoryGraph(nn.Module):
    def __init__(self, model: LRCN) -> None:
        super().__init__()
        self.memory = model.memory
        self.captioner = model.captioner

    def forward(
        self,
        features: torch.Tensor,
        thumbnail: torch.Tensor,
        reset: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        prev: torch.Tensor,
        avg: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """One frame for B streams.

        features (B, F); thumbnail, prev, avg (B, 3, m, m); reset (B,) bool;
        h, c (layers, B, memory_hidden). Returns context (B, word_embed), word_h and word_c
        (B, word_hidden), then the new h, c, prev, avg.
        """
        cont = (~reset).float().unsqueeze(1)  # (B, 1)
        y, state = self.memory.recur(features.unsqueeze(1), thumbnail.unsqueeze(1), cont,
                                     MemoryState(h, c, prev, avg))  # y: (B, 1, memory_dim)
        context, word_h, word_c = self.captioner.start(y[:, 0])  # word_h: (1, B, word_hidden)
        return context, word_h[0], word_c[0], state.h, state.c, state.prev, state.avg


class CaptionerGraph(nn.Module):
    def __init__(self, model: LRCN) -> None:
        super().__init__()
        self.captioner = model.captioner

    def forward(
        self, token: torch.Tensor, context: torch.Tensor, word_h: torch.Tensor,
        word_c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """token (N,) int64, context (N, E), word_h/word_c (N, H) -> logp (N, V), h', c'."""
        logp, h, c = self.captioner.word_step(token, context, word_h.unsqueeze(0),
                                              word_c.unsqueeze(0))
        return logp, h[0], c[0]


def example_inputs(model: LRCN, batch: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random inputs of every graph for ``batch`` streams (resets mixed), for export and tests."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    S, m = cfg.input_size, cfg.thumb_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    return {
        "encoder": {"frames": torch.randint(0, 256, (batch, S, S, 3), generator=g,
                                            dtype=torch.uint8)},
        "memory": {"features": rand(batch, cfg.feature_dim), "thumbnail": rand(batch, 3, m, m),
                   "reset": torch.arange(batch) % 2 == 0,
                   "h": rand(cfg.memory_layers, batch, cfg.memory_hidden) - 0.5,
                   "c": rand(cfg.memory_layers, batch, cfg.memory_hidden) - 0.5,
                   "prev": rand(batch, 3, m, m), "avg": rand(batch, 3, m, m)},
        "captioner": {"token": torch.randint(0, cfg.vocab_size, (batch,), generator=g),
                      "context": rand(batch, cfg.word_embed) * 2 - 1,
                      "word_h": rand(batch, cfg.word_hidden) * 2 - 1,
                      "word_c": rand(batch, cfg.word_hidden) * 2 - 1},
    }


def graph_modules(model: LRCN) -> dict[str, nn.Module]:
    """The wrapper module of each graph, by role."""
    return {"encoder": EncoderGraph(model).eval(), "memory": MemoryGraph(model).eval(),
            "captioner": CaptionerGraph(model).eval()}


def _dtype_name(t: torch.Tensor) -> str:
    return {torch.uint8: "uint8", torch.float32: "float32", torch.bool: "bool",
            torch.int64: "int64"}[t.dtype]


def _spec(name: str, t: torch.Tensor, batch_axis: int) -> TensorSpec:
    shape = [BATCH if i == batch_axis else d for i, d in enumerate(t.shape)]
    return TensorSpec(name, _dtype_name(t), tuple(shape))


def _batch_axis(name: str) -> int:
    # h and c keep the LSTM layout (layers, B, H); everything else has the batch first.
    return 1 if name in ("h", "c", "h_out", "c_out") else 0


def export_graphs(model: LRCN, out: Path, opset: int) -> dict[str, GraphSpec]:
    """Write encoder.onnx, memory.onnx and captioner.onnx into ``out``; return their specs."""
    model.eval()
    specs = {}
    for role, module in graph_modules(model).items():
        inputs = example_inputs(model, batch=2)[role]
        input_names, output_names = GRAPH_IO[role]
        with torch.no_grad():
            outputs = module(*(inputs[n] for n in input_names))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        axes = {name: {_batch_axis(name): BATCH} for name in (*input_names, *output_names)}
        file = f"{role}.onnx"
        export_onnx(module, tuple(inputs[n] for n in input_names), out / file, input_names,
                    output_names, axes, opset=opset)
        specs[role] = GraphSpec(
            file,
            tuple(_spec(n, inputs[n], _batch_axis(n)) for n in input_names),
            tuple(_spec(n, t, _batch_axis(n)) for n, t in zip(output_names, outputs,
                                                              strict=True)))
    return specs
