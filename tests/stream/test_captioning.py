"""The captioning core: per-stream state, resets, batching, I/O binding."""

from __future__ import annotations

import numpy as np
import pytest

from lrcn.data import load_dataset
from stream.media.frames import read_sampled_frames
from stream.model.bundle import open_bundle
from stream.model.captioning import CaptionCore, caption_sequences
from stream.model.sessions import SessionSettings


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return open_bundle(tiny_bundle, SessionSettings(device="cpu"))


@pytest.fixture(scope="module")
def videos(tiny_world, loaded):
    size = (loaded.bundle.input_size,) * 2
    return [read_sampled_frames(item.path, loaded.bundle.sample_fps, size)[0]
            for item in load_dataset(tiny_world).items]


def _alone(core, frames, sid="solo"):
    """Captions of one stream stepped frame by frame on its own."""
    out = []
    for t, frame in enumerate(frames):
        out += core.step(frame[None], [sid], [t == 0])
    core.forget(sid)
    return [c.tokens for c in out]


def test_streams_in_one_batch_keep_separate_state(loaded, videos):
    core = CaptionCore(loaded)
    a, b = videos[0], videos[1]
    n = min(len(a), len(b))
    together = {"a": [], "b": []}
    for t in range(n):
        for c in core.step(np.stack([a[t], b[t]]), ["a", "b"], [t == 0, t == 0]):
            together[c.stream].append(c.tokens)
    assert together["a"] == _alone(core, a[:n]) and together["b"] == _alone(core, b[:n])
    assert together["a"] != together["b"]


def test_several_frames_of_one_stream_in_a_batch_are_stepped_in_order(loaded, videos):
    core = CaptionCore(loaded)
    frames = videos[2][:6]
    batched = [c.tokens for c in core.step(frames, ["s"] * 6, [True] + [False] * 5)]
    assert batched == _alone(core, frames)


def test_a_batch_of_ragged_runs_with_resets_inside_equals_stepping_frame_by_frame(loaded,
                                                                                 videos):
    """Streams with different numbers of frames in one batch, and a reset in the middle of a
    stream's frames (a reconnect), give what one frame at a time gives: captions and state."""
    ids = ["a", "a", "b", "a", "b", "a", "a", "c"]
    resets = [True, False, True, True, False, False, False, True]
    source = {"a": videos[0], "b": videos[1], "c": videos[2]}
    taken: dict[str, int] = {}
    frames = []
    for sid in ids:
        frames.append(source[sid][taken.get(sid, 0)])
        taken[sid] = taken.get(sid, 0) + 1
    batched, single = CaptionCore(loaded), CaptionCore(loaded)
    calls = _CountingMemory(batched)
    together = batched.step(np.stack(frames), ids, resets)
    one_by_one = [single.step(f[None], [sid], [r])[0]
                  for f, sid, r in zip(frames, ids, resets, strict=True)]
    assert [c.tokens for c in together] == [c.tokens for c in one_by_one]
    assert [c.logprob for c in together] == pytest.approx([c.logprob for c in one_by_one],
                                                          abs=1e-4)
    for sid in "abc":
        for name, array in batched.state(sid).items():
            np.testing.assert_allclose(array, single.state(sid)[name], atol=1e-5, err_msg=name)
    # First runs by length: a's 2 frames before its reset with b's 2, then c's 1; a's 3 frames
    # after its reset follow: 3 calls, not 8.
    assert calls.steps == [[2, 2], [1], [3]]


def test_a_file_batch_of_one_stream_is_one_memory_call(loaded, videos):
    core = CaptionCore(loaded)
    calls = _CountingMemory(core)
    core.step(videos[2][:8], ["file"] * 8, [True] + [False] * 7)
    assert calls.steps == [[8]]


class _CountingMemory:
    """Wraps a core's memory graph and records each call's steps per stream."""

    def __init__(self, core: CaptionCore) -> None:
        self.graph, self.steps = core._memory, []
        core._memory = self  # type: ignore[assignment]
        self.device = self.graph.device

    def run(self, feeds, keep=()):
        self.steps.append([feeds["features"].shape[1]] * feeds["features"].shape[0])
        return self.graph.run(feeds, keep)


