"""The LRCN model: frame encoder, recurrent memory with a motion stream, and word captioner.

Data flow for one stream, one sampled frame at a time (``step``), or a whole sequence at once
(``forward``), with identical results:

    frame (H, W, 3) uint8 --FrameEncoder (key frames only)--> appearance (F,), held until the next
    frame (H, W, 3) uint8 --stream.model.keyframes.thumbnails (every frame)--> thumbnail (3, m, m)
    appearance, thumbnail, cont, state --Memory--> memory output (H_mem,), new state
    memory output --Captioner (greedy / beam)--> caption tokens

``cont`` is the Caffe LRCN continuation flag: 0 at the first frame of a sequence (or after a
discontinuity) clears the carried state, 1 carries it. The motion stream keeps the previous
frame's thumbnail and a running average of thumbnails in the state, like ``h`` and ``c``, and
sees the differences to them: deep pooled features hardly change when a shape moves a few pixels,
while a pixel difference shows the direction of motion and growth directly.

Key frames (:mod:`stream.model.keyframes`): the CNN runs only where the frames changed, and the
memory is trained on appearance held between key frames exactly as the runtime holds it.

The FrameEncoder is stateless (the batched ONNX encoder); Memory and Captioner are the small
step graphs that carry per-stream state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrcn.backbones import (
    BACKBONE_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    backbone_channels,
    build_backbone,
)
from lrcn.vocab import BOS_ID, EOS_ID, PAD_ID
from stream.model.keyframes import (
    KeyFrameRule,
    held_index,
    key_frames,
    sample_slot,
    signature,
    thumbnails,
)


def option(default: Any, help: str, **argparse_settings: Any) -> Any:
    """A config field that is also a command-line option (``lrcn.train`` generates its options
    from these: ``--field-name``, typed by the field, with this help and default)."""
    return field(default=default, metadata={"help": help, **argparse_settings})


@dataclass(frozen=True)
class LRCNConfig:
    """Every hyperparameter that rebuilds the model (saved in checkpoints and bundles)."""

    vocab_size: int
    backbone: str = option("efficientnet_lite0", "frame CNN", choices=BACKBONE_NAMES)
    # On the command line: --weights imagenet|none.
    pretrained: bool = option(True, "start from ImageNet weights (installed offline)")
    input_size: int = option(224, "square RGB input, pixels")
    pool: str = option("grid", "global average, or a GRID x GRID average grid (keeps position)",
                       choices=("avg", "grid"))
    grid: int = option(3, "grid cells per side")
    finetune: bool = option(False, "train the backbone too, end to end (frames are decoded into "
                                   "memory, no feature cache; slow on a CPU); otherwise it is "
                                   "frozen and its features are cached")
    feature_dim: int = option(256, "projection of the pooled appearance features")
    motion: bool = option(True, "the frame-difference motion stream (--no-motion drops it)")
    motion_pool: int = option(4, "thumbnail downscale factor for the motion stream (the input "
                                 "averaged over MOTION_POOL x MOTION_POOL pixels)")
    motion_channels: int = option(48, "channels of the motion stream's convolutions")
    motion_dim: int = option(128, "the motion stream's feature size")
    motion_decay: float = option(0.7, "running-average weight of past thumbnails")
    motion_stats: bool = option(False, "also feed the motion stream's change maps' mass and "
                                       "centroid (a size signal for slow growing and shrinking)")
    object_colour: bool = option(False, "also feed the motion stream the colour of what stands "
                                        "out from the thumbnail's fitted background (see "
                                        "ObjectColour; colour words then need not rest on "
                                        "ImageNet features alone)")
    memory_layers: int = option(2, "stacked LSTM layers of the memory")
    memory_hidden: int = option(384, "the memory's hidden size")
    word_embed: int = option(64, "word embedding size")
    word_hidden: int = option(256, "the word LSTM's hidden size")
    max_caption_len: int = option(16, "tokens per caption including <eos>")
    dropout: float = option(0.1, "dropout")
    key_every: int = option(1, "key frames (the CNN runs on them, the others hold their "
                               "features) at most this many sampled frames apart; 1: every "
                               "frame")
    key_threshold: float = option(0.0, "a frame whose cell-mean colours differ from the last key "
                                       "frame's by more than this (0..1) is a key frame")
    key_cells: int = option(7, "cells per side of the grid that change is measured on")

    def __post_init__(self) -> None:
        if self.pool not in ("avg", "grid"):
            raise ValueError(f"pool must be 'avg' or 'grid', got {self.pool!r}")
        if self.input_size % self.motion_pool:
            raise ValueError(f"input_size {self.input_size} is not a multiple of motion_pool "
                             f"{self.motion_pool}")
        self.keyframes  # noqa: B018 - validates the key-frame settings

    @property
    def keyframes(self) -> KeyFrameRule:
        """The key-frame rule (checks its settings)."""
        return KeyFrameRule(self.key_every, self.key_threshold, self.key_cells)

    @property
    def cells(self) -> int:
        """Spatial cells of the pooled appearance feature."""
        return self.grid * self.grid if self.pool == "grid" else 1

    @property
    def appearance_dim(self) -> int:
        """Length of the encoder's pooled appearance vector."""
        return backbone_channels(self.backbone) * self.cells

    @property
    def lstm_input_dim(self) -> int:
        """Per-frame input of the memory LSTM: projected appearance (+ motion features)."""
        return self.feature_dim + (self.motion_dim if self.motion else 0)

    @property
    def memory_dim(self) -> int:
        """Memory output: the top LSTM layer's output next to the frame's own input."""
        return self.memory_hidden + self.lstm_input_dim

    @property
    def thumb_size(self) -> int:
        """Side of the motion stream's thumbnail."""
        return self.input_size // self.motion_pool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRCNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return cls(**data)


