"""The soak mode runs (20 s here; `make soak` runs it for 10 minutes) and finds no growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import verdict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_a_short_soak_stays_flat(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--seconds", "20", "--every", "2",
                           "--warmup", "6", "--streams", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    result = json.loads(out.read_text())
    assert len(result["samples"]) >= 8
    assert {"rss_mb", "fds", "threads", "queued_frames", "queued_events", "p50_ms",
            "p99_ms"} <= set(result["samples"][-1])
    assert done.returncode == 0, result["verdict"]


def test_the_verdict_catches_growth_and_drift():
    def sample(t, rss, fds, p50, threads=10):
        return {"t": t, "rss_mb": rss, "fds": fds, "p50_ms": p50, "threads": threads,
                "captions": 10}

    flat = [sample(t, 300, 40, 20) for t in range(10)]
    assert verdict(flat, warmup=2)["passed"]
    leaking = [sample(t, 300 + 10 * t, 40, 20) for t in range(10)]
    assert not verdict(leaking, warmup=2)["passed"]
    fds = [sample(t, 300, 40 + t, 20) for t in range(10)]
    assert not verdict(fds, warmup=2)["passed"]
    drifting = [sample(t, 300, 40, 20 + 10 * t) for t in range(10)]
    assert not verdict(drifting, warmup=2)["passed"]
