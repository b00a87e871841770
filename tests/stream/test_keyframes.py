"""The key-frame rule: thumbnails, the schedule, and its exactness on chunks."""

from __future__ import annotations

import numpy as np
import pytest

from stream.model.keyframes import (
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


def test_a_late_start_rebuilds_the_whole_schedule_after_one_window():
    """What archive chunks rely on: started ``every`` slots early, a fresh schedule agrees with
    the whole sequence's from there on, wherever it starts."""
    rule = KeyFrameRule(every=5, threshold=0.1, cells=2)
    rng = np.random.default_rng(3)
    steps = rng.choice([0.0, 0.04, 0.3], size=(200, 3, 2, 2), p=[0.6, 0.3, 0.1])
    sigs = np.cumsum(steps, axis=0).astype(np.float32)
    slots = np.arange(200)
    whole = key_frames(rule, sigs, slots)
    assert 0.2 < whole.mean() < 0.8
    for start in range(0, 190, 7):
        late = key_frames(rule, sigs[start:], slots[start:])
        assert late[rule.every:].tolist() == whole[start + rule.every:].tolist()


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
