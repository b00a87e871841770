"""The shipped artifacts: models/shapes and the examples/shapes sample video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stream.bundle import open_bundle
from stream.sessions import SessionSettings

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "shapes"
SAMPLE = ROOT / "examples" / "shapes"


def test_shipped_bundle_is_valid_small_and_evaluated():
    loaded = open_bundle(BUNDLE, SessionSettings(device="cpu"))
    assert loaded.bundle.precision == {"weights": "float16", "compute": "float32"}
    assert sum(p.stat().st_size for p in (ROOT / "models").rglob("*") if p.is_file()) < 25e6
    onnx_core = loaded.bundle.evaluation["onnx_core"]["splits"]["test"]["greedy"]
    assert onnx_core["frame_exact_match"] >= 0.90 and onnx_core["event_exact_match"] >= 0.95


def test_example_captions_the_sample_video_with_its_annotated_sentences():
    video = next((SAMPLE / "videos").glob("*.mp4"))
    assert video.stat().st_size < 2e6
    [annotation] = json.loads((SAMPLE / "captions.json").read_text()).values()
    assert 3 <= len(annotation["sentences"]) <= 4
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "caption_video.py"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    captions = [line.split(None, 1)[1] for line in lines]
    assert captions[0] == annotation["sentences"][0]
    assert captions[-1] == annotation["sentences"][-1]
    assert set(annotation["sentences"]) <= set(captions)
