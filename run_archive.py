#!/usr/bin/env python3
"""Caption a video archive, resumably: ``python run_archive.py --help``.

A thin wrapper over :mod:`stream.cli.archive` (also installed as the ``run-archive`` command).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from stream.cli.archive import main  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing started, nothing to finish
    print("interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
