"""Key frames: which sampled frames pay for the CNN, by one rule for training and runtime.

Every sampled frame gets its thumbnail (:func:`thumbnails`, a few numpy sums), which the motion
stream of the memory reads on every frame. The CNN's appearance features (what is there) are
computed only on key frames and held in between. A frame is a key frame when

* it is the first frame of its stream, or comes with a reset;
* it falls in a new window of ``every`` sample slots, so key frames are never more than
  ``every`` slots apart: window = ``(slot + phase) // every``, slot = ``floor(time * sample_fps)``;
* its thumbnail differs from the last key frame's by more than ``threshold``: the largest change
  of any cell's mean colour on a ``cells`` x ``cells`` grid. Averaging over a cell removes sensor
  noise and compression artefacts, while a new object in one cell still shows in that cell.

The phase (0 <= phase < ``every``) shifts a stream's window grid. With phase 0 for all, cameras
started together would force their key frames into the same slots, hence the same batches, and
the batches where every camera runs the CNN set the p99 latency. Live streams therefore take
:meth:`KeyFrameRule.phase` of their stream id: ``zlib.crc32(utf-8 of the id) % every``, the same
in every process and on every run (Python's ``hash()`` of a string is salted per process), so
that cameras with different ids spread their forced key frames over the window. Training and
evaluation step sequences, not cameras: they keep phase 0 (the default everywhere).

The rule looks back only to the start of the current window, so a chunk of a long video that
starts decoding ``every`` slots early (:attr:`KeyFrameRule.window`) rebuilds the whole video's
schedule exactly from its second window on, whatever the phase: the window that holds the
chunk's first own slot starts at most ``every - 1`` slots before it, and a chunk's frames must
use its video's phase, not one of their own.

Example:
    >>> rule = KeyFrameRule(every=10, threshold=0.1)
    >>> schedule = KeyFrameSchedule(rule)
    >>> thumbs = np.zeros((3, 3, 8, 8), np.float32); thumbs[2] += 0.5
    >>> [schedule.decide(sig, slot) for slot, sig in enumerate(signature(rule, thumbs))]
    [True, False, True]
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stream.media.frames import TIME_EPS


@dataclass(frozen=True)
class KeyFrameRule:
    """The model's key-frame settings (stored in bundle.json as ``keyframes``)."""

    every: int = 1  # at most this many sample slots between key frames; 1: every frame
    threshold: float = 0.0  # largest cell-mean change (0..1) that still holds the features
    cells: int = 7  # the change is measured on a cells x cells grid of the thumbnail

    def __post_init__(self) -> None:
        for name in ("every", "cells"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"keyframes.{name} must be an integer, got {value!r}")
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool):
            raise ValueError(f"keyframes.threshold must be a number, got {self.threshold!r}")
        if self.every < 1 or self.cells < 1:
            raise ValueError(f"keyframes.every and keyframes.cells must be at least 1, got "
                             f"{self.every} and {self.cells}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"keyframes.threshold must be a number >= 0, got {self.threshold}")

    @property
    def encodes_every_frame(self) -> bool:
        """Whether every frame is a key frame (the CNN runs on all of them)."""
        return self.every == 1

    def window(self, sample_fps: float) -> float:
        """Seconds of frames before a point that rebuild the schedule there exactly.

        With any phase: the window holding the point's slot starts at most ``every - 1``
        slots before it, and from that window's first frame on the schedule depends only on
        the frames of that window.
        """
        return self.every / sample_fps

    def phase(self, stream: str) -> int:
        """The window grid's phase for the stream of id ``stream``: ``crc32(id) % every``.

        Deterministic across processes and runs (not Python's salted ``hash()``), so a stream
        keeps its phase when it resumes elsewhere, and the chunks of a video share one.

        Example:
            >>> KeyFrameRule(every=16).phase("cam1"), KeyFrameRule().phase("cam1")
            (6, 0)
        """
        # surrogatepass: an id made from a file name that is not UTF-8 still encodes
        return zlib.crc32(stream.encode("utf-8", "surrogatepass")) % self.every

    def check_phase(self, phase: int) -> None:
        """Raise ValueError unless ``phase`` is an integer in [0, every)."""
        if (not isinstance(phase, (int, np.integer)) or isinstance(phase, bool)
                or not 0 <= phase < self.every):
            raise ValueError(f"a key-frame phase must be an integer in [0, {self.every}), "
                             f"got {phase!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


EVERY_FRAME = KeyFrameRule()


def thumbnails(frames: np.ndarray, pool: int) -> np.ndarray:
    """The motion stream's input: (B, S, S, 3) uint8 -> (B, 3, S/pool, S/pool) float32 in [0, 1].

    Each pixel is the mean of a ``pool`` x ``pool`` block, from exact integer sums, so that it
    is bit for bit the same wherever it is computed.
    """
    height, width = frames.shape[1:3]
    if height % pool or width % pool:
        raise ValueError(f"frames of {width}x{height} do not divide into {pool}x{pool} blocks")
    # Strided adds are ten times faster than numpy's reduction over two non-adjacent axes.
    dtype = np.uint16 if pool * pool * 255 <= np.iinfo(np.uint16).max else np.uint32
    rows: np.ndarray = frames[:, 0::pool].astype(dtype)  # (B, m, S, 3)
    for k in range(1, pool):
        rows += frames[:, k::pool]
    sums: np.ndarray = rows[:, :, 0::pool].copy()  # (B, m, m, 3)
    for k in range(1, pool):
        sums += rows[:, :, k::pool]
    means = sums.astype(np.float32) / np.float32(pool * pool) / np.float32(255.0)
    return np.ascontiguousarray(means.transpose(0, 3, 1, 2))  # (B, 3, m, m)


def signature(rule: KeyFrameRule, thumbs: np.ndarray) -> np.ndarray:
    """Cell means of thumbnails: (..., 3, m, m) -> (..., 3, cells, cells) float32.

    Cells split the thumbnail as adaptive average pooling does (sizes differ by at most one).
    """
    m = thumbs.shape[-1]
    cells = min(rule.cells, m)
    starts = np.array([i * m // cells for i in range(cells)])
    sizes = np.diff(np.append(starts, m)).astype(np.float32)
    rows = np.add.reduceat(thumbs, starts, axis=-2)
    sums = np.add.reduceat(rows, starts, axis=-1)
    return (sums / (sizes[:, None] * sizes[None, :])).astype(np.float32)


@dataclass(frozen=True)
class FrameSignals:
    """One frame's cheap signals, computed where the frame is made (a decoder thread) so that
    the inference thread only reads them: the motion thumbnail and the key-frame signature.

    Bit for bit what :func:`thumbnails` and :func:`signature` give for the same frame in a
    batch (exact integer sums, then per-cell means).
    """

    pool: int  # the bundle's motion_pool
    rule: KeyFrameRule  # the rule the captioning core applies (its cells)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S, S, 3) uint8 -> thumbnail (3, m, m) and signature (3, cells, cells), float32."""
        thumb = thumbnails(rgb[None], self.pool)  # (1, 3, m, m)
        return thumb[0], signature(self.rule, thumb)[0]


def sample_slot(time: float, sample_fps: float) -> int:
    """The sampling grid's slot of a frame at ``time`` seconds."""
    return math.floor(time * sample_fps + TIME_EPS)  # a time on the grid is in its slot


class KeyFrameSchedule:
    """One stream's place in the schedule: its phase, the last key frame's window and signature."""

    def __init__(self, rule: KeyFrameRule, phase: int = 0) -> None:
        rule.check_phase(phase)
        self.rule = rule
        self.phase = int(phase)
        self._window: int | None = None
        self._signature: np.ndarray | None = None

    def decide(self, sig: np.ndarray, slot: int, reset: bool = False) -> bool:
        """Whether the frame with signature ``sig`` in sample slot ``slot`` is a key frame."""
        window = (slot + self.phase) // self.rule.every
        key = (reset or self.rule.encodes_every_frame or self._signature is None
               or window != self._window
               or float(np.abs(sig - self._signature).max()) > self.rule.threshold)
        if key:
            self._window, self._signature = window, sig
        return key


def key_frames(rule: KeyFrameRule, sigs: np.ndarray, slots: Iterable[int],
               phase: int = 0) -> np.ndarray:
    """The key-frame flags of one sequence that starts fresh, from its frames' signatures
    (T, 3, cells, cells) and sample slots (T,): (T,) bool."""
    schedule = KeyFrameSchedule(rule, phase)
    return np.array([schedule.decide(s, int(slot)) for s, slot in zip(sigs, slots, strict=True)],
                    np.bool_)


def held_index(keys: np.ndarray) -> np.ndarray:
    """For each frame, the index of the key frame whose features it uses: (T,) bool -> (T,) int.

    The first frame must be a key frame.
    """
    if len(keys) and not keys[0]:
        raise ValueError("the first frame of a sequence must be a key frame")
    index = np.where(keys, np.arange(len(keys)), 0)
    return np.maximum.accumulate(index)
