"""Checkpoints: state_dict + model config + vocabulary + provenance, never pickled modules.

Loading rebuilds the model from its config, then loads the weights. A frozen ImageNet backbone is
not stored (it is rebuilt from its installed weights file), which keeps checkpoints small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lrcn.model import LRCN, LRCNConfig
from lrcn.vocab import Vocabulary
from stream.files import write_atomically

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or of an unknown format (names the file)."""


def save_checkpoint(path: str | Path, model: LRCN, vocab: Vocabulary, **extra: Any) -> None:
    """Write atomically: a crash leaves either the old file or the complete new one."""
    payload = {"format": FORMAT_VERSION, "config": model.config.to_dict(),
               "vocab": vocab.to_json(), "state_dict": model.trainable_state_dict(), **extra}
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format")
    return payload


def load_checkpoint(path: str | Path) -> tuple[LRCN, Vocabulary, dict[str, Any]]:
    """Rebuild the model in eval mode; returns (model, vocabulary, the whole payload)."""
    payload = read_checkpoint(path)
    config = LRCNConfig.from_dict(payload["config"])
    model = LRCN(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    stored_backbone = not any(k.startswith("encoder.backbone.") for k in missing)
    bad = [k for k in missing if not k.startswith("encoder.backbone.")] + list(unexpected)
    if bad or (not stored_backbone and (config.finetune or not config.pretrained)):
        raise CheckpointError(f"{path}: weights do not match the model config (e.g. {bad[:3]})")
    return model.eval(), Vocabulary.from_json(payload["vocab"]), payload