class MemoryState(NamedTuple):
    """Recurrent state of a batch of streams.

    h, c: (layers, B, memory_hidden); prev, avg: (B, 3, m, m) thumbnails (motion stream).
    """

    h: torch.Tensor
    c: torch.Tensor
    prev: torch.Tensor
    avg: torch.Tensor


class FrameEncoder(nn.Module):
    """Stateless per-frame encoder: uint8 RGB frames -> pooled appearance features."""

    def __init__(self, config: LRCNConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, config.pretrained)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        self.set_finetune(config.finetune)
        with torch.no_grad():  # the feature map's size, fixed for a given input size
            self.backbone.eval()
            probe = self.backbone(torch.zeros(1, 3, config.input_size, config.input_size))
            self.backbone.train()
        side = config.grid if config.pool == "grid" else 1
        self.cells = _grid_cells(probe.shape[2], probe.shape[3], side)

    def set_finetune(self, finetune: bool) -> None:
        """Freeze the backbone (features can then be cached) or let it train."""
        for p in self.backbone.parameters():
            p.requires_grad_(finetune)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode a batch of frames: (N, S, S, 3) uint8 RGB, S = config.input_size ->
        appearance (N, appearance_dim) float."""
        x = frames.permute(0, 3, 1, 2).float()  # (N, 3, S, S), 0..255
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        features = self.backbone((x - mean) / std)  # (N, C, h, w)
        # Static cells (as adaptive_avg_pool2d would choose) export to ONNX as plain slices.
        cells = [features[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for r0, r1, c0, c1 in self.cells]
        return torch.stack(cells, dim=2).flatten(1)  # (N, C * cells)


def _grid_cells(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    """Row-major (r0, r1, c0, c1) cells of a side x side grid, as adaptive average pooling."""

    def bounds(n: int) -> list[tuple[int, int]]:
        return [(i * n // side, -(-(i + 1) * n // side)) for i in range(side)]

    return [(r0, r1, c0, c1) for r0, r1 in bounds(height) for c0, c1 in bounds(width)]


# Motion-stream input channels per frame: RGB thumbnail (3), its differences to the previous
# thumbnail (3) and to the running average (3), and the same three for the foreground map (3).
MOTION_CHANNELS = 12


def foreground(thumbs: torch.Tensor) -> torch.Tensor:
    """How far each pixel is from the frame's mean colour: (..., 3, m, m) -> (..., 1, m, m).

    Its change over time is positive where an object arrives and negative where it leaves,
    whatever the object's and the background's colours, so the direction of motion (and growth
    versus shrinking) reads the same for a dark shape on a light ground and the reverse.
    """
    mean = thumbs.mean(dim=(-2, -1), keepdim=True)
    return (thumbs - mean).abs().sum(dim=-3, keepdim=True)


class ObjectColour(nn.Module):
    """The colour of what stands out in each thumbnail: (N, 3, m, m) in [0, 1] ->
    (N, OBJECT_COLOUR).

    The background is fitted per channel as a quadratic surface over the thumbnail (least
    squares, a fixed projection), so flat, graded and vignetted grounds leave little residual;
    pixels then weigh by the fourth power of their residual, so the few pixels of a shape
    outweigh noise and texture. Returns the object's RGB (centred on mid-gray), its difference to
    the fitted background under it, and its chroma (RGB less its own gray level), each scaled to
    about unit range; on a blank frame the last six are zero.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        y, x = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                              torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
        x, y = x.flatten(), y.flatten()
        basis = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], dim=1)  # (m*m, 6)
        self.register_buffer("basis", basis.float(), persistent=False)
        self.register_buffer("fit", torch.linalg.pinv(basis).float(), persistent=False)

    def forward(self, thumbs: torch.Tensor) -> torch.Tensor:
        flat = thumbs.flatten(2)  # (N, 3, m*m)
        coefficients = flat @ self.get_buffer("fit").T  # (N, 3, 6)
        residual = flat - coefficients @ self.get_buffer("basis").T  # (N, 3, m*m)
        weight = residual.abs().sum(dim=1, keepdim=True) ** 4  # (N, 1, m*m)
        weight = weight / (weight.sum(dim=2, keepdim=True) + _COLOUR_EPS)
        rgb = (flat * weight).sum(dim=2)  # (N, 3)
        contrast = (residual * weight).sum(dim=2)
        chroma = rgb - rgb.mean(dim=1, keepdim=True)
        return _COLOUR_GAIN * torch.cat([rgb - 0.5, contrast, chroma], dim=1)


