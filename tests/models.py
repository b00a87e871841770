"""Tiny models for tests: a small ShapesWorld, a model trained on it in seconds, its bundle."""

from __future__ import annotations

import json
from pathlib import Path

from lrcn import train
from lrcn.world import WorldConfig, generate_split

# ImageNet EfficientNet-Lite0 features even at 64 x 64 pixels tell the shapes apart; a randomly
# initialised backbone's features barely vary, and overfitting them takes minutes, not seconds.
TINY_MODEL = {
    "backbone": "efficientnet_lite0", "weights": "imagenet", "input_size": 64, "pool": "avg",
    "feature_dim": 32, "motion_pool": 4, "motion_channels": 16, "motion_dim": 32,
    "memory_layers": 1, "memory_hidden": 64, "word_embed": 16, "word_hidden": 64,
    "dropout": 0.0, "sample_fps": 5, "batch_size": 1, "tbptt": 10, "lr": 0.005,
    "random_start": 0.0, "engine": "torch",
    # No wall-clock budget: tests bound training by --epochs alone, so that a machine three
    # times slower trains exactly as much (and reaches the same accuracy), only later.
    "minutes": 0,
}

# For export tests: grid pooling (the cell slices), two stacked memory layers, key frames
# (features held in between, in training and at run time) and the motion stream's size signal
# and object colour, like the shipped model.
EXPORT_MODEL = {**TINY_MODEL, "pool": "grid", "grid": 2, "memory_layers": 2, "key_every": 4,
                "key_threshold": 0.1, "key_cells": 4, "motion_stats": True,
                "object_colour": True}


def make_world(root: Path, videos: int = 4, seed: int = 7) -> Path:
    """A few short ShapesWorld videos with one or two events each."""
    config = WorldConfig(fps=10, min_events=1, max_events=2, min_event_s=1.5, max_event_s=2.0)
    generate_split(root, videos=videos, seed=seed, config=config, progress=False)
    return root


def train_tiny(world: Path, out: Path, config: dict, epochs: int) -> Path:
    """Train ``config`` on ``world`` for ``epochs``; return the best checkpoint's path."""
    file = out / "config.json"
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(config))
    assert train.main(["--config", str(file), "--train", str(world), "--val", str(world),
                       "--out", str(out / "run"), "--no-progress", "--epochs", str(epochs)]) == 0
    return out / "run" / "best.pt"
