"""Write a model bundle from a training checkpoint (see stream/model/bundle.py for the format)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.graphs import export_graphs
from export.precision import compute_fp16, store_weights_fp16
from export.quantize import QuantSettings, add_int8_encoder
from lrcn.checkpoint import load_checkpoint
from lrcn.onnx_export import OPSET
from lrcn.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from stream.archive.inputs import discover
from stream.files import write_directory_atomically
from stream.model.bundle import Bundle, open_bundle, sha256_file
from stream.model.sessions import SessionSettings


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    opset: int = OPSET,
    weights: str = "float32",
    fp16: bool = False,
    evaluation: dict[str, Any] | None = None,
    int8_calibration: Sequence[str] = (),
    int8_agreement: Sequence[str] = (),
    int8_settings: QuantSettings | None = None,
) -> Path:
    """Export ``checkpoint`` to a bundle directory ``out`` and validate it.

    Args:
        weights: "float32", or "float16" to store large weights in half precision.
        fp16: the encoder graph computes in float16 (for GPUs; see export/precision.py).
        evaluation: evaluation results of the checkpoint to record in bundle.json.
        int8_calibration: videos or folders of them: when given, the bundle also gets an int8
            encoder calibrated on them (see export/quantize.py), whose captions are compared
            with fp32's on ``int8_agreement`` (videos or folders) when given.

    The bundle is assembled in a temporary directory next to ``out`` and moved into place only
    once complete and valid; an existing bundle at ``out`` is replaced.
    """
    if weights not in ("float32", "float16"):
        raise ValueError(f"weights must be float32 or float16, got {weights!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    model, vocab, payload = load_checkpoint(checkpoint)
    provenance = payload.get("provenance") or {}
    if "sample_fps" not in provenance:
        raise ValueError(f"{checkpoint}: no sample_fps in the checkpoint's provenance")
    calibration = discover(int8_calibration)[0] if int8_calibration else []
    agreement = discover(int8_agreement)[0] if int8_agreement else []

    def fill(tmp: Path) -> None:
        graphs = export_graphs(model, tmp, opset)
        if weights == "float16":
            for graph in graphs.values():
                store_weights_fp16(tmp / graph.file)
        if fp16:
            compute_fp16(tmp / graphs["encoder"].file)
        cfg = model.config
        bundle = Bundle(
            path=tmp, name=out.name,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            backbone=cfg.backbone, input_size=cfg.input_size, config=cfg.to_dict(),
            sample_fps=provenance["sample_fps"], keyframes=cfg.keyframes,
            max_caption_len=cfg.max_caption_len, tokens=tuple(vocab.to_json()),
            specials={"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "unk": UNK_ID},
            precision={"weights": weights, "compute": "float16" if fp16 else "float32"},
            opset=opset, graphs=graphs, checksums={},
            provenance={**provenance, "checkpoint": checkpoint.name,
                        "checkpoint_sha256": sha256_file(checkpoint),
                        "epoch": payload.get("epoch"), "train_seconds": payload.get("elapsed")},
            evaluation={"checkpoint_val": payload.get("metrics"), **(evaluation or {})})
        for graph in graphs.values():
            bundle = bundle.with_file(graph.file)
        bundle.write()
        open_bundle(tmp, SessionSettings(device="cpu", precision="fp32"))
        if calibration:
            add_int8_encoder(tmp, calibration, agreement, int8_settings or QuantSettings(), out)

    return write_directory_atomically(out, fill)

