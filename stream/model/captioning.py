"""The captioning core: batched steps of many streams through a bundle's graphs, numpy only.

One call of :meth:`CaptionCore.step` takes a batch of frames, each tagged with the stream it
belongs to, a reset flag and its time, takes every frame's thumbnail and signature (computed
by the caller, e.g. in a decoder thread, or else here), picks the key frames
(:mod:`stream.model.keyframes`, the bundle's rule), runs the encoder graph once over the key frames
of all streams, holds each stream's last key-frame features for its other frames, and steps
every stream's memory with the state that stream carried from its previous frame: one call of
the memory graph takes all the batch's frames of each stream (a file's batch of 8 frames of its
one stream is one call, not 8). Then it decodes one caption per frame, greedy or beam, one
captioner call per word for all of them together::

    core = CaptionCore(open_bundle("models/shapes"))
    captions = core.step(frames, stream_ids=["cam1", "cam2"], resets=[False, False],
                         times=[12.3, 4.5])
    captions[0].text  # 'a red circle moves left'
    captions[0].encoded  # whether the CNN ran on this frame

``encode_every_frame=True`` runs the CNN on every frame instead (for comparison, or for models
whose appearance changes fast); such a model meets held features it was not trained for only
the other way round, so its captions change little.

A stream's state (recurrent state, place in the key-frame schedule, held features) is created on
its first frame and is reset only when the caller says so: at the start of a sequence, or after a
reconnect or other discontinuity. A batch may hold several frames of one stream; they are
stepped in the order given.

The core is not thread-safe: one worker thread owns it (it holds the streams' state).

GPU: with I/O binding (on by default when the graphs run on CUDA or TensorRT) the memory state
stays on the device between steps as long as the same streams come in the same order (the usual
case for a fixed set of live streams), and the word LSTM's state stays there during decoding;
only frames, thumbnails, reset flags, tokens and log-probabilities cross the bus. Any other
batch moves the state through host memory, with the same results. The same code runs on the
CPU provider, which is how the tests cover it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from stream.model.bundle import BATCH, LoadedBundle, zeros
from stream.model.keyframes import (
    EVERY_FRAME,
    KeyFrameSchedule,
    held_index,
    key_frames,
    sample_slot,
    signature,
    thumbnails,
)

_STATE = ("h", "c", "prev", "avg")  # memory.onnx's recurrent state, fed back as "<name>_out"
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

# A numpy array, or an ort.OrtValue on the device (ONNX Runtime ships no type stubs).
Value: TypeAlias = Any


@dataclass(frozen=True)
class Caption:
    """The caption of one frame of one stream."""

    stream: Hashable
    tokens: tuple[int, ...]
    text: str
    logprob: float = 0.0  # log-probability of the tokens and the closing <eos> under the model
    encoded: bool = True  # the CNN ran on this frame (a key frame); else features were held


class _Graph:
    """Runs one session, plainly or through I/O binding with chosen outputs left on the device."""

    def __init__(self, session: ort.InferenceSession, device: str | None) -> None:
        self.session = session
        self.device = device  # None: plain session.run with numpy in and out
        self.outputs = [o.name for o in session.get_outputs()]

    def to_device(self, array: np.ndarray) -> Value:
        if self.device is None:
            return array
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def run(self, feeds: dict[str, Value], keep: Sequence[str] = ()) -> dict[str, Value]:
        """Outputs by name: numpy arrays, or OrtValues on the device for the names in ``keep``."""
        if self.device is None:
            plain = {k: v.numpy() if isinstance(v, ort.OrtValue) else v for k, v in feeds.items()}
            return dict(zip(self.outputs, self.session.run(None, plain), strict=True))
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.outputs:
            binding.bind_output(name, self.device if name in keep else "cpu")
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {name: value if name in keep else value.numpy()
                for name, value in zip(self.outputs, values, strict=True)}


class CaptionCore:
    """Per-stream recurrent state plus batched encode / step / decode over a loaded bundle.

    Args:
        loaded: a bundle from :func:`stream.model.bundle.open_bundle` (validated, sessions created).
        beam: 1 for greedy decoding, more for beam search with that many hypotheses.
        io_binding: keep recurrent state on the device between calls; None = when on a GPU.
        encode_every_frame: run the CNN on every frame, not only on the bundle's key frames.
    """

    def __init__(self, loaded: LoadedBundle, beam: int = 1, io_binding: bool | None = None,
                 encode_every_frame: bool = False):
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        self.bundle = loaded.bundle
        self.beam = beam
        self.keyframes = EVERY_FRAME if encode_every_frame else self.bundle.keyframes
        on_gpu = loaded.providers[0] in _GPU_PROVIDERS
        if io_binding is None:
            io_binding = on_gpu
        device = ("cuda" if on_gpu else "cpu") if io_binding else None
        self._encoder = _Graph(loaded.sessions["encoder"], None)
        self._memory = _Graph(loaded.sessions["memory"], device)
        self._captioner = _Graph(loaded.sessions["captioner"], device)
        memory = self.bundle.graphs["memory"]
        self._state_specs = {name: memory.input(name) for name in _STATE}
        self._batch_axis = {name: spec.shape.index(BATCH)
                            for name, spec in self._state_specs.items()}
        # A new stream's state (zeros), built once rather than on every step.
        self._fresh = {name: np.take(zeros(spec, 1), 0, axis=self._batch_axis[name])
                       for name, spec in self._state_specs.items()}
        self._states: dict[Hashable, dict[str, np.ndarray]] = {}
        self._schedules: dict[Hashable, KeyFrameSchedule] = {}
        self._held: dict[Hashable, np.ndarray] = {}  # the last key frame's features
        self._slots: dict[Hashable, int] = {}  # frames since the reset, for frames without a time
        # With I/O binding: the state of the last stepped streams, still on the device.
        self._resident: tuple[tuple[Hashable, ...], dict[str, Value]] | None = None

    @property
    def streams(self) -> list[Hashable]:
        """Streams that currently carry state."""
        self._flush()
        return list(self._states)

    def state(self, stream_id: Hashable) -> dict[str, np.ndarray]:
        """A copy of a stream's recurrent state (h, c, prev, avg), batch axis removed."""
        self._flush()
        return {name: array.copy() for name, array in self._states[stream_id].items()}

    def forget(self, stream_id: Hashable) -> None:
        """Drop a stream's state (it ended); its next frame, if any, starts fresh."""
        self._flush()
        for table in (self._states, self._schedules, self._held, self._slots):
            table.pop(stream_id, None)  # type: ignore[attr-defined]

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Run the encoder graph: frames (B, S, S, 3) uint8 -> features (B, F)."""
        self._check_frames(frames)
        features: np.ndarray = self._encoder.run({"frames": np.ascontiguousarray(frames)})[
            "features"]
        return features

    def thumbnails(self, frames: np.ndarray) -> np.ndarray:
        """Every frame's motion thumbnail: (B, S, S, 3) uint8 -> (B, 3, m, m) float32."""
        self._check_frames(frames)
        return thumbnails(frames, self.bundle.motion_pool)

    def _thumb_size(self) -> int:
        return self.bundle.input_size // self.bundle.motion_pool

    @staticmethod
    def _check_signals(name: str, array: np.ndarray, n: int, size: int) -> None:
        if (not isinstance(array, np.ndarray) or array.dtype != np.float32
                or array.shape != (n, 3, size, size)):
            got = (f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray)
                   else type(array).__name__)
            raise ValueError(f"{name} must be float32 ({n}, 3, {size}, {size}), got {got}")

    def _check_frames(self, frames: np.ndarray) -> None:
        size = self.bundle.input_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise ValueError(f"frames must be uint8 (B, {size}, {size}, 3), got {frames.dtype} "
                             f"{frames.shape}")

    def step(
        self,
        frames: np.ndarray,
        stream_ids: Sequence[Hashable],
        resets: Sequence[bool] | None = None,
        times: Sequence[float] | None = None,
        *,
        phases: Sequence[int] | None = None,
        thumbs: np.ndarray | None = None,
        signatures: np.ndarray | None = None,
    ) -> list[Caption]:
        """Caption one frame per entry: frames (B, S, S, 3) uint8, RGB at the bundle's size.

        ``resets[i]`` clears stream ``stream_ids[i]``'s state before its frame (a stream's first
        frame always starts from a clear state). ``times[i]`` is the frame's time in seconds,
        which places it on the key-frame rule's sampling grid (without times, each frame of a
        stream is the next sample slot). ``phases[i]`` is the stream's phase of the key-frame
        windows (:meth:`~stream.model.keyframes.KeyFrameRule.phase`; default 0, as in
        training), fixed from the stream's first frame or reset until the next. ``thumbs``
        (B, 3, m, m) and ``signatures`` (B, 3, cells, cells), float32, are the frames'
        thumbnails and key-frame signatures when the caller computed them already (a decoder
        thread, :class:`~stream.model.keyframes.FrameSignals`); else they are computed here.
        Returns B captions in input order.
        """
        n = len(stream_ids)
        if thumbs is None:
            thumbs = self.thumbnails(frames)
        else:
            self._check_frames(frames)
        if len(frames) != n:
            raise ValueError(f"{len(frames)} frames but {n} stream ids")
        self._check_signals("thumbs", thumbs, n, self._thumb_size())
        if signatures is None:
            sigs = signature(self.keyframes, thumbs)
        else:
            self._check_signals("signatures", signatures, n,
                                min(self.keyframes.cells, self._thumb_size()))
            sigs = signatures
        flags = self._flags(resets, n)
        if times is not None and len(times) != n:
            raise ValueError(f"{n} frames but {len(times)} times")
        if times is not None and not all(isinstance(t, (int, float)) and math.isfinite(t)
                                         for t in times):
            raise ValueError(f"frame times must be finite numbers of seconds, got {list(times)}")
        if phases is not None and len(phases) != n:
            raise ValueError(f"{n} frames but {len(phases)} phases")
        # Decide on copies: nothing of a stream's state changes unless the whole step runs.
        schedules: dict[Hashable, KeyFrameSchedule] = {}
        slots: dict[Hashable, int] = {}
        keys = np.zeros(n, np.bool_)
        for i, sid in enumerate(stream_ids):
            phase = 0 if phases is None else phases[i]
            fresh = bool(flags[i]) or (sid not in schedules and sid not in self._schedules)
            if fresh:
                schedules[sid], slots[sid] = KeyFrameSchedule(self.keyframes, phase), -1
            elif sid not in schedules:
                schedules[sid], slots[sid] = copy.copy(self._schedules[sid]), self._slots[sid]
            if schedules[sid].phase != phase:
                raise ValueError(f"stream {sid!r} has key-frame phase {schedules[sid].phase}, "
                                 f"not {phase}, until it is reset")
            slots[sid] += 1
            slot = slots[sid] if times is None else sample_slot(times[i], self.bundle.sample_fps)
            keys[i] = schedules[sid].decide(sigs[i], slot, fresh)
        feature_shape = self.bundle.graphs["encoder"].output("features").concrete(1)[1:]
        features = np.empty((n, *feature_shape), np.float32)
        rows = np.flatnonzero(keys)
        if len(rows):
            features[rows] = self.encode(frames[rows])
        held = {sid: self._held[sid] for sid in schedules if sid in self._held}
        for i, sid in enumerate(stream_ids):
            if keys[i]:
                held[sid] = features[i].copy()
            else:
                features[i] = held[sid]
        self._schedules.update(schedules)
        self._slots.update(slots)
        self._held.update(held)
        return self.step_encoded(features, thumbs, stream_ids, flags, encoded=keys)

    @staticmethod
    def _flags(resets: Sequence[bool] | np.ndarray | None, n: int) -> np.ndarray:
        flags = np.zeros(n, np.bool_) if resets is None else np.asarray(resets, np.bool_)
        if flags.shape != (n,):
            raise ValueError(f"{n} frames but {flags.size} reset flags")
        return flags

    def step_encoded(
        self,
        features: np.ndarray,
        thumbs: np.ndarray,
        stream_ids: Sequence[Hashable],
        resets: Sequence[bool] | np.ndarray | None = None,
        encoded: Sequence[bool] | np.ndarray | None = None,
    ) -> list[Caption]:
        """:meth:`step` for frames whose features (as held between key frames) and thumbnails
        are known; ``encoded`` says which of them the CNN ran on (default: all)."""
        n = len(stream_ids)
        if len(features) != n or len(thumbs) != n:
            raise ValueError(f"{len(features)} features and {len(thumbs)} thumbnails but {n} "
                             f"stream ids")
        flags = self._flags(resets, n)
        ran = np.ones(n, np.bool_) if encoded is None else np.asarray(encoded, np.bool_)
        memory = self.bundle.graphs["memory"]
        word = {k: np.empty((n, *memory.output(k).concrete(n)[2:]), np.float32)
                for k in ("context", "word_h", "word_c")}  # each frame's word LSTM start
        for ids, rows in _calls(stream_ids, flags):  # rows: (streams, steps)
            out = self._step_memory(ids, features[rows], thumbs[rows], flags[rows[:, 0]])
            for k, array in word.items():
                array[rows] = out[k]
        search = self._beam_search if self.beam > 1 else self._greedy
        token_lists, logprobs = search(word["context"], word["word_h"], word["word_c"])
        return [Caption(sid, tuple(ids), self.bundle.detokenize(ids), float(lp), bool(key))
                for sid, ids, lp, key in zip(stream_ids, token_lists, logprobs, ran, strict=True)]

    def _step_memory(
        self, ids: list[Hashable], features: np.ndarray, thumbs: np.ndarray, resets: np.ndarray
    ) -> dict[str, Value]:
        """One call of the memory graph: T frames of each stream in ``ids``, features
        (B, T, F), thumbs (B, T, 3, m, m), resets (B,) before each stream's first frame."""
        key = tuple(ids)
        if self._resident is not None and self._resident[0] == key:
            state = self._resident[1]
        else:
            self._flush()
            resets = resets | np.array([sid not in self._states for sid in ids])
            state = {name: self._gather(name, ids) for name in _STATE}
        feeds: dict[str, Value] = {"features": features, "thumbnail": thumbs, "reset": resets,
                                   **state}
        keep = [f"{name}_out" for name in _STATE] if self._memory.device else []
        out = self._memory.run(feeds, keep)
        new_state = {name: out[f"{name}_out"] for name in _STATE}
        if self._memory.device:
            self._resident = (key, new_state)
        else:
            self._scatter(ids, new_state)
        return out

    def _gather(self, name: str, ids: list[Hashable]) -> np.ndarray:
        parts = [self._states[sid][name] if sid in self._states else self._fresh[name]
                 for sid in ids]
        return np.stack(parts, axis=self._batch_axis[name])

    def _scatter(self, ids: list[Hashable], state: dict[str, Value]) -> None:
        arrays = {k: v.numpy() if isinstance(v, ort.OrtValue) else v for k, v in state.items()}
        for i, sid in enumerate(ids):
            self._states[sid] = {name: np.take(array, i, axis=self._batch_axis[name]).copy()
                                 for name, array in arrays.items()}

    def _flush(self) -> None:
        """Bring device-resident state back into the per-stream host state."""
        if self._resident is not None:
            ids, state = self._resident
            self._resident = None
            self._scatter(list(ids), state)

    def _greedy(
        self, context: np.ndarray, h: Value, c: Value
    ) -> tuple[list[list[int]], np.ndarray]:
        specials = self.bundle.specials
        n = len(context)
        token = np.full(n, specials["bos"], np.int64)
        done = np.zeros(n, np.bool_)
        total = np.zeros(n, np.float64)
        keep = ["word_h_out", "word_c_out"] if self._captioner.device else []
        ctx = self._captioner.to_device(context)
        words = []
        for _ in range(self.bundle.max_caption_len):
            out = self._captioner.run({"token": token, "context": ctx, "word_h": h, "word_c": c},
                                      keep)
            h, c = out["word_h_out"], out["word_c_out"]
            logp: np.ndarray = out["logp"]
            best = logp.argmax(axis=1)
            total += np.where(done, 0.0, logp[np.arange(n), best])
            token = np.where(done, specials["eos"], best).astype(np.int64)
            words.append(token)
            done |= token == specials["eos"]
            if done.all():
                break
        rows = np.stack(words, axis=1).tolist()
        return [_strip(row, specials["eos"]) for row in rows], total

    def _beam_search(
        self, context: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[list[list[int]], np.ndarray]:
        """Beam search for all captions at once, the numpy twin of lrcn.model's."""
        specials, beam, vocab = self.bundle.specials, self.beam, self.bundle.vocab_size
        eos = specials["eos"]
        n = len(context)
        ctx = np.repeat(context, beam, axis=0)  # (n * beam, E)
        h, c = np.repeat(h, beam, axis=0), np.repeat(c, beam, axis=0)
        scores = np.full((n, beam), -np.inf, np.float32)
        scores[:, 0] = 0.0  # every hypothesis starts identical: keep one alive
        token = np.full(n * beam, specials["bos"], np.int64)
        finished = np.zeros((n, beam), np.bool_)
        history = np.zeros((n, beam, 0), np.int64)
        eos_only = np.full(vocab, -np.inf, np.float32)
        eos_only[eos] = 0.0
        rows_of = np.arange(n)[:, None]
        for _ in range(self.bundle.max_caption_len):
            out = self._captioner.run({"token": token, "context": ctx, "word_h": h, "word_c": c})
            logp: np.ndarray = np.asarray(out["logp"]).reshape(n, beam, vocab)
            # A finished hypothesis only extends with <eos> at no cost: its score stays put.
            logp = np.where(finished[:, :, None], eos_only, logp)
            total = (scores[:, :, None] + logp).reshape(n, beam * vocab)
            flat = np.argsort(-total, axis=1, kind="stable")[:, :beam]  # (n, beam)
            scores = np.take_along_axis(total, flat, axis=1)
            origin, word = flat // vocab, flat % vocab
            history = np.concatenate([history[rows_of, origin], word[:, :, None]], axis=2)
            finished = finished[rows_of, origin] | (word == eos)
            rows = (origin + rows_of * beam).reshape(-1)
            h = np.asarray(out["word_h_out"])[rows]
            c = np.asarray(out["word_c_out"])[rows]
            token = word.reshape(-1).astype(np.int64)
            if finished.all():
                break
        best = scores.argmax(axis=1)
        return ([_strip(history[i, best[i]].tolist(), eos) for i in range(n)],
                scores[np.arange(n), best].astype(np.float64))


def _calls(
    stream_ids: Sequence[Hashable], resets: np.ndarray
) -> list[tuple[list[Hashable], np.ndarray]]:
    """Split batch rows into memory calls: each call steps a run of frames of each of its
    streams (in order, a reset only before a run's first frame), all runs of one length.

    Returns (stream ids, rows (streams, steps)) per call, in an order that steps each
    stream's runs one after the other.
    """
    runs: dict[Hashable, list[list[int]]] = {}
    for row, sid in enumerate(stream_ids):
        own = runs.setdefault(sid, [])
        if not own or resets[row]:
            own.append([])
        own[-1].append(row)
    calls = []
    for k in range(max((len(own) for own in runs.values()), default=0)):
        by_length: dict[int, list[tuple[Hashable, list[int]]]] = {}
        for sid, own in runs.items():
            if k < len(own):
                by_length.setdefault(len(own[k]), []).append((sid, own[k]))
        for group in by_length.values():
            calls.append(([sid for sid, _ in group],
                          np.array([rows for _, rows in group], np.int64)))
    return calls


def _strip(ids: list[int], eos: int) -> list[int]:
    out = []
    for i in ids:
        if i == eos:
            break
        out.append(int(i))
    return out


_SEQUENCE_STEPS = 32  # frames of each sequence per memory call (bounds the motion inputs' memory)


def caption_sequences(
    core: CaptionCore,
    sequences: Sequence[np.ndarray],
    *,
    times: Sequence[np.ndarray] | None = None,
    streams: int = 16,
    encode_batch: int = 32,
) -> list[list[Caption]]:
    """Caption whole frame sequences (e.g. videos), ``streams`` of them stepped side by side.

    Each sequence (T, S, S, 3) uint8 is one stream starting from a clear state, with its frames'
    times (T,) seconds (None: one sample slot per frame). Its key frames, chosen by the core's
    rule exactly as :meth:`CaptionCore.step` chooses them, are encoded in batches of
    ``encode_batch``; then each memory call advances all active streams by up to 32 frames.
    Returns one caption per frame, per sequence. The streams' state is dropped afterwards.
    """
    results: list[list[Caption]] = [[] for _ in sequences]
    for start in range(0, len(sequences), streams):
        group = range(start, min(start + streams, len(sequences)))
        encoded = {i: _encode_sequence(core, sequences[i], None if times is None else times[i],
                                       encode_batch) for i in group}
        longest = max((len(sequences[i]) for i in group), default=0)
        for t0 in range(0, longest, _SEQUENCE_STEPS):
            # Each active stream's next frames, one memory call per run length.
            parts = [(i, t) for i in group
                     for t in range(t0, min(t0 + _SEQUENCE_STEPS, len(sequences[i])))]
            captions = core.step_encoded(np.stack([encoded[i][0][t] for i, t in parts]),
                                         np.stack([encoded[i][1][t] for i, t in parts]),
                                         [("seq", i) for i, _ in parts],
                                         [t == 0 for _, t in parts],
                                         [bool(encoded[i][2][t]) for i, t in parts])
            for (i, _), caption in zip(parts, captions, strict=True):
                results[i].append(caption)
        for i in group:
            core.forget(("seq", i))
    return results


def _encode_sequence(
    core: CaptionCore, frames: np.ndarray, times: np.ndarray | None, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held features (T, F), thumbnails (T, 3, m, m) and key flags (T,) of a fresh sequence."""
    thumbs = core.thumbnails(frames)
    slots = (range(len(frames)) if times is None
             else [sample_slot(t, core.bundle.sample_fps) for t in times])
    keys = key_frames(core.keyframes, signature(core.keyframes, thumbs), slots)
    index = np.flatnonzero(keys)
    parts = [core.encode(frames[index[j : j + batch]]) for j in range(0, len(index), batch)]
    if not parts:
        return np.zeros((0, 0), np.float32), thumbs, keys
    features = np.concatenate(parts)[np.searchsorted(index, held_index(keys))]
    return features, thumbs, keys
