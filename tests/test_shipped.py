"""The shipped artifacts: models/shapes and the examples/shapes sample video."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrcn.data import frame_references, load_dataset
from lrcn.metrics import frame_exact_match
from lrcn.world import NOVEL_TRIPLES, WorldConfig, generate_split
from stream.media.frames import read_sampled_frames
from stream.model.bundle import open_bundle, read_bundle
from stream.model.sessions import SessionSettings

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "shapes"
SAMPLE = ROOT / "examples" / "shapes"

# The Makefile's splits use seeds 1-7: these are data the shipped model never saw.
UNSEEN_SEED, UNSEEN_VIDEOS = 21, 10
UNSEEN_STILLS_SEED, UNSEEN_STILLS = 22, 12


def test_shipped_bundle_is_valid_small_and_evaluated():
    loaded = open_bundle(BUNDLE, SessionSettings(device="cpu"))
    precision = loaded.bundle.precision
    assert (precision["weights"], precision["compute"]) == ("float16", "float32")
    # The int8 encoder is made by export.quantize and used by default only where its captions
    # agree with fp32's on at least 99% of the test split's frames.
    assert precision["int8"]["agreement"]["identical_share"] >= 0.99
    assert (BUNDLE / "encoder_int8.onnx").is_file()
    # fp16 fp32-computing encoder (12.8 MB), int8 encoder (6.8 MB), memory, captioner.
    assert sum(p.stat().st_size for p in (ROOT / "models").rglob("*") if p.is_file()) < 30e6
    splits = loaded.bundle.evaluation["onnx_core"]["splits"]
    assert set(splits) == {"test", "novel", "stills", "25fps", "60fps", "antialiased",
                           "independent", "independent-stills"}
    onnx_core = splits["test"]["greedy"]
    assert onnx_core["frame_exact_match"] >= 0.90 and onnx_core["event_exact_match"] >= 0.95
    # Captions say what the frames show: the sentence or the appearance, and on still images
    # the appearance.
    for name in ("test", "25fps", "60fps", "antialiased"):
        assert splits[name]["greedy"]["truthful_frames"] >= 0.96, name
    assert splits["stills"]["greedy"]["frame_exact_match"] >= 0.9
    # ShapesWorld drawn by the second, independent renderer (lrcn.independent_world).
    assert splits["independent"]["greedy"]["truthful_frames"] >= 0.9
    assert splits["independent-stills"]["greedy"]["frame_exact_match"] >= 0.9
    # Key frames, and the same evaluation with every frame encoded for comparison.
    rule = loaded.bundle.keyframes
    assert rule.every > 1 and rule.threshold > 0
    for split in ("test", "novel"):
        keys = loaded.bundle.evaluation["onnx_core"]["splits"][split]
        every = loaded.bundle.evaluation["onnx_core_encode_every_frame"]["splits"][split]
        assert every["encoder_calls_per_frame"] == 1.0
        assert 1 / rule.every <= keys["encoder_calls_per_frame"] < 0.6
        assert every["greedy"]["frames"] == keys["greedy"]["frames"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_stream_captions_an_unseen_shapesworld_split_correctly(tmp_path):
    """A fresh test split (like the Makefile's, other seed) through run_stream.py, scored per
    frame against its annotations: a runtime regression fails this, not only a bad bundle."""
    split = tmp_path / "unseen"
    generate_split(split, videos=UNSEEN_VIDEOS, seed=UNSEEN_SEED,
                   config=WorldConfig(holdout=NOVEL_TRIPLES), progress=False)
    items = load_dataset(split).items
    out = tmp_path / "captions"
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"),
                           *(str(item.path) for item in items), "--jsonl", f"{out}/",
                           "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=480, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    sample_fps = read_bundle(BUNDLE).sample_fps
    correct = counted = 0
    for item in items:
        events = [json.loads(line) for line in
                  (out / f"{item.video_id}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert events[-1]["kind"] == "ended" and events[-1]["error"] is None
        captions = [e for e in events if e["type"] == "caption"]
        # Every frame that training and evaluation sample (stream.media.frames), and only those.
        _, times = read_sampled_frames(item.path, sample_fps, (8, 8))
        np.testing.assert_allclose([e["pts"] for e in captions], times, atol=1e-6)
        c, n = frame_exact_match([e["caption"] for e in captions],
                                 frame_references(item, [e["pts"] for e in captions]))
        correct, counted = correct + c, counted + n
    assert counted >= 500
    assert correct / counted >= 0.90, f"frame exact match {correct}/{counted}"


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
    # Each scene: what one frame shows, then, once the frames show it, the motion. The stream
    # starts on the first scene's appearance, and every sentence is said, in order.
    assert captions[0] == annotation["appearance"][0]
    said = iter(captions)
    assert all(any(c == sentence for c in said) for sentence in annotation["sentences"])
    assert captions[-1] == annotation["sentences"][-1]
    # Between two sentences only the new scene's appearance, or one wrong caption at most (the
    # previous bundle kept the first scene's motion for one frame at 2.2 s: "a red circle moves
    # down"; the current one says only what is there).
    allowed = set(annotation["sentences"]) | set(annotation["appearance"])
    assert len(captions) <= 2 * len(annotation["sentences"])
    assert sum(c not in allowed for c in captions) <= 1, captions


def test_the_alert_example_raises_one_alert_per_matching_event_and_clears_it():
    [annotation] = json.loads((SAMPLE / "captions.json").read_text()).values()
    pattern = "moves (left|down)"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "alert.py"), pattern],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line.split(None, 3) for line in done.stdout.splitlines()]
    alerts = [rest for _, kind, _, rest in lines if kind == "ALERT"]
    clears = [rest.rsplit("  (", 1)[0] for _, kind, _, rest in lines if kind == "CLEAR"]
    matching = [s for s in annotation["sentences"] if re.search(pattern, s)]
    assert alerts == clears == matching  # one alert per event, each cleared when it ended
    assert [kind for _, kind, _, _ in lines] == ["ALERT", "CLEAR"] * len(matching)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_still_images_get_what_they_show_through_every_entry_point(tmp_path):
    """Unseen still images (varied looks, PNG and JPEG) through run_stream.py, the library and
    run_archive.py: each is captioned with its appearance ("a red circle"), never a motion."""
    from lrcn.world import generate_stills
    from stream.model.captioning import CaptionCore

    folder = tmp_path / "stills"
    generate_stills(folder, UNSEEN_STILLS, seed=UNSEEN_STILLS_SEED,
                    config=WorldConfig(holdout=NOVEL_TRIPLES, vary=True), progress=False)
    items = load_dataset(folder).items
    wanted = {item.path.name: item.segments[0].sentences[0] for item in items}

    out = tmp_path / "stream"
    done = subprocess.run([sys.executable, str(ROOT / "run_stream.py"),
                           *(str(item.path) for item in items), "--jsonl", f"{out}/",
                           "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    by_stream = {}
    for item in items:
        events = [json.loads(line) for line in
                  (out / f"{item.path.stem}.jsonl").read_text(encoding="utf-8").splitlines()]
        [caption] = [e["caption"] for e in events if e["type"] == "caption"]
        by_stream[item.path.name] = caption

    loaded = open_bundle(BUNDLE, SessionSettings(device="cpu"))
    core = CaptionCore(loaded)
    size = (loaded.bundle.input_size, loaded.bundle.input_size)
    by_library = {}
    for item in items:
        frames, _ = read_sampled_frames(item.path, loaded.bundle.sample_fps, size)
        [caption] = core.step(frames, stream_ids=[item.path.name], resets=[True])
        by_library[item.path.name] = caption.text

    archive_out = tmp_path / "archive"
    done = subprocess.run([sys.executable, str(ROOT / "run_archive.py"), str(folder),
                           "--out", str(archive_out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    by_archive = {}
    for name in wanted:
        lines = [json.loads(line) for line in
                 (archive_out / f"{name}.jsonl").read_text().splitlines()]
        [caption] = [e for e in lines if e["type"] == "caption"]
        assert [e["type"] for e in lines] == ["caption", "new", "end"]  # a still: one event
        assert lines[1]["caption"] == lines[2]["caption"] == caption["caption"] == caption["shown"]
        by_archive[name] = caption["caption"]

    assert by_stream == by_library == by_archive
    right = sum(by_stream[name] == caption for name, caption in wanted.items())
    assert right >= UNSEEN_STILLS - 1, (by_stream, wanted)
    # Whatever it says of an image, it names no motion.
    assert all(len(caption.split()) == 3 for caption in by_stream.values()), by_stream
