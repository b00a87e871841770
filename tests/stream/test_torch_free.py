"""The runtime works in a Python where the training side cannot be imported: every module of
the stream package imports, and a video is captioned, with torch, lrcn and export blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from lrcn.checkpoint import load_checkpoint
from lrcn.data import load_dataset
from stream.media.frames import read_sampled_frames

ROOT = Path(__file__).resolve().parents[2]

# What a deployment does not install: PyTorch, the training and export code, and onnx (the
# graph library export uses; the runtime needs only onnxruntime).
BLOCK = textwrap.dedent("""
    import importlib.abc, json, sys

    TRAINING = {"torch", "torchvision", "lrcn", "export", "onnx"}

    class NoTraining(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in TRAINING:
                raise ImportError(f"{name} is not installed on this deployment")
            return None

    sys.meta_path.insert(0, NoTraining())
""")

IMPORT_ALL = BLOCK + textwrap.dedent("""
    import importlib, pkgutil
    import stream

    names = [m.name for m in pkgutil.walk_packages(stream.__path__, "stream.")]
    for name in names:
        importlib.import_module(name)
    print(json.dumps({"imported": names,
                      "training": sorted(m for m in sys.modules if m.split(".")[0] in TRAINING)}))
""")

SCRIPT = BLOCK + textwrap.dedent("""
    from stream.model.bundle import open_bundle
    from stream.model.captioning import CaptionCore, caption_sequences
    from stream.media.frames import read_sampled_frames
    from stream.model.sessions import SessionSettings

    bundle, video = sys.argv[1], sys.argv[2]
    loaded = open_bundle(bundle, SessionSettings(device="auto"))
    b = loaded.bundle
    frames, _ = read_sampled_frames(video, b.sample_fps, (b.input_size, b.input_size))
    [captions] = caption_sequences(CaptionCore(loaded), [frames])
    try:
        import torch  # noqa: F401
        sys.exit("torch imported")
    except ImportError:
        pass
    loaded_training = sorted(m for m in sys.modules if m.split(".")[0] in TRAINING)
    print(json.dumps({"captions": [list(c.tokens) for c in captions],
                      "modules": loaded_training}))
""")


def test_every_stream_module_imports_without_the_training_side():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # pkgutil found every module of the package (checked against the files themselves).
    files = {f"stream.{p.stem}" for p in (ROOT / "stream").glob("*.py") if p.stem != "__init__"}
    assert files and files <= set(result["imported"])
    assert result["training"] == []


def test_stream_captions_a_video_without_torch(tiny_bundle, tiny_checkpoint, tiny_world):
    video = load_dataset(tiny_world).items[0].path
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle), str(video)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    model, _, _ = load_checkpoint(tiny_checkpoint)
    frames, _ = read_sampled_frames(video, 5, (64, 64))
    assert result["captions"] == model.caption_frames(torch.from_numpy(frames))
