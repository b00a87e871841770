"""The captioning core: batched steps of many streams through a bundle's graphs, numpy only.

One call of :meth:`CaptionCore.step` takes a batch of frames, each tagged with the stream it
belongs to and a reset flag, runs the encoder graph once for the whole batch, steps every
stream's memory with the state that stream carried from its previous frame, and decodes one
caption per frame, greedy or beam, for all of them together::

    core = CaptionCore(open_bundle("models/shapes"))
    captions = core.step(frames, stream_ids=["cam1", "cam2"], resets=[False, False])
    captions[0].text  # 'a red circle moves left'

A stream's state is created (zero, with a reset) on its first frame and is reset only when the
caller says so: at the start of a sequence, or after a reconnect or other discontinuity. A batch
may hold several frames of one stream; they are stepped in the order given.

The core is not thread-safe: one worker thread owns it (it holds the streams' state).

GPU: with I/O binding (on by default when the graphs run on CUDA or TensorRT) the memory state
stays on the device between steps as long as the same streams come in the same order (the usual
case for a fixed set of live streams), and the word LSTM's state stays there during decoding;
only frames, reset flags, tokens and log-probabilities cross the bus. Any other batch moves the
state through host memory, with the same results. The same code runs on the CPU provider, which
is how the tests cover it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from stream.bundle import BATCH, LoadedBundle, zeros

_STATE = ("h", "c", "prev", "avg")  # memory.onnx's recurrent state, fed back as "<name>_out"
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

# A numpy array, or an ort.OrtValue on the device (ONNX Runtime ships no type stubs).
Value: TypeAlias = Any


@dataclass(frozen=True)
class Caption:
    """The caption of one frame of one stream."""

    stream_id: Hashable
    tokens: tuple[int, ...]
    text: str
    logprob: float = 0.0  # log-probability of the tokens and the closing <eos> under the model


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
        loaded: a bundle from :func:`stream.bundle.open_bundle` (validated, sessions created).
        beam: 1 for greedy decoding, more for beam search with that many hypotheses.
        io_binding: keep recurrent state on the device between calls; None = when on a GPU.
    """

    def __init__(self, loaded: LoadedBundle, beam: int = 1, io_binding: bool | None = None):
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        self.bundle = loaded.bundle
        self.beam = beam
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
        self._states.pop(stream_id, None)

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the encoder graph: frames (B, S, S, 3) uint8 -> features (B, F), thumbs."""
        size = self.bundle.input_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise ValueError(f"frames must be uint8 (B, {size}, {size}, 3), got {frames.dtype} "
                             f"{frames.shape}")
        out = self._encoder.run({"frames": np.ascontiguousarray(frames)})
        return out["features"], out["thumbnail"]

    def step(
        self,
        frames: np.ndarray,
        stream_ids: Sequence[Hashable],
        resets: Sequence[bool] | None = None,
    ) -> list[Caption]:
        """Caption one frame per entry: frames (B, S, S, 3) uint8, RGB at the bundle's size.

        ``resets[i]`` clears stream ``stream_ids[i]``'s state before its frame (a stream's first
        frame always starts from a clear state). Returns B captions in input order.
        """
        features, thumbs = self.encode(frames)
        return self.step_encoded(features, thumbs, stream_ids, resets)

    def step_encoded(
        self,
        features: np.ndarray,
        thumbs: np.ndarray,
        stream_ids: Sequence[Hashable],
        resets: Sequence[bool] | None = None,
    ) -> list[Caption]:
        """:meth:`step` for frames already through :meth:`encode`."""
        n = len(stream_ids)
        if len(features) != n or len(thumbs) != n:
            raise ValueError(f"{len(features)} frames but {n} stream ids")
        flags = np.zeros(n, np.bool_) if resets is None else np.asarray(resets, np.bool_)
        if flags.shape != (n,):
            raise ValueError(f"{n} frames but {flags.size} reset flags")
        memory = self.bundle.graphs["memory"]
        word = {k: np.empty(memory.output(k).concrete(n), np.float32)
                for k in ("context", "word_h", "word_c")}
        for rows in _rounds(stream_ids):
            out = self._step_memory([stream_ids[i] for i in rows], features[rows], thumbs[rows],
                                    flags[rows])
            for k, array in word.items():
                array[rows] = out[k]
        search = self._beam_search if self.beam > 1 else self._greedy
        token_lists, logprobs = search(word["context"], word["word_h"], word["word_c"])
        return [Caption(sid, tuple(ids), self.bundle.detokenize(ids), float(lp))
                for sid, ids, lp in zip(stream_ids, token_lists, logprobs, strict=True)]

    def _step_memory(
        self, ids: list[Hashable], features: np.ndarray, thumbs: np.ndarray, resets: np.ndarray
    ) -> dict[str, Value]:
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


def _rounds(stream_ids: Sequence[Hashable]) -> list[np.ndarray]:
    """Split batch rows so that each round holds at most one frame per stream, in order."""
    seen: dict[Hashable, int] = {}
    rounds: list[list[int]] = []
    for row, sid in enumerate(stream_ids):
        k = seen.get(sid, 0)
        seen[sid] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(row)
    return [np.array(r, np.int64) for r in rounds]


def _strip(ids: list[int], eos: int) -> list[int]:
    out = []
    for i in ids:
        if i == eos:
            break
        out.append(int(i))
    return out


def caption_sequences(
    core: CaptionCore, sequences: Sequence[np.ndarray], streams: int = 16, encode_batch: int = 32
) -> list[list[Caption]]:
    """Caption whole frame sequences (e.g. videos), ``streams`` of them stepped side by side.

    Each sequence (T, S, S, 3) uint8 is one stream starting from a clear state; its frames are
    encoded in batches of ``encode_batch``, then every step advances all active streams at once.
    Returns one caption per frame, per sequence. The streams' state is dropped afterwards.
    """
    results: list[list[Caption]] = [[] for _ in sequences]
    for start in range(0, len(sequences), streams):
        group = range(start, min(start + streams, len(sequences)))
        encoded = {}
        for i in group:
            frames = sequences[i]
            parts = [core.encode(frames[j : j + encode_batch])
                     for j in range(0, len(frames), encode_batch)]
            encoded[i] = (np.concatenate([p[0] for p in parts]) if parts else None,
                          np.concatenate([p[1] for p in parts]) if parts else None)
        longest = max((len(sequences[i]) for i in group), default=0)
        for t in range(longest):
            rows = [i for i in group if t < len(sequences[i])]
            features = np.stack([encoded[i][0][t] for i in rows])  # type: ignore[index]
            thumbs = np.stack([encoded[i][1][t] for i in rows])  # type: ignore[index]
            captions = core.step_encoded(features, thumbs, [("seq", i) for i in rows],
                                         [t == 0] * len(rows))
            for i, caption in zip(rows, captions, strict=True):
                results[i].append(caption)
        for i in group:
            core.forget(("seq", i))
    return results
