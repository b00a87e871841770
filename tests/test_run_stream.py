"""run_stream.py as a user runs it: a separate process, real files, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
import webvtt

from lrcn.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "shapes"
LIVE = "lavfi:testsrc2=size=160x120:rate=30,realtime"

pytestmark = pytest.mark.timeout(300)


def run_stream(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def caption_runs(events: list[dict]) -> list[tuple[float, str]]:
    """(start pts, caption) of each run of equal non-empty captions: the expected cues."""
    runs, last = [], None
    for e in events:
        if e["type"] == "caption":
            if e["caption"] != last and e["caption"]:
                runs.append((e["pts"], e["caption"]))
            last = e["caption"]
    return runs


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    result = run_stream("--jsonl", str(out / "c.jsonl"), "--srt", str(out / "c.srt"),
                        "--vtt", str(out / "c.vtt"))
    return result, out


def test_no_arguments_captions_the_sample_with_the_bundled_model(sample_run):
    result, out = sample_run
    assert result.returncode == 0, result.stderr
    events = read_jsonl(out / "c.jsonl")
    captions = [e for e in events if e["type"] == "caption"]
    [item] = load_dataset(SAMPLE).items
    right = sum(item.target_at(e["pts"]) is not None
                and e["caption"] in item.target_at(e["pts"]).sentences for e in captions)
    assert len(captions) >= 80 and right / len(captions) >= 0.9
    # The console shows each caption change once.
    changes = [e["caption"] for e in captions if e["changed"]]
    assert [line.split("s  ", 1)[1] for line in result.stdout.splitlines()] == changes


@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_subtitles_parse_and_agree_with_the_jsonl(sample_run, kind):
    _, out = sample_run
    runs = caption_runs(read_jsonl(out / "c.jsonl"))
    if kind == "srt":
        cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content)
                for c in srt.parse((out / "c.srt").read_text(encoding="utf-8"))]
    else:
        cues = [(c.start_in_seconds + c.start_time.milliseconds / 1000,
                 c.end_in_seconds + c.end_time.milliseconds / 1000, c.text)
                for c in webvtt.read(str(out / "c.vtt"), strict=True)]
    assert len(cues) == len(runs) >= 4
    for (start, end, text), (pts, caption) in zip(cues, runs, strict=True):
        assert text == caption and start == pytest.approx(pts, abs=1e-3) and end > start
    for (_, end, _), (start, _, _) in zip(cues, cues[1:], strict=False):
        assert end <= start + 1e-3


def test_several_sources_one_failing_exit_1_with_one_line_each(tmp_path):
    not_media = tmp_path / "broken.mp4"
    not_media.write_bytes(os.urandom(2000))
    video = SAMPLE / "videos" / "shapes_s5_00000.mp4"
    result = run_stream(str(video), "no/such/clip.mp4", str(not_media), "--quiet",
                        "--jsonl", str(tmp_path / "out"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: no/such/clip.mp4: no such file",
                      next(e for e in errors if e.startswith(f"error: {not_media}: "))]
    assert "Traceback" not in result.stderr
    done = read_jsonl(tmp_path / "out" / "shapes_s5_00000.jsonl")
    assert sum(e["type"] == "caption" for e in done) >= 80 and done[-1]["kind"] == "ended"
    assert read_jsonl(tmp_path / "out" / "clip.jsonl")[-1]["error"]


@pytest.mark.parametrize("args, code, message", [
    (["--model", "no/such/bundle"], 3, "no/such/bundle"),
    (["--max-batch", "0"], 2, "--max-batch"),
    (["--camera-size", "0x480"], 2, "--camera-size"),
    (["--reconnect-delay", "5", "--reconnect-max-delay", "1"], 2, "reconnect delays"),
    (["--device", "tpu"], 2, "--device"),
    (["--queue-size", "-3"], 2, "--queue-size"),
    (["--max-wait-ms", "-1"], 2, "--max-wait-ms"),
    (["--timeout", "nan"], 2, "--timeout"),
    (["--camera-size", "640by480"], 2, "--camera-size"),
    (["--serve", "127.0.0.1:http"], 2, "--serve"),
    (["--serve", "0.0.0.0:8080"], 2, "needs a token"),
    (["--jsonl", "/proc/no/such/dir/x.jsonl"], 4, "/proc/no/such/dir/x.jsonl"),
])
def test_bad_options_and_bundles_exit_with_one_clear_line(args, code, message):
    result = run_stream(*args, timeout=60)
    assert result.returncode == code
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_promptly_with_every_output_complete(tmp_path, sig, code):
    out = {kind: tmp_path / f"live.{kind}" for kind in ("jsonl", "srt", "vtt")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_stream.py"), LIVE, "--quiet",
         *(arg for kind, path in out.items() for arg in (f"--{kind}", str(path)))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out["jsonl"].exists() and out["jsonl"].read_text().count('"type": "caption"') >= 15:
            break
        time.sleep(0.2)
    process.send_signal(sig)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert time.monotonic() - sent < 10
    events = read_jsonl(out["jsonl"])  # every line complete JSON
    runs = caption_runs(events)
    assert len([e for e in events if e["type"] == "caption"]) >= 15
    assert len(list(srt.parse(out["srt"].read_text()))) == len(runs)
    assert len(webvtt.read(str(out["vtt"]), strict=True)) == len(runs)


def test_help_documents_every_option():
    result = run_stream("--help", timeout=60)
    assert result.returncode == 0
    for option in ("--model", "--device", "--jsonl", "--srt", "--vtt", "--max-batch",
                   "--max-wait-ms", "--queue-size", "--reconnect-attempts", "--reconnect-delay",
                   "--timeout", "--log-level", "--list-devices", "--serve", "--serve-token",
                   "--overlay", "rtsp://", "lavfi:", "webcam"):
        assert option in result.stdout


def test_list_devices_runs():
    result = run_stream("--list-devices", timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_installed_as_a_console_script():
    script = Path(sys.executable).parent / "run-stream"
    assert script.exists(), "pip install -e . installs the run-stream command"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "run_stream.py" in result.stdout


def test_the_summary_keeps_latencies_in_constant_memory():
    """Weeks of captions must not grow the summary: latencies go to a fixed histogram."""
    import numpy as np

    from stream.cli import _percentile, _Summary
    from stream.events import CaptionEvent

    summary = _Summary()
    rng = np.random.default_rng(0)
    values = rng.gamma(4, 8, 20_000)
    for i, ms in enumerate(values):
        summary.add(CaptionEvent("s", i, i / 10, 0.0, 0.0, "x", -1.0, float(ms), False, False))
    assert summary.latency_ms.shape == (60_000,) and summary.frames == 20_000
    for q in (0.5, 0.99):
        assert abs(int(_percentile(summary.latency_ms, q)) - np.quantile(values, q)) <= 1.0