def test_reset_starts_over_and_no_reset_carries_state(loaded, videos):
    core = CaptionCore(loaded)
    first, second = videos[0], videos[3]
    for t, frame in enumerate(first):
        core.step(frame[None], ["cam"], [t == 0])
    after_reset = []
    for t, frame in enumerate(second):
        after_reset += core.step(frame[None], ["cam"], [t == 0])
    assert [c.tokens for c in after_reset] == _alone(core, second)
    # Without the reset the old video's memory is carried into the new one's first frame.
    core.step(second[:1], ["cam"], [True])
    fresh = core.state("cam")
    for t, frame in enumerate(first):
        core.step(frame[None], ["cam"], [t == 0])
    core.step(second[:1], ["cam"], [False])
    carried = core.state("cam")
    assert fresh["h"].shape == carried["h"].shape == (2, 64)
    assert not np.allclose(fresh["h"], carried["h"], atol=1e-3)


def test_io_binding_gives_the_same_captions_through_changing_batches(loaded, videos):
    plain, bound = CaptionCore(loaded, io_binding=False), CaptionCore(loaded, io_binding=True)
    rng = np.random.default_rng(0)
    a, b = videos[0], videos[1]
    for t in range(min(len(a), len(b))):
        # The same two streams most of the time (state stays resident), sometimes one alone or
        # in the other order (state moves through the host).
        order = [["a", "b"], ["a", "b"], ["b", "a"], ["a"]][rng.integers(4)]
        frames = np.stack([{"a": a, "b": b}[s][t] for s in order])
        resets = [t == 0] * len(order)
        assert [c.tokens for c in plain.step(frames, order, resets)] == \
            [c.tokens for c in bound.step(frames, order, resets)]
    assert sorted(bound.streams) == ["a", "b"]
    bound.forget("a")
    assert bound.streams == ["b"]


def test_caption_sequences_equals_stepping_each_alone(loaded, videos):
    core = CaptionCore(loaded)
    together = caption_sequences(core, videos, streams=3)
    assert [[c.tokens for c in caps] for caps in together] == [_alone(core, v) for v in videos]
    assert core.streams == []


@pytest.mark.parametrize("frames, ids, resets, words", [
    (np.zeros((1, 32, 32, 3), np.uint8), ["a"], None, "uint8"),  # wrong size
    (np.zeros((1, 64, 64, 3), np.float32), ["a"], None, "uint8"),  # wrong type
    (np.zeros((2, 64, 64, 3), np.uint8), ["a"], None, "stream ids"),  # ids missing
    (np.zeros((2, 64, 64, 3), np.uint8), ["a", "b"], [True], "reset flags"),  # flags missing
])
def test_misuse_is_a_clear_error(loaded, frames, ids, resets, words):
    with pytest.raises(ValueError, match=words):
        CaptionCore(loaded).step(frames, ids, resets)


@pytest.mark.parametrize("beam", [1, 3])
def test_caption_logprob_is_the_sum_over_its_words(loaded, videos, beam):
    """Replaying a caption's words through the graphs gives back its log-probability."""
    core = CaptionCore(loaded, beam=beam)
    frame = videos[1][:1]
    [caption] = core.step(frame, ["s"], [True])
    features, thumbs = core.encode(frame), core.thumbnails(frame)
    memory = loaded.sessions["memory"]
    state = {i.name: np.zeros([1 if d == "batch" else d for d in i.shape], np.float32)
             for i in memory.get_inputs() if i.name in ("h", "c", "prev", "avg")}
    context, h, c = (a[:, 0] for a in memory.run(  # one step of one stream
        ["context", "word_h", "word_c"], {"features": features[:, None],
                                          "thumbnail": thumbs[:, None],
                                          "reset": np.array([True]), **state}))
    specials = loaded.bundle.specials
    token, total = specials["bos"], 0.0
    for word in [*caption.tokens, specials["eos"]]:
        logp, h, c = loaded.sessions["captioner"].run(
            None, {"token": np.array([token]), "context": context, "word_h": h, "word_c": c})
        total += float(logp[0, word])
        token = word
    assert caption.logprob < 0
    assert caption.logprob == pytest.approx(total, abs=1e-4)


class _CountingEncoder:
    """Wraps a core's encoder graph and records how many frames each call encodes."""

    def __init__(self, core: CaptionCore) -> None:
        self.graph, self.calls = core._encoder, []
        core._encoder = self  # type: ignore[assignment]

    def run(self, feeds, keep=()):
        self.calls.append(len(feeds["frames"]))
        return self.graph.run(feeds, keep)


