"""The three step graphs of a bundle as small PyTorch modules, and their ONNX export.

Each wrapper reuses the model's own modules, so the exported graph computes exactly what the
model computes; the wrappers only fix the interface the runtime expects (stream/model/bundle.py):
state as explicit inputs and outputs, the batch axis dynamic everywhere and the memory's steps
axis too.

    EncoderGraph    frames (B, S, S, 3) uint8 -> features (B, feature_dim)
                    (the backbone, grid pooling and the memory's input projection; key frames
                    only: thumbnails come from stream.model.keyframes.thumbnails for every frame)
    MemoryGraph     features (B, T, F), thumbnail (B, T, 3, m, m), reset (B,) bool, h, c,
                    prev, avg -> context, word_h, word_c (B, T, ...: the word LSTM's start),
                    h', c', prev', avg'
    CaptionerGraph  token (N,) int64, context, word_h, word_c -> logp (N, V), word_h', word_c'
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrcn.model import LRCN
from lrcn.onnx_export import export_onnx
from stream.model.bundle import BATCH, GRAPH_IO, STEPS, GraphSpec, TensorSpec


class EncoderGraph(nn.Module):
    def __init__(self, model: LRCN) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.project = model.memory.project

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, S, S, 3) uint8 -> features (B, feature_dim)."""
        return self.project(self.encoder(frames))


class MemoryGraph(nn.Module):
    """T frames of B streams in one call: the memory, and each frame's word LSTM start.

    The same computation as ``model.memory.recur`` over the T frames followed by
    ``captioner.start``, written without Python loops over T so that the traced graph keeps T
    dynamic: a reset is allowed before the first frame only (the runtime splits a stream's
    frames at any other reset), which turns the running average of the motion stream into one
    matrix product and the stacked LSTM into one call over all T.

    Greedy decoding stays outside (the captioner graph, one call per word for all frames):
    unrolled here to the 16 words of the longest caption it cost 0.73 CPU ms per call at batch
    1 against 0.31 for the memory alone, more than the runtime's loop, which stops at <eos>.
    """

    def __init__(self, model: LRCN) -> None:
        super().__init__()
        self.memory = model.memory
        self.captioner = model.captioner
        self.decay = model.config.motion_decay
        self.thumb = model.config.thumb_size  # m

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
        """features (B, T, F); thumbnail (B, T, 3, m, m); reset (B,) bool (before frame 0);
        h, c (layers, B, memory_hidden); prev, avg (B, 3, m, m).

        Returns context (B, T, word_embed), word_h and word_c (B, T, word_hidden): each frame's
        word LSTM start, then the new h, c, prev, avg.
        """
        B, T = features.shape[0], features.shape[1]
        z = features
        if self.memory.motion is not None:
            prev = self._restart(reset, thumbnail[:, 0], prev)
            avg = self._restart(reset, thumbnail[:, 0], avg)
            prevs = torch.cat([prev.unsqueeze(1), thumbnail[:, :-1]], dim=1)  # (B, T, 3, m, m)
            averages = self._running_average(thumbnail, avg)  # (B, T + 1, 3, m, m)
            stacked = self.memory.motion_stack(thumbnail, prevs, averages[:, :-1])
            motion = self.memory.motion(stacked.flatten(0, 1)).reshape(B, T, -1)
            z = torch.cat([z, motion], dim=2)  # (B, T, in_dim)
            m = self.thumb
            prev, avg = thumbnail[:, -1], averages[:, -1].reshape(B, 3, m, m)
        keep = (~reset).float().view(1, -1, 1)  # (1, B, 1)
        z = z.transpose(0, 1)  # (T, B, in_dim)
        y, (h, c) = self.memory.lstm(z, (h * keep, c * keep))  # (T, B, memory_hidden)
        y = torch.cat([y, z], dim=2).transpose(0, 1)  # (B, T, memory_dim), the skip as in recur
        context, word_h, word_c = self.captioner.start(y.flatten(0, 1))  # (B*T, E), (1, B*T, H)
        E, H = self.captioner.context.out_features, self.captioner.init_h.out_features
        return (context.reshape(B, T, E), word_h[0].reshape(B, T, H),
                word_c[0].reshape(B, T, H), h, c, prev, avg)

    @staticmethod
    def _restart(reset: torch.Tensor, first: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        """At a reset the past is the present (the first frame): (B, 3, m, m)."""
        return torch.where(reset.view(-1, 1, 1, 1), first, past)

    def _running_average(self, thumbs: torch.Tensor, avg: torch.Tensor) -> torch.Tensor:
        """The motion stream's running average before each frame and after the last:
        thumbs (B, T, 3, m, m), avg (B, 3, m, m) before frame 0 -> (B, T + 1, 3, m, m).

        avg_t = d^t avg_0 + (1 - d) * sum_{s < t} d^(t - 1 - s) thumbs_s, which is what the
        model's loop computes one frame at a time."""
        T = thumbs.shape[1]
        t = torch.arange(T + 1, dtype=torch.float32).unsqueeze(1)  # (T + 1, 1)
        s = torch.arange(T, dtype=torch.float32).unsqueeze(0)  # (1, T)
        age = t - 1 - s  # (T + 1, T): how many decays thumbs_s has seen by time t
        weights = torch.where(age >= 0, (1 - self.decay) * self.decay ** age.clamp(min=0),
                              torch.zeros_like(age))
        start = self.decay ** t.view(1, -1, 1)  # (1, T + 1, 1)
        flat = thumbs.flatten(2)  # (B, T, 3*m*m)
        out = start * avg.flatten(1).unsqueeze(1) + torch.matmul(weights, flat)  # (B, T + 1, .)
        return out.reshape(thumbs.shape[0], -1, 3, self.thumb, self.thumb)


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


def example_inputs(model: LRCN, batch: int, seed: int = 0,
                   steps: int = 3) -> dict[str, dict[str, torch.Tensor]]:
    """Random inputs of every graph for ``batch`` streams (resets mixed) and ``steps`` frames
    of each in the memory graph, for export and tests."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    S, m = cfg.input_size, cfg.thumb_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    return {
        "encoder": {"frames": torch.randint(0, 256, (batch, S, S, 3), generator=g,
                                            dtype=torch.uint8)},
        "memory": {"features": rand(batch, steps, cfg.feature_dim),
                   "thumbnail": rand(batch, steps, 3, m, m),
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


def _dynamic_axes(role: str, name: str) -> dict[int, str]:
    """Which axes of a graph's tensor are dynamic, by index."""
    # h and c keep the LSTM layout (layers, B, H); everything else has the batch first, and the
    # memory's per-frame tensors their steps second.
    if name in ("h", "c", "h_out", "c_out"):
        return {1: BATCH}
    if role == "memory" and name not in ("reset", "prev", "avg", "prev_out", "avg_out"):
        return {0: BATCH, 1: STEPS}
    return {0: BATCH}


def _spec(role: str, name: str, t: torch.Tensor) -> TensorSpec:
    axes = _dynamic_axes(role, name)
    return TensorSpec(name, _dtype_name(t), tuple(axes.get(i, d) for i, d in enumerate(t.shape)))


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
        axes = {name: _dynamic_axes(role, name) for name in (*input_names, *output_names)}
        file = f"{role}.onnx"
        export_onnx(module, tuple(inputs[n] for n in input_names), out / file, input_names,
                    output_names, axes, opset=opset)
        specs[role] = GraphSpec(
            file,
            tuple(_spec(role, n, inputs[n]) for n in input_names),
            tuple(_spec(role, n, t) for n, t in zip(output_names, outputs, strict=True)))
    return specs
