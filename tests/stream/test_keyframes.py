"""The key-frame rule: thumbnails, the schedule, and its exactness on chunks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stream.model.keyframes import (
    FrameSignals,
    KeyFrameRule,
    KeyFrameSchedule,
    held_index,
    key_frames,
    sample_slot,
    signature,
    thumbnails,
)


def test_thumbnails_are_block_means_in_unit_range():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    thumbs = thumbnails(frames, 4)
    assert thumbs.shape == (3, 3, 4, 4) and thumbs.dtype == np.float32
    expected = frames.reshape(3, 4, 4, 4, 4, 3).astype(np.float64).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(thumbs, expected.transpose(0, 3, 1, 2), atol=1e-6)
    # Large blocks sum past uint16 without overflowing.
    white = np.full((1, 32, 32, 3), 255, np.uint8)
    np.testing.assert_allclose(thumbnails(white, 32), 1.0)
    with pytest.raises(ValueError, match="do not divide"):
        thumbnails(frames[:, :15], 4)


def test_signature_is_cell_means_for_any_size():
    thumbs = np.arange(2 * 3 * 7 * 7, dtype=np.float32).reshape(2, 3, 7, 7)
    sig = signature(KeyFrameRule(cells=3), thumbs)
    assert sig.shape == (2, 3, 3, 3)
    # Cells of 7 split as 2, 2, 3 (adaptive pooling's bounds).
    np.testing.assert_allclose(sig[1, 2, 0, 2], thumbs[1, 2, 0:2, 4:7].mean())
    assert signature(KeyFrameRule(cells=9), thumbs).shape == (2, 3, 7, 7)  # at most a pixel


def _sigs(values):
    return np.array(values, np.float32).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("values, slots, resets, expected", [
    # a still scene: the first frame, then one per window of 4 slots
    ([0] * 9, range(9), [], [1, 0, 0, 0, 1, 0, 0, 0, 1]),
    # a change above the threshold is a key frame; the next ones compare with it
    ([0, 0, .5, .5, .5, .5], [0, 1, 2, 3, 3, 4], [], [1, 0, 1, 0, 0, 1]),
    # small changes add up against the last key frame, not the previous frame
    ([0, .05, .1, .15, .2], [0, 1, 2, 3, 3], [], [1, 0, 0, 1, 0]),
    # a reset is a key frame, whatever the picture
    ([0, 0, 0], range(3), [1], [1, 1, 0]),
    # slots skipped (a slower source) still start a new window
    ([0, 0, 0], [0, 2, 5], [], [1, 0, 1]),
])
def test_schedule_cases(values, slots, resets, expected):
    schedule = KeyFrameSchedule(KeyFrameRule(every=4, threshold=0.12, cells=1))
    got = [schedule.decide(sig, slot, i in resets)
           for i, (sig, slot) in enumerate(zip(_sigs(values), slots, strict=True))]
    assert got == [bool(e) for e in expected]


def test_every_frame_rule_keys_every_frame():
    keys = key_frames(KeyFrameRule(), _sigs([0, 0, 0]), range(3))
    assert keys.tolist() == [True, True, True]


@pytest.mark.parametrize("phase", range(5))
def test_a_late_start_rebuilds_the_whole_schedule_after_one_window(phase):
    """What archive chunks rely on: started ``every`` slots early, a fresh schedule with the
    same phase agrees with the whole sequence's from there on, wherever it starts (the phased
    window that holds the start begins at most every - 1 slots before it)."""
    rule = KeyFrameRule(every=5, threshold=0.1, cells=2)
    rng = np.random.default_rng(3)
    steps = rng.choice([0.0, 0.04, 0.3], size=(200, 3, 2, 2), p=[0.6, 0.3, 0.1])
    sigs = np.cumsum(steps, axis=0).astype(np.float32)
    slots = np.arange(200)
    whole = key_frames(rule, sigs, slots, phase)
    assert 0.2 < whole.mean() < 0.8
    for start in range(0, 190, 3):
        late = key_frames(rule, sigs[start:], slots[start:], phase)
        assert late[rule.every:].tolist() == whole[start + rule.every:].tolist()
    # Skipped slots (a slower source) too.
    kept = np.sort(rng.choice(200, 120, replace=False))
    whole = key_frames(rule, sigs[kept], slots[kept], phase)
    for start in range(0, 110, 3):
        late = key_frames(rule, sigs[kept][start:], slots[kept][start:], phase)
        warm = np.searchsorted(slots[kept][start:], slots[kept][start] + rule.every)
        assert late[warm:].tolist() == whole[start + warm:].tolist()


def _today(rule, sigs, slots, resets=()):
    """The rule as it was before phases: window = slot // every."""
    keys, window, last = [], None, None
    for i, (sig, slot) in enumerate(zip(sigs, slots, strict=True)):
        key = (i in resets or rule.every == 1 or last is None or slot // rule.every != window
               or float(np.abs(sig - last).max()) > rule.threshold)
        if key:
            window, last = slot // rule.every, sig
        keys.append(key)
    return keys