def test_the_cnn_runs_only_on_key_frames_and_their_features_are_held(loaded, videos):
    """Against the model's own rule (stream.model.keyframes): the encoder sees exactly the key
    frames of all streams of a batch, in one call; the other frames step with the held features."""
    from stream.model.keyframes import key_frames, signature

    core = CaptionCore(loaded)
    rule = loaded.bundle.keyframes
    assert not rule.encodes_every_frame
    counter = _CountingEncoder(core)
    a, b = videos[0], videos[1]
    n = min(len(a), len(b))
    flags = {"a": [], "b": []}
    for t in range(n):
        before = len(counter.calls)
        captions = core.step(np.stack([a[t], b[t]]), ["a", "b"], [t == 0, t == 0])
        for c in captions:
            flags[c.stream].append(c.encoded)
        # this step's encoder calls alone: one call with exactly its key frames, or none
        encoded = sum(c.encoded for c in captions)
        assert counter.calls[before:] == ([encoded] if encoded else [])
    for sid, frames in (("a", a[:n]), ("b", b[:n])):
        expected = key_frames(rule, signature(rule, core.thumbnails(frames)), range(n))
        assert flags[sid] == expected.tolist() and 1 < expected.sum() < n
    assert sum(counter.calls) == sum(map(sum, flags.values()))
    # Holding is what makes the difference: encoding every frame changes the log-probabilities.
    every = CaptionCore(loaded, encode_every_frame=True)
    counter = _CountingEncoder(every)
    held = [c.logprob for t in range(len(a)) for c in core.step(a[t : t + 1], ["h"], [t == 0])]
    again = [every.step(a[t : t + 1], ["e"], [t == 0])[0] for t in range(len(a))]
    assert all(c.encoded for c in again) and sum(counter.calls) == len(a)
    assert [c.logprob for c in again] != held


def test_times_place_frames_on_the_key_frame_grid(loaded, videos):
    """The window of K slots follows the frames' times: a stream that skips slots (a slow
    source, dropped frames) starts a new window, and a key frame, as its times say."""
    core = CaptionCore(loaded)
    every = loaded.bundle.keyframes.every
    still = np.repeat(videos[0][:1], 3, axis=0)  # one picture: only the grid makes key frames
    fps = loaded.bundle.sample_fps
    slots = [0, 1, every]
    got = [c.encoded for c in core.step(still, ["s"] * 3, [True, False, False],
                                        [s / fps for s in slots])]
    assert got == [True, False, True]
    # Without times, each frame is the next slot.
    core.forget("s")
    got = [c.encoded for c in core.step(np.repeat(still[:1], every + 1, axis=0),
                                        ["s"] * (every + 1))]
    assert got == [True] + [False] * (every - 1) + [True]


@pytest.mark.parametrize("count, ids, times, words", [
    (2, ["a"], None, "2 frames but 1 stream ids"),
    (1, ["a", "b"], None, "1 frames but 2 stream ids"),
    (2, ["a", "b"], [0.0], "2 frames but 1 times"),
    (2, ["a", "b"], [0.0, float("nan")], "finite"),
])
def test_a_refused_step_leaves_every_stream_as_it_was(loaded, videos, count, ids, times, words):
    core = CaptionCore(loaded)
    core.step(videos[0][:1], ["a"], [True])
    before = core.state("a")
    with pytest.raises(ValueError, match=words):
        core.step(videos[1][:count], ids, None, times)
    assert core.streams == ["a"]
    assert all(np.array_equal(v, core.state("a")[k]) for k, v in before.items())
    # b was never stepped: its first frame is a fresh key frame.
    [b] = core.step(videos[1][:1], ["b"])
    assert b.encoded