OBJECT_COLOUR = 9
_COLOUR_GAIN = 2.0
_COLOUR_EPS = 1e-9

# Size signal: the foreground's mass, and the mass and centroid of its changes since the previous
# frame and since the running average.
MOTION_STATS = 7
_STATS_GAIN = 200.0


class MotionStream(nn.Module):
    """Small CNN over a thumbnail, its foreground map, and their changes over time.

    With ``motion_stats`` it also sees seven numbers that a CNN with pooled outputs reads only
    roughly: how much foreground there is, and the sum and first moments of its changes. A
    growing object's change map sums above zero, a shrinking one's below, and a still one's to
    noise, however slowly the size changes; the memory integrates them over time. With
    ``object_colour`` it sees the colour of what stands out (:class:`ObjectColour`).
    """

    def __init__(self, config: LRCNConfig) -> None:
        super().__init__()
        ch = config.motion_channels
        self.convs = nn.Sequential(
            nn.Conv2d(MOTION_CHANNELS, ch // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(ch // 2, ch, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.stats = config.motion_stats
        self.colour = ObjectColour(config.thumb_size) if config.object_colour else None
        extra = MOTION_STATS * self.stats + OBJECT_COLOUR * config.object_colour
        self.out = nn.Linear(2 * ch + extra, config.motion_dim)
        ramp = torch.linspace(-1.0, 1.0, config.thumb_size)
        self.register_buffer("ramp_x", ramp.view(1, 1, -1), persistent=False)
        self.register_buffer("ramp_y", ramp.view(1, -1, 1), persistent=False)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """(N, MOTION_CHANNELS, m, m) -> (N, motion_dim)."""
        # channels_last is several times faster for these convolutions' backward pass on a CPU.
        y = self.convs(stacked.contiguous(memory_format=torch.channels_last))  # (N, ch, m/8, m/8)
        # Max pooling finds the moving edge wherever the object is; the average keeps its extent.
        pooled = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)  # (N, 2 * ch)
        if self.stats:
            pooled = torch.cat([pooled, self._stats(stacked)], dim=1)
        if self.colour is not None:
            pooled = torch.cat([pooled, self.colour(stacked[:, :3])], dim=1)
        return F.relu(self.out(pooled))

    def _stats(self, stacked: torch.Tensor) -> torch.Tensor:
        """(N, MOTION_STATS): foreground mass; mass, x and y moments of both change maps."""
        fg = stacked[:, 9]  # (N, m, m), see Memory._motion_inputs
        moments = [fg.mean(dim=(1, 2))]
        ramp_x, ramp_y = self.get_buffer("ramp_x"), self.get_buffer("ramp_y")
        for change in (stacked[:, 10], stacked[:, 11]):
            moments += [change.mean(dim=(1, 2)), (change * ramp_x).mean(dim=(1, 2)),
                        (change * ramp_y).mean(dim=(1, 2))]
        # Signed log: linear near zero, where slow changes are, logarithmic for fast ones.
        x = _STATS_GAIN * torch.stack(moments, dim=1)
        return torch.sign(x) * torch.log1p(x.abs())


class Memory(nn.Module):
    """Projection + motion stream + stacked LSTM carried across frames."""

    # Differences of thumbnails are small numbers; scale them to the thumbnail's range.
    _DIFF_GAIN = 4.0

    def __init__(self, config: LRCNConfig) -> None:
        super().__init__()
        self.config = config
        self.project = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.appearance_dim, config.feature_dim),
            nn.ReLU())
        self.motion = MotionStream(config) if config.motion else None
        self.lstm = nn.LSTM(config.lstm_input_dim, config.memory_hidden, config.memory_layers,
                            dropout=config.dropout if config.memory_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)

    def init_state(self, batch: int, device: torch.device | None = None) -> MemoryState:
        """Zero state for ``batch`` streams (the first step must have cont = 0 anyway)."""
        cfg = self.config
        zeros = torch.zeros(cfg.memory_layers, batch, cfg.memory_hidden, device=device)
        thumb = torch.zeros(batch, 3, cfg.thumb_size, cfg.thumb_size, device=device)
        return MemoryState(zeros, zeros.clone(), thumb, thumb.clone())

    def _motion_inputs(
        self, thumbs: torch.Tensor, cont: torch.Tensor, state: MemoryState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack thumbnails with their differences to the previous one and the running average.

        thumbs: (B, T, 3, m, m); cont: (B, T).
        Returns (B, T, MOTION_CHANNELS, m, m) and the last prev and avg thumbnails.
        At a reset the past is the present, so both differences are zero there.
        """
        reset = (cont == 0).view(*cont.shape, 1, 1, 1)  # (B, T, 1, 1, 1)
        prevs = torch.cat([state.prev.unsqueeze(1), thumbs[:, :-1]], dim=1)  # (B, T, 3, m, m)
        prevs = torch.where(reset, thumbs, prevs)
        decay = self.config.motion_decay
        avg, avgs = state.avg, []
        for t in range(thumbs.shape[1]):
            avg = torch.where(reset[:, t], thumbs[:, t], avg)
            avgs.append(avg)
            avg = decay * avg + (1 - decay) * thumbs[:, t]
        past_avg = torch.stack(avgs, dim=1)  # (B, T, 3, m, m)
        return self.motion_stack(thumbs, prevs, past_avg), thumbs[:, -1], avg

    def motion_stack(
        self, thumbs: torch.Tensor, prevs: torch.Tensor, past_avg: torch.Tensor
    ) -> torch.Tensor:
        """The motion stream's input from each frame's thumbnail, the previous frame's and the
        running average before it, all (B, T, 3, m, m) -> (B, T, MOTION_CHANNELS, m, m)."""
        fg, fg_prev, fg_avg = foreground(thumbs), foreground(prevs), foreground(past_avg)
        gain = self._DIFF_GAIN
        return torch.cat([thumbs, gain * (thumbs - prevs), gain * (thumbs - past_avg),
                          fg, gain * (fg - fg_prev), gain * (fg - fg_avg)], dim=2)

    def forward(
        self,
        appearance: torch.Tensor,
        thumbs: torch.Tensor,
        cont: torch.Tensor,
        state: MemoryState,
    ) -> tuple[torch.Tensor, MemoryState]:
        """Run T steps.

        Args:
            appearance: (B, T, appearance_dim); thumbs: (B, T, 3, m, m);
            cont: (B, T) float, 0 resets the state before that step, 1 carries it.
            state: carried state from the previous call (or ``init_state``).
        Returns:
            memory output (B, T, memory_dim) and the state after the last step.
        """
        return self.recur(self.project(appearance), thumbs, cont, state)

    def recur(
        self,
        features: torch.Tensor,
        thumbs: torch.Tensor,
        cont: torch.Tensor,
        state: MemoryState,
    ) -> tuple[torch.Tensor, MemoryState]:
        """:meth:`forward` after the projection: features (B, T, feature_dim), as the bundle's
        encoder graph emits them (the projection is folded into that graph)."""
        B, T = cont.shape
        z = features
        prev, avg = state.prev, state.avg
        if self.motion is not None:
            stacked, prev, avg = self._motion_inputs(thumbs, cont, state)  # (B, T, 12, m, m)
            motion = self.motion(stacked.flatten(0, 1)).view(B, T, -1)  # (B, T, motion_dim)
            z = torch.cat([z, motion], dim=2)
        z = z.transpose(0, 1)  # (T, B, in_dim)
        h, c = state.h, state.c
        # One fused LSTM call per run of steps without a reset (in training: one per chunk);
        # stepping it frame by frame is exactly equivalent, only slower.
        # (Step 0 always starts a run, so a one-step call has no data-dependent branch and
        # traces to a fixed ONNX graph.)
        resets = [t for t in range(1, T) if bool((cont[:, t] == 0).any())]
        bounds = sorted({0, *resets, T})
        outputs = []
        for t0, t1 in zip(bounds[:-1], bounds[1:], strict=True):
            keep = cont[:, t0].view(1, B, 1)
            out, (h, c) = self.lstm(z[t0:t1], (h * keep, c * keep))  # (t1 - t0, B, H)
            outputs.append(out)
        y = torch.cat(outputs).transpose(0, 1)  # (B, T, memory_hidden)
        # The skip connection gives the captioner the current frame directly (what is there),
        # while the LSTM supplies what changes over time (motion); a deep LSTM alone learns slowly.
        y = self.drop(torch.cat([y, z.transpose(0, 1)], dim=2))  # (B, T, memory_dim)
        return y, MemoryState(h, c, prev, avg)

    def step(
        self, appearance: torch.Tensor, thumb: torch.Tensor, cont: torch.Tensor, state: MemoryState
    ) -> tuple[torch.Tensor, MemoryState]:
        """One frame for B streams: appearance (B, F), thumb (B, 3, m, m), cont (B,)."""
        y, state = self.forward(appearance.unsqueeze(1), thumb.unsqueeze(1), cont.unsqueeze(1),
                                state)
        return y[:, 0], state


class Captioner(nn.Module):
    """Word LSTM conditioned on a memory output (factored LRCN).

    The memory output sets the word LSTM's initial state and is fed, projected, at every word.
    """

    def __init__(self, config: LRCNConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.word_embed, padding_idx=PAD_ID)
        self.context = nn.Linear(config.memory_dim, config.word_embed)
        self.init_h = nn.Linear(config.memory_dim, config.word_hidden)
        self.init_c = nn.Linear(config.memory_dim, config.word_hidden)
        self.lstm = nn.LSTM(2 * config.word_embed, config.word_hidden, batch_first=True)
        self.drop = nn.Dropout(config.dropout)
        self.logits = nn.Linear(config.word_hidden, config.vocab_size)

    def start(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Initial word state from memory outputs (N, memory_dim).

        Returns context (N, word_embed), h (1, N, word_hidden), c (1, N, word_hidden).
        """
        context = torch.tanh(self.context(memory))
        h = torch.tanh(self.init_h(memory)).unsqueeze(0)
        c = self.init_c(memory).unsqueeze(0)
        return context, h, c

    def forward(self, memory: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: memory (N, memory_dim), tokens_in (N, L) -> logits (N, L, V)."""
        context, h, c = self.start(memory)
        words = self.embed(tokens_in)  # (N, L, word_embed)
        ctx = context.unsqueeze(1).expand(-1, tokens_in.shape[1], -1)  # (N, L, word_embed)
        out, _ = self.lstm(torch.cat([words, ctx], dim=2), (h, c))  # (N, L, word_hidden)
        return self.logits(self.drop(out))

    def word_step(
        self, token: torch.Tensor, context: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One word for N captions: token (N,) -> log-probabilities (N, V), h, c."""
        x = torch.cat([self.embed(token), context], dim=1).unsqueeze(1)  # (N, 1, 2 * word_embed)
        out, (h, c) = self.lstm(x, (h, c))
        return F.log_softmax(self.logits(out[:, 0]), dim=-1), h, c


class LRCN(nn.Module):
    """Encoder + memory + captioner; see the module docstring for the data flow."""

    def __init__(self, config: LRCNConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config)
        self.memory = Memory(config)
        self.captioner = Captioner(config)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights that training changes (a frozen ImageNet backbone is rebuilt from its file)."""
        state = self.state_dict()
        if self.config.finetune or not self.config.pretrained:
            return state
        return {k: v for k, v in state.items() if not k.startswith("encoder.backbone.")}

    @torch.no_grad()
    def caption_frames(
        self, frames: torch.Tensor, *, times: Sequence[float] | None = None, beam: int = 1,
        batch: int = 32, sample_fps: float | None = None,
    ) -> list[list[int]]:
        """Caption every frame of one sequence (fresh state), the CNN on key frames only.

        frames (T, S, S, 3) uint8; times (T,) seconds on the grid of ``sample_fps`` (None: one
        sample slot per frame).
        """
        array = frames.numpy()
        thumbs = thumbnails(array, self.config.motion_pool)  # (T, 3, m, m)
        if times is not None and sample_fps is None:
            raise ValueError("frame times need the sample_fps they were sampled at")
        slots = (range(len(array)) if times is None or sample_fps is None
                 else [sample_slot(t, sample_fps) for t in times])
        keys = key_frames(self.config.keyframes, signature(self.config.keyframes, thumbs), slots)
        index = torch.from_numpy(np.flatnonzero(keys))
        appearance = torch.cat([self.encoder(frames[index[i : i + batch]])
                                for i in range(0, len(index), batch)])  # (K, F)
        held = torch.from_numpy(np.searchsorted(index.numpy(), held_index(keys)))  # (T,)
        return self.caption_features(appearance[held], torch.from_numpy(thumbs), beam=beam)

    @torch.no_grad()
    def caption_features(
        self, appearance: torch.Tensor, thumbs: torch.Tensor, beam: int = 1
    ) -> list[list[int]]:
        """Caption encoded frames of one sequence: appearance (T, F) as held between key frames,
        thumbs (T, 3, m, m)."""
        T = appearance.shape[0]
        cont = torch.ones(1, T)
        cont[0, 0] = 0.0
        memory, _ = self.memory(appearance.unsqueeze(0), thumbs.unsqueeze(0), cont,
                                self.memory.init_state(1))
        return decode(self.captioner, memory[0], self.config.max_caption_len, beam)


def decode(
    captioner: Captioner, memory: torch.Tensor, max_len: int, beam: int = 1
) -> list[list[int]]:
    """Greedy (beam=1) or beam search decoding of N captions from memory outputs (N, H).

    Returns token ids per caption, without ``<bos>`` and ``<eos>``.
    """
    if beam <= 1:
        return _greedy(captioner, memory, max_len)
    return _beam_search(captioner, memory, max_len, beam)


def _greedy(captioner: Captioner, memory: torch.Tensor, max_len: int) -> list[list[int]]:
    N = memory.shape[0]
    context, h, c = captioner.start(memory)
    token = torch.full((N,), BOS_ID, dtype=torch.long)
    done = torch.zeros(N, dtype=torch.bool)
    words = []
    for _ in range(max_len):
        logp, h, c = captioner.word_step(token, context, h, c)
        token = logp.argmax(dim=1)
        token = torch.where(done, torch.full_like(token, EOS_ID), token)
        words.append(token)
        done |= token == EOS_ID
        if bool(done.all()):
            break
    ids = torch.stack(words, dim=1).tolist()  # (N, L)
    return [_strip(row) for row in ids]


def _beam_search(
    captioner: Captioner, memory: torch.Tensor, max_len: int, beam: int
) -> list[list[int]]:
    N, V = memory.shape[0], captioner.config.vocab_size
    context, h, c = captioner.start(memory)
    # Expand every caption to `beam` hypotheses: (N * beam, ...).
    context = context.repeat_interleave(beam, dim=0)
    h, c = h.repeat_interleave(beam, dim=1), c.repeat_interleave(beam, dim=1)
    scores = torch.full((N, beam), float("-inf"))
    scores[:, 0] = 0.0  # all hypotheses start identical: keep one alive
    token = torch.full((N * beam,), BOS_ID, dtype=torch.long)
    finished = torch.zeros(N, beam, dtype=torch.bool)
    history = torch.zeros(N, beam, 0, dtype=torch.long)
    for _ in range(max_len):
        logp, h, c = captioner.word_step(token, context, h, c)
        logp = logp.view(N, beam, V)
        # A finished hypothesis only extends with <eos> at no cost, so its score stays put.
        eos_only = torch.full((V,), float("-inf"))
        eos_only[EOS_ID] = 0.0
        logp = torch.where(finished.unsqueeze(2), eos_only, logp)
        total = (scores.unsqueeze(2) + logp).view(N, beam * V)
        scores, flat = total.topk(beam, dim=1)  # (N, beam)
        origin, token_nb = flat // V, flat % V
        kept = history.gather(1, origin.unsqueeze(2).expand(-1, -1, history.shape[2]))
        history = torch.cat([kept, token_nb.unsqueeze(2)], dim=2)  # (N, beam, steps)
        finished = finished.gather(1, origin) | (token_nb == EOS_ID)
        rows = (origin + torch.arange(N).unsqueeze(1) * beam).view(-1)
        h, c = h[:, rows], c[:, rows]
        token = token_nb.view(-1)
        if bool(finished.all()):
            break
    best = scores.argmax(dim=1)
    return [_strip(history[n, best[n]].tolist()) for n in range(N)]


def _strip(ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        out.append(i)
    return out


def caption_targets(
    token_ids: list[list[int]], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing inputs and targets for captions given as ids ending in ``<eos>``.

    Returns tokens_in (N, L) starting with ``<bos>`` and targets (N, L) padded with ``<pad>``.
    """
    L = min(max(len(t) for t in token_ids), max_len)
    tokens_in = torch.full((len(token_ids), L), PAD_ID, dtype=torch.long)
    targets = torch.full((len(token_ids), L), PAD_ID, dtype=torch.long)
    for n, ids in enumerate(token_ids):
        ids = ids[:L]
        targets[n, : len(ids)] = torch.tensor(ids)
        tokens_in[n, 0] = BOS_ID
        tokens_in[n, 1 : len(ids)] = torch.tensor(ids[:-1])
    return tokens_in, targets
