"""``python -m export.parity``: does a bundle caption exactly as its PyTorch checkpoint does?

Two checks:
1. every graph against its PyTorch module on random inputs at two batch sizes (max abs diff);
2. end to end on a data split: the captions the numpy/ONNX core emits frame by frame against the
   PyTorch model's greedy captions, token for token.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.graphs import example_inputs, graph_modules
from lrcn.checkpoint import load_checkpoint
from lrcn.data import load_dataset
from lrcn.model import LRCN
from stream.cli.arguments import Parser
from stream.files import write_text_atomically
from stream.media.frames import read_sampled_frames
from stream.model.bundle import GRAPH_IO, LoadedBundle, open_bundle
from stream.model.captioning import CaptionCore, caption_sequences
from stream.model.sessions import SessionSettings


def graph_differences(
    model: LRCN, loaded: LoadedBundle, batches: Sequence[int] = (1, 3)
) -> dict[str, float]:
    """Max abs difference between each ONNX graph and its PyTorch module, over ``batches``."""
    modules = graph_modules(model)
    worst = {}
    for role, module in modules.items():
        input_names, output_names = GRAPH_IO[role]
        diff = 0.0
        for seed, batch in enumerate(batches):
            inputs = example_inputs(model, batch, seed=seed + 1, steps=3 * seed + 1)[role]
            with torch.no_grad():
                expected = module(*(inputs[n] for n in input_names))
            if isinstance(expected, torch.Tensor):
                expected = (expected,)
            got = loaded.sessions[role].run(list(output_names),
                                            {n: inputs[n].numpy() for n in input_names})
            for e, g in zip(expected, got, strict=True):
                assert e.shape == g.shape, (role, e.shape, g.shape)
                diff = max(diff, float(np.abs(e.float().numpy() - g.astype(np.float32)).max()))
        worst[role] = diff
    return worst


def caption_agreement(
    model: LRCN, core: CaptionCore, videos: Sequence[np.ndarray],
    times: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Frame-by-frame token agreement between the core and the model's greedy captions, both
    with the bundle's key frames (features held in between), at the frames' ``times``."""
    ours = caption_sequences(core, videos, times=times)
    frames = same = videos_same = keys = 0
    first_mismatch = None
    for v, (frames_v, captions) in enumerate(zip(videos, ours, strict=True)):
        reference = model.caption_frames(
            torch.from_numpy(frames_v), times=None if times is None else times[v].tolist(),
            sample_fps=core.bundle.sample_fps)
        keys += sum(c.encoded for c in captions)
        agree = [list(c.tokens) == r for c, r in zip(captions, reference, strict=True)]
        frames += len(agree)
        same += sum(agree)
        videos_same += all(agree)
        if first_mismatch is None and not all(agree):
            t = agree.index(False)
            first_mismatch = {"video": v, "frame": t, "onnx": captions[t].text,
                              "torch": core.bundle.detokenize(reference[t])}
    return {"videos": len(videos), "videos_identical": videos_same, "frames": frames,
            "frames_identical": same, "frames_encoded": keys, "first_mismatch": first_mismatch}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m export.parity", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="split to caption end to end (optional)")
    parser.add_argument("--limit", type=int, help="only the first N videos of --data")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with torch.no_grad():  # scoped: a caller in the same process keeps its autograd
        return _report(args)


def _report(args: argparse.Namespace) -> int:
    model, _, _ = load_checkpoint(args.checkpoint)
    loaded = open_bundle(args.bundle, SessionSettings(device="cpu", precision="fp32"))
    report: dict[str, Any] = {"graphs_max_abs_diff": graph_differences(model, loaded)}
    print("max abs difference per graph (batch 1 and 3):", report["graphs_max_abs_diff"])
    if args.data is not None:
        items = load_dataset(args.data).items[: args.limit]
        size = (loaded.bundle.input_size, loaded.bundle.input_size)
        decoded = [read_sampled_frames(it.path, loaded.bundle.sample_fps, size) for it in items]
        report["captions"] = caption_agreement(model, CaptionCore(loaded),
                                               [f for f, _ in decoded], [t for _, t in decoded])
        c = report["captions"]
        print(f"captions: {c['frames_identical']}/{c['frames']} frames and "
              f"{c['videos_identical']}/{c['videos']} videos token-for-token identical "
              f"(key frames: {c['frames_encoded']} of {c['frames']} encoded)")
        if c["first_mismatch"]:
            print("first mismatch:", c["first_mismatch"])
    if args.out:
        write_text_atomically(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