def test_a_streams_phase_shifts_its_forced_key_frames(loaded, videos):
    """phases: each stream's window grid shifted by its phase (a still picture: only the grid
    makes key frames); no phases is phase 0; the phase holds until the stream's reset."""
    core = CaptionCore(loaded)
    rule = loaded.bundle.keyframes
    every, fps = rule.every, loaded.bundle.sample_fps
    assert every > 2
    n = 2 * every + 1
    still = np.repeat(videos[0][:1], n, axis=0)
    times = [t / fps for t in range(n)]
    keys = {}
    for sid, phases in (("none", None), ("zero", [0] * n), ("one", [1] * n),
                        ("last", [every - 1] * n)):
        captions = core.step(still, [sid] * n, [True] + [False] * (n - 1), times, phases=phases)
        keys[sid] = [t for t, c in enumerate(captions) if c.encoded]
    assert keys["none"] == keys["zero"] == [0, every, 2 * every]
    assert keys["one"] == [0, every - 1, 2 * every - 1]
    assert keys["last"] == [0, 1, every + 1]
    # Two streams of one batch, as cameras: their ids' phases keep their key frames apart.
    ids = ["cam-a", "cam-b"]
    assert rule.phase(ids[0]) != rule.phase(ids[1])
    flags = {sid: [] for sid in ids}
    for t in range(n):
        for c in core.step(still[:2], ids, [t == 0] * 2, [times[t]] * 2,
                           phases=[rule.phase(s) for s in ids]):
            flags[c.stream].append(c.encoded)
    assert flags[ids[0]][1:] != flags[ids[1]][1:]
    assert sum(flags[ids[0]][1:]) == sum(flags[ids[1]][1:]) == 2
    # A phase is the stream's until its reset.
    with pytest.raises(ValueError, match="has key-frame phase 1, not 2, until it is reset"):
        core.step(still[:1], ["one"], [False], [n / fps], phases=[2])
    [caption] = core.step(still[:1], ["one"], [True], [n / fps], phases=[2])
    assert caption.encoded
    with pytest.raises(ValueError, match=r"phase must be an integer in \[0, "):
        core.step(still[:1], ["new"], phases=[every])


def test_thumbnails_and_signatures_given_are_used_as_computed(loaded, videos):
    """What a decoder thread computes (FrameSignals) gives the same captions, bit for bit, as
    the core computing it; the core uses what it is given."""
    from stream.model.keyframes import FrameSignals

    a, b = videos[0], videos[1]
    n = min(len(a), len(b))
    signals = FrameSignals(loaded.bundle.motion_pool, loaded.bundle.keyframes)
    computed, given = CaptionCore(loaded), CaptionCore(loaded)
    for t in range(n):
        frames = np.stack([a[t], b[t]])
        mine = [signals(frame) for frame in frames]
        thumbs, sigs = np.stack([m[0] for m in mine]), np.stack([m[1] for m in mine])
        one = computed.step(frames, ["a", "b"], [t == 0] * 2, phases=[1, 2])
        two = given.step(frames, ["a", "b"], [t == 0] * 2, phases=[1, 2], thumbs=thumbs,
                         signatures=sigs)
        assert one == two
    # Given signatures decide the key frames: a signature far from the last key frame's.
    core = CaptionCore(loaded)
    still = np.repeat(a[:1], 2, axis=0)
    thumbs = core.thumbnails(still)
    sigs = np.stack([signals(frame)[1] for frame in still])
    sigs[1] += 1.0
    flags = [c.encoded for c in core.step(still, ["s"] * 2, thumbs=thumbs, signatures=sigs)]
    assert flags == [True, True]


@pytest.mark.parametrize("what, make, words", [
    ("thumbs", lambda m, c: np.zeros((2, 3, m, m), np.float32),
     r"thumbs must be float32 \(1, 3, (\d+), \1\), got float32 \(2, 3, \1, \1\)"),
    ("thumbs", lambda m, c: np.zeros((1, 3, m, m), np.float64), "thumbs must be float32"),
    ("thumbs", lambda m, c: [[0.0]], "thumbs must be float32 .* got list"),
    ("signatures", lambda m, c: np.zeros((1, 3, c + 1, c + 1), np.float32),
     "signatures must be float32"),
    ("phases", lambda m, c: [0, 0], "1 frames but 2 phases"),
])
def test_wrong_signals_are_a_clear_error(loaded, videos, what, make, words):
    core = CaptionCore(loaded)
    core.step(videos[0][:1], ["a"], [True])
    before = core.state("a")
    m = loaded.bundle.input_size // loaded.bundle.motion_pool
    c = min(loaded.bundle.keyframes.cells, m)
    with pytest.raises(ValueError, match=words):
        core.step(videos[0][1:2], ["a"], **{what: make(m, c)})
    assert all(np.array_equal(v, core.state("a")[k]) for k, v in before.items())
