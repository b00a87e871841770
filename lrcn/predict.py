"""Captions of encoded videos by a model, as the runtime makes them (features held between key
frames), and their per-frame accuracy: what training validates on and evaluation scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lrcn.data import frame_truthful_targets
from lrcn.features import EncodedVideo
from lrcn.metrics import frame_exact_match
from lrcn.model import LRCN
from lrcn.vocab import Vocabulary
from stream.model.keyframes import KeyFrameRule, held_index, key_frames, sample_slot, signature


def predict(model: LRCN, videos: Sequence[EncodedVideo], vocab: Vocabulary, sample_fps: float,
            beam: int = 1, rule: KeyFrameRule | None = None) -> list[list[str]]:
    """Caption every sampled frame of each video (fresh state per video, features held between
    the key frames of ``rule``, by default the model's, as the runtime holds them)."""
    model.eval()
    rule = rule or model.config.keyframes
    out = []
    for video in videos:
        held = held_index(video_key_frames(rule, video, sample_fps))
        ids = model.caption_features(torch.from_numpy(video.appearance[held]),
                                     torch.from_numpy(video.thumbs), beam=beam)
        out.append([vocab.decode(i) for i in ids])
    return out


def video_key_frames(rule: KeyFrameRule, video: EncodedVideo, sample_fps: float) -> np.ndarray:
    """The key-frame flags (T,) of an encoded video captioned from its start."""
    return key_frames(rule, signature(rule, video.thumbs),
                      [sample_slot(t, sample_fps) for t in video.times])


def frame_accuracy(model: LRCN, videos: Sequence[EncodedVideo], vocab: Vocabulary,
                   sample_fps: float) -> float:
    """Greedy per-frame exact match over ``videos`` against what each frame may say (the
    appearance until a motion is evident, as training teaches)."""
    correct = counted = 0
    for video, captions in zip(videos, predict(model, videos, vocab, sample_fps), strict=True):
        c, n = frame_exact_match(captions, frame_truthful_targets(video.item, video.times))
        correct, counted = correct + c, counted + n
    return correct / max(counted, 1)
