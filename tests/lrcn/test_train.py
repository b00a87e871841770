"""A tiny end-to-end run: generate a few ShapesWorld videos, train, overfit, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lrcn import evaluate, train
from lrcn.checkpoint import load_checkpoint
from lrcn.model import LRCN
from tests.conftest import require_tool
from tests.models import TINY_MODEL


# 25 epochs, an evaluation with Java's tokenizer and one resumed epoch: 50-80 s on two busy
# cores; room for a machine three times slower.
@pytest.mark.timeout(600)
def test_overfits_a_handful_of_videos(tiny_world, tmp_path):
    require_tool("java", "PTB tokenizer for the COCO metrics")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MODEL))
    out = tmp_path / "run"
    args = ["--config", str(config), "--train", str(tiny_world), "--val", str(tiny_world),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert train.main([*args, "--epochs", "25"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    # Per-frame targets switch from the appearance to the sentence when the motion is evident:
    # the switch's exact frame is the last thing a tiny model learns.
    assert max(row["val_frame_acc"] for row in log) >= 0.95
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "log.csv", "log.json",
                                               "config.json"}

    result = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(out / "best.pt"), "--data", str(tiny_world),
                          "--out", str(result), "--cache-dir", str(tmp_path / "cache"),
                          "--engine", "torch", "--no-meteor", "--no-progress"]) == 0
    scores = json.loads(result.read_text())["splits"]["test"]
    # Every frame says what it may: the appearance until the motion is evident, then the
    # sentence, which every event ends on.
    assert scores["greedy"]["frame_target_match"] >= 0.95
    assert scores["greedy"]["truthful_frames"] == 1.0
    assert scores["greedy"]["wrong_caption_runs_per_event"] == 0.0
    assert scores["greedy"]["event_exact_match"] == 1.0
    assert scores["greedy"]["coco"]["BLEU-4"] > 0.99
    assert "beam3" in scores

    # Resuming continues after the last epoch rather than starting over.
    epochs_before = len(log)
    assert train.main([*args, "--epochs", str(epochs_before + 1), "--resume"]) == 0
    assert len(json.loads((out / "log.json").read_text())) == epochs_before + 1
    model, vocab, payload = load_checkpoint(out / "last.pt")
    assert payload["epoch"] == epochs_before
    assert model.config.input_size == 64 and "moves" in vocab.words


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert train.main(["--train", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "absent" in err
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pt"), "--data",
                          str(tmp_path)]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_finetune_trains_the_backbone_end_to_end(tiny_world, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_MODEL, "finetune": True}))
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--train", str(tiny_world), "--val",
                       str(tiny_world), "--out", str(out), "--no-progress", "--epochs", "1"]) == 0
    model, _, payload = load_checkpoint(out / "last.pt")
    assert any(k.startswith("encoder.backbone.") for k in payload["state_dict"])
    fresh = LRCN(model.config)
    changed = [name for name, p in model.encoder.backbone.named_parameters()
               if not torch.equal(p, dict(fresh.encoder.backbone.named_parameters())[name])]
    assert changed, "fine-tuning left every backbone weight as it was"


def test_targets_are_the_appearance_until_the_motion_is_evident_from_the_sequence_start():
    import numpy as np

    from lrcn.data import Segment, VideoItem
    from lrcn.features import EncodedVideo
    from lrcn.model import LRCNConfig
    from lrcn.vocab import Vocabulary

    item = VideoItem("v", Path("v.mp4"), (
        Segment(0.0, 0.5, ("a red circle grows",), ("a red circle",), 0.15),
        Segment(0.5, 1.0, ("a blue square moves up",), ("a blue square",), 0.05)))
    times = np.arange(10) / 10
    vocab = Vocabulary.build(["a red circle grows", "a blue square moves up"])
    config = LRCNConfig(vocab_size=len(vocab), input_size=64, pretrained=False)
    m = config.thumb_size
    video = EncodedVideo(item, np.zeros((10, 8), np.float32), np.zeros((10, 3, m, m), np.float32),
                         times)
    (seq,) = train._sequences([video], vocab, config, sample_fps=10)
    said = [vocab.decode(seq.references[k][0]) for k in seq.targets(0)]
    assert said == ["a red circle"] * 2 + ["a red circle grows"] * 3 + ["a blue square"] + [
        "a blue square moves up"] * 4
    # A sequence that starts mid-segment (a random start in training) sees it from there.
    said = [vocab.decode(seq.references[k][0]) for k in seq.targets(2)]
    assert said[:3] == ["a red circle", "a red circle", "a red circle grows"]


@pytest.mark.timeout(600)
def test_trains_on_videos_and_still_images_together(tiny_world, tmp_path, capsys):
    from lrcn.world import WorldConfig, generate_stills

    stills = tmp_path / "stills"
    generate_stills(stills, 6, seed=8, config=WorldConfig(vary=True), progress=False)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MODEL))
    out = tmp_path / "run"
    args = ["--config", str(config), "--val", str(tiny_world), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--epochs", "1"]
    assert train.main([*args, "--train", str(tiny_world), str(stills)]) == 0
    _, vocab, payload = load_checkpoint(out / "best.pt")
    assert payload["provenance"]["train"] == [str(tiny_world), str(stills)]
    # The same items twice is a mistake, named in one line.
    assert train.main([*args, "--train", str(stills), str(stills)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is also in" in err


def test_every_config_field_is_an_option_with_its_default_and_configs_name_them(tmp_path):
    """lrcn.train's options are generated from LRCNConfig and TrainConfig: each field is an
    option, defaults are the fields', and the model built from the options is what the options
    and a --config file say."""
    from dataclasses import fields

    from lrcn.model import LRCNConfig

    config = tmp_path / "c.json"
    config.write_text(json.dumps({"motion": False, "key_every": 4, "lr": 0.01,
                                  "weights": "none"}))
    args = train.parse_args(["--train", "t", "--out", "o", "--config", str(config),
                             "--memory-hidden", "32", "--motion-stats"])
    model = train._model_config(args, vocab_size=9)
    defaults = LRCNConfig(vocab_size=9)
    for f in fields(LRCNConfig):
        expected = {"vocab_size": 9, "pretrained": False, "motion": False, "key_every": 4,
                    "memory_hidden": 32, "motion_stats": True}.get(f.name,
                                                                   getattr(defaults, f.name))
        assert getattr(model, f.name) == expected, f.name
    optimisation = train._train_config(args)
    assert optimisation == train.TrainConfig(lr=0.01)
    assert not train.parse_args(["--train", "t", "--out", "o", "--no-motion"]).motion
    with pytest.raises(SystemExit):
        config.write_text(json.dumps({"no_such_option": 1}))
        train.parse_args(["--train", "t", "--out", "o", "--config", str(config)])


def test_perturbations_are_drawn_per_sequence_and_off_by_default():
    """--thumb-jitter scales and shifts each sequence's colour channels, the same for all its
    frames, within the stated bounds; --appearance-dropout zeroes whole sequences at about its
    rate; with both at 0 (the default) the batch is untouched."""
    import random

    thumbs = torch.rand(64, 5, 3, 4, 4) * 0.5 + 0.25  # away from the clamp at 0 and 1
    same, keep = train._perturb(thumbs, train.TrainConfig(), random.Random(0))
    assert same is thumbs and keep.shape == (64, 1, 1) and bool((keep == 1).all())

    settings = train.TrainConfig(thumb_jitter=0.12, appearance_dropout=0.25)
    jittered, keep = train._perturb(thumbs, settings, random.Random(0))
    gain = (jittered[:, :, :, 0, 0] - jittered[:, :, :, 1, 1]) / (
        thumbs[:, :, :, 0, 0] - thumbs[:, :, :, 1, 1])  # (B, T, 3): one gain per channel
    torch.testing.assert_close(gain, gain[:, :1].expand_as(gain), atol=1e-3, rtol=1e-3)
    assert float((gain - 1).abs().max()) <= 0.12 + 1e-3
    assert float((gain - 1).abs().max()) > 0.06  # it does vary
    shift = jittered - thumbs * gain[:, :1, :, None, None]
    assert float(shift.abs().max()) <= 0.04 + 1e-4
    dropped = int((keep == 0).sum())
    assert set(keep.flatten().tolist()) == {0.0, 1.0} and 6 <= dropped <= 28  # 16 expected
