"""Does each stream's recurrent state stay on the device? Host transfers per caption step.

    python -m bench.state_transfers [--bundle models/shapes] [--device cuda] [--out X.json]

Captions ``--streams`` streams for ``--steps`` steps through :class:`stream.model.captioning.
CaptionCore`, once with I/O binding (the default on a GPU) and once without, and counts at
the boundary of every ONNX Runtime call what crosses between host and device: inputs given as
host arrays (host -> device) and outputs fetched as host arrays (device -> host), in tensors
and bytes per step, the recurrent state's (h, c, prev, avg) separately. With the state
resident on the device, its transfers per step are 0 in both directions after the first step;
the encoder's frames, the thumbnails and the captions' tokens (decoded inside the memory graph)
cross on every step by design.
Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stream.cli.arguments import Parser
from stream.errors import StreamError
from stream.files import write_text_atomically
from stream.model.bundle import LoadedBundle, open_bundle
from stream.model.captioning import _STATE, CaptionCore, _Graph
from stream.model.sessions import DEVICES, SessionSettings
from stream.paths import DEFAULT_BUNDLE

STATE_NAMES = set(_STATE) | {f"{name}_out" for name in _STATE}


class _Counting:
    """Wraps one graph's ``run`` and counts what crosses the host-device boundary."""

    def __init__(self, graph: _Graph, counts: Counter[str]) -> None:
        self.graph, self.counts = graph, counts
        self.inner = graph.run

    def __call__(self, feeds: dict[str, Any], keep: Any = ()) -> dict[str, Any]:
        out = self.inner(feeds, keep)
        crossed_in: list[tuple[str, Any]]
        crossed_out: list[tuple[str, Any]]
        if self.graph.device is None:  # plain session.run: every input and output crosses
            crossed_in, crossed_out = list(feeds.items()), list(out.items())
        else:
            crossed_in = [(k, v) for k, v in feeds.items() if not isinstance(v, ort.OrtValue)]
            crossed_out = [(k, v) for k, v in out.items() if not isinstance(v, ort.OrtValue)]
        for direction, crossed in (("to_device", crossed_in), ("to_host", crossed_out)):
            for name, value in crossed:
                size = int(np.asarray(value).nbytes)
                kind = "state" if name in STATE_NAMES else "other"
                self.counts[f"{kind}_{direction}_tensors"] += 1
                self.counts[f"{kind}_{direction}_bytes"] += size
        return out


def measure(loaded: LoadedBundle, io_binding: bool, streams: int, steps: int) -> dict[str, Any]:
    """Transfers per step after the first (which starts every stream's state)."""
    core = CaptionCore(loaded, io_binding=io_binding)
    counts: Counter[str] = Counter()
    for graph in (core._memory, core._captioner):
        graph.run = _Counting(graph, counts)  # type: ignore[method-assign]
    size = loaded.bundle.input_size
    rng = np.random.default_rng(0)
    ids = [f"cam{k}" for k in range(streams)]
    frames = rng.integers(0, 256, (steps, streams, size, size, 3), dtype=np.uint8)
    core.step(frames[0], ids, times=[0.0] * streams)
    counts.clear()
    for k in range(1, steps):
        core.step(frames[k], ids, times=[k / loaded.bundle.sample_fps] * streams)
    per_step = {key: round(value / (steps - 1), 2) for key, value in sorted(counts.items())}
    resident = core._resident[1] if core._resident is not None else {}
    where = sorted({v.device_name() for v in resident.values() if isinstance(v, ort.OrtValue)})
    return {"io_binding": io_binding, "per_step": per_step,
            "state_stays_on_device": bool(resident) and not any(
                per_step.get(f"state_{d}_tensors", 0) for d in ("to_device", "to_host")),
            "resident_state_on": where}


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench.state_transfers",
                    description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--device", choices=DEVICES, default="cuda")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.steps < 2 or args.streams < 1:
        print("error: --steps must be at least 2 and --streams at least 1", file=sys.stderr)
        return 2
    try:
        loaded = open_bundle(args.bundle, SessionSettings(device=args.device))
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    result = {"device": args.device, "providers": loaded.providers, "streams": args.streams,
              "steps": args.steps,
              "runs": [measure(loaded, binding, args.streams, args.steps)
                       for binding in (True, False)]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_text_atomically(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
