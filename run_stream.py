#!/usr/bin/env python3
"""Live captions for videos, cameras and network streams: ``python run_stream.py --help``.

A thin wrapper over :mod:`stream.cli.live` (also installed as the ``run-stream`` command), so
that it runs from a checkout without installing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from stream.cli.live import main  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing started, nothing to finish
    print("interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
