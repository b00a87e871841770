"""``python -m export.validate BUNDLE``: check a model bundle the way the runtime does.

Prints one line: "ok ..." with what was checked, or the first problem, naming the file.
Exit status 0 when valid, 1 when not.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from stream.cli.arguments import Parser
from stream.errors import StreamError
from stream.files import write_text_atomically
from stream.model.bundle import LoadedBundle, open_bundle
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS, SessionSettings


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m export.validate",
        description="Validate a model bundle: bundle.json fields, files and sha256 checksums, "
                    "graph inputs and outputs against bundle.json, vocabulary against the "
                    "captioner, and one dummy run of every graph.")
    parser.add_argument("bundle", type=Path, help="bundle directory (e.g. models/shapes)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where to run the dummy pass (default: cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--speed", type=int, nargs="*", metavar="BATCH",
                        help="also time the encoder graph at these batch sizes (default 1 8)")
    parser.add_argument("--out", type=Path, help="also write the speeds as JSON here")
    args = parser.parse_args(argv)
    try:
        loaded = open_bundle(args.bundle, SessionSettings(device=args.device,
                                                          precision=args.precision))
    except StreamError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 1
    b = loaded.bundle
    print(f"ok {b.path}: {len(b.graphs)} graphs, {len(b.checksums)} checksums, "
          f"{b.backbone} {b.input_size}px, {b.sample_fps:g} fps, {b.vocab_size} tokens, "
          f"weights {b.precision['weights']}, compute {b.precision['compute']}, "
          f"on {loaded.providers[0]}, encoder {loaded.precision}")
    speeds: dict[str, float] = {}
    if args.speed is not None:
        for batch in args.speed or [1, 8]:
            speeds[str(batch)] = round(encoder_fps(loaded, batch), 1)
            print(f"encoder {batch=}: {speeds[str(batch)]:.1f} frames/s on {loaded.providers[0]}")
    if args.out:
        write_text_atomically(args.out, json.dumps(
            {"bundle": str(b.path), "providers": loaded.providers, "precision": b.precision,
             "encoder_precision": loaded.precision,
             "encoder_frames_per_s": speeds}, indent=1) + "\n")
    return 0


def encoder_fps(loaded: LoadedBundle, batch: int, seconds: float = 3.0) -> float:
    """Frames per second of the encoder graph at ``batch`` (random frames, after a warm-up)."""
    size = loaded.bundle.input_size
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    session = loaded.sessions["encoder"]
    session.run(None, {"frames": frames})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"frames": frames})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
