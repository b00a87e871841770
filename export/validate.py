"""``python -m export.validate BUNDLE``: check a model bundle the way the runtime does.

Prints one line: "ok ..." with what was checked, or the first problem, naming the file.
Exit status 0 when valid, 1 when not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.bundle import open_bundle
from stream.errors import StreamError
from stream.sessions import DEVICES, SessionSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.validate",
        description="Validate a model bundle: bundle.json fields, files and sha256 checksums, "
                    "graph inputs and outputs against bundle.json, vocabulary against the "
                    "captioner, and one dummy run of every graph.")
    parser.add_argument("bundle", type=Path, help="bundle directory (e.g. models/shapes)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where to run the dummy pass (default: cpu)")
    args = parser.parse_args(argv)
    try:
        loaded = open_bundle(args.bundle, SessionSettings(device=args.device))
    except StreamError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 1
    b = loaded.bundle
    print(f"ok {b.path}: {len(b.graphs)} graphs, {len(b.checksums)} checksums, "
          f"{b.backbone} {b.input_size}px, {b.sample_fps:g} fps, {b.vocab_size} tokens, "
          f"weights {b.precision['weights']}, on {loaded.providers[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
