"""The GPU check's own measures, run here on the CPU: the recurrent state's host transfers per
step, and the capacity sweep's stopping rule and record."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench import capacity_sweep
from bench.state_transfers import measure
from stream.engines.settings import PipelineSettings
from stream.model.bundle import open_bundle
from stream.model.sessions import SessionSettings
from stream.paths import DEFAULT_BUNDLE


@pytest.fixture(scope="module")
def loaded():
    return open_bundle(DEFAULT_BUNDLE, SessionSettings(device="cpu"))


def test_with_io_binding_no_state_crosses_after_the_first_step(loaded):
    kept = measure(loaded, io_binding=True, streams=3, steps=4)
    assert kept["state_stays_on_device"] is True
    assert kept["resident_state_on"] == ["cpu"]  # the device of this machine's sessions
    assert not any(key.startswith("state_") for key in kept["per_step"])
    assert kept["per_step"]["other_to_device_tensors"] > 0  # frames and tokens still cross


def test_without_io_binding_the_whole_state_crosses_both_ways_every_step(loaded):
    plain = measure(loaded, io_binding=False, streams=3, steps=4)
    assert plain["state_stays_on_device"] is False
    per_step = plain["per_step"]
    assert per_step["state_to_device_tensors"] == per_step["state_to_host_tensors"] == 4
    assert per_step["state_to_device_bytes"] == per_step["state_to_host_bytes"] > 0


def _sweep_args(tmp_path, counts):
    return SimpleNamespace(counts=counts, seconds=1.0, size_label="640x480", hwaccel="none",
                           device="cpu", precision="auto", p99_ms=500.0,
                           out=tmp_path / "sweep.json")


@pytest.mark.parametrize("results, measured, most", [
    # sustained at 1 and 2, not at 4: 8 is never run
    ({1: (0.0, 50.0), 2: (0.0, 120.0), 4: (0.2, 900.0)}, ["1", "2", "4"], 2),
    # p99 over the limit alone ends the sweep
    ({1: (0.0, 600.0)}, ["1"], 0),
    # decoders that fell behind their cameras: nothing dropped, yet not sustained
    ({1: (0.0, 50.0, 0.5)}, ["1"], 0),
])
def test_the_sweep_stops_at_the_first_count_not_sustained(tmp_path, monkeypatch, results,
                                                          measured, most):
    written = []

    def fake_live_run(args, video, n, seconds, settings):
        written.append(json.loads(args.out.read_text()))  # rewritten before every run
        dropped, p99, offered = (*results[n], 1.0)[:3]
        return {"streams": n, "dropped_fraction": dropped, "latency_ms": {"p99": p99},
                "offered_fraction": offered, "latency_samples": [1.0]}

    monkeypatch.setattr(capacity_sweep, "live_run", fake_live_run)
    args = _sweep_args(tmp_path, [8, 4, 2, 1])
    record = capacity_sweep.sweep(args, tmp_path / "v.mp4", PipelineSettings(), 1e18)
    assert list(record["runs"]) == measured
    assert record["most_sustained"] == most
    assert "latency_samples" not in record["runs"]["1"]
    assert [list(w["runs"]) for w in written] == [measured[:k] for k in range(len(measured))]


def test_a_run_that_fails_ends_the_sweep_and_is_recorded(tmp_path, monkeypatch):
    def failing(args, video, n, seconds, settings):
        raise RuntimeError("bench.live failed: ['error: device cuda: no NVIDIA driver']")

    monkeypatch.setattr(capacity_sweep, "live_run", failing)
    record = capacity_sweep.sweep(_sweep_args(tmp_path, [1, 2]), tmp_path / "v.mp4",
                                  PipelineSettings(), 1e18)
    assert record["runs"] == {"1": {"failed": "bench.live failed: ['error: device cuda: no "
                                              "NVIDIA driver']"}}
    assert record["most_sustained"] == 0


def test_counts_that_would_not_fit_the_budget_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity_sweep, "live_run", lambda *a: pytest.fail("ran"))
    record = capacity_sweep.sweep(_sweep_args(tmp_path, [1]), tmp_path / "v.mp4",
                                  PipelineSettings(), deadline=0.0)
    assert record["runs"] == {"1": {"skipped": "out of time"}}