@pytest.mark.parametrize("every", [1, 4, 16])
def test_phase_zero_is_the_schedule_without_phases(every):
    rule = KeyFrameRule(every=every, threshold=0.1, cells=2)
    rng = np.random.default_rng(every)
    steps = rng.choice([0.0, 0.04, 0.3], size=(300, 3, 2, 2), p=[0.6, 0.3, 0.1])
    sigs = np.cumsum(steps, axis=0).astype(np.float32)
    slots = np.sort(rng.choice(400, 300, replace=False))
    resets = {0, 50, 51, 170}
    expected = _today(rule, sigs, slots, resets)
    for schedule in (KeyFrameSchedule(rule), KeyFrameSchedule(rule, 0)):
        got = [schedule.decide(sig, int(slot), i in resets)
               for i, (sig, slot) in enumerate(zip(sigs, slots, strict=True))]
        assert got == expected
    assert key_frames(rule, sigs, slots).tolist() == key_frames(rule, sigs, slots, 0).tolist()


def test_phases_spread_the_forced_key_frames_over_the_window():
    """Two cameras on a still scene, started together: with their ids' different phases their
    forced key frames fall in different slots (each still one per window of 16)."""
    rule = KeyFrameRule(every=16, threshold=0.1, cells=1)
    still, slots = _sigs([0] * 64), range(64)
    assert (rule.phase("cam1"), rule.phase("cam2")) == (6, 12)
    keys = {sid: np.flatnonzero(key_frames(rule, still, slots, rule.phase(sid))).tolist()
            for sid in ("cam1", "cam2")}
    assert keys == {"cam1": [0, 10, 26, 42, 58], "cam2": [0, 4, 20, 36, 52]}
    assert np.flatnonzero(key_frames(rule, still, slots)).tolist() == [0, 16, 32, 48]
    # Every phase is reached: 32 cameras' ids cover the window.
    assert {rule.phase(f"camera-{k}") for k in range(64)} == set(range(16))


def test_a_streams_phase_is_the_same_in_every_process():
    """crc32 of the id, not Python's hash() (salted per process): pinned values, and a process
    with another hash seed agrees."""
    ids = ["cam1", "cam2", "lobby", "10.0.0.5-live", "shapes_s5_00000", "caf-"]
    rule = KeyFrameRule(every=16)
    here = [rule.phase(i) for i in ids]
    assert here == [6, 12, 7, 0, 8, 2]
    code = ("from stream.model.keyframes import KeyFrameRule; "
            f"print([KeyFrameRule(every=16).phase(i) for i in {ids!r}])")
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert done.stdout.strip() == str(here)
    assert KeyFrameRule().phase("cam1") == 0  # every frame a key frame: no phase
    assert KeyFrameRule(every=16).phase("caf\udce9") == KeyFrameRule(every=16).phase("caf\udce9")


@pytest.mark.parametrize("phase", [-1, 4, 1.0, True, None])
def test_bad_phases_are_refused(phase):
    with pytest.raises(ValueError, match=r"phase must be an integer in \[0, 4\)"):
        KeyFrameSchedule(KeyFrameRule(every=4), phase)


def test_frame_signals_are_the_batch_ones_bit_for_bit():
    """What a decoder thread computes for one frame equals what the core computes for the
    whole batch."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)
    rule = KeyFrameRule(every=16, threshold=0.15, cells=7)
    signals = FrameSignals(4, rule)
    one = [signals(frame) for frame in frames]
    thumbs = thumbnails(frames, 4)
    assert np.array_equal(np.stack([t for t, _ in one]), thumbs)
    assert np.array_equal(np.stack([s for _, s in one]), signature(rule, thumbs))
    assert one[0][0].shape == (3, 56, 56) and one[0][1].shape == (3, 7, 7)
    assert one[0][0].dtype == one[0][1].dtype == np.float32


def test_sensor_noise_and_compression_do_not_make_key_frames():
    """A still picture with strong per-frame noise keys only once per window; a small new
    object in one corner keys at once."""
    rng = np.random.default_rng(1)
    base = np.full((224, 224, 3), 120.0)
    noisy = np.clip(base + rng.normal(0, 12, (30, 224, 224, 3)), 0, 255).astype(np.uint8)
    rule = KeyFrameRule(every=10, threshold=0.08, cells=7)
    keys = key_frames(rule, signature(rule, thumbnails(noisy, 4)), range(30))
    assert np.flatnonzero(keys).tolist() == [0, 10, 20]
    noisy[5:, 0:24, 0:24] = 230  # a bright 24 px square arrives in frame 5
    keys = key_frames(rule, signature(rule, thumbnails(noisy, 4)), range(30))
    assert np.flatnonzero(keys).tolist() == [0, 5, 10, 20]


def test_held_index_points_at_the_last_key_frame():
    assert held_index(np.array([1, 0, 0, 1, 0], np.bool_)).tolist() == [0, 0, 0, 3, 3]
    with pytest.raises(ValueError, match="first frame"):
        held_index(np.array([0, 1], np.bool_))


def test_slots_follow_the_sampling_grid():
    assert [sample_slot(t, 10) for t in (0.0, 0.0999999, 0.1, 0.2999999999, 12.34)] == \
        [0, 1, 1, 3, 123]


@pytest.mark.parametrize("kwargs", [{"every": 0}, {"cells": 0}, {"threshold": -1.0},
                                    {"threshold": float("nan")}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="keyframes"):
        KeyFrameRule(**kwargs)
