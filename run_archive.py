#!/usr/bin/env python3
"""Caption a video archive, resumably: ``python run_archive.py --help``.

A thin wrapper over :mod:`stream.archive_cli` (also installed as the ``run-archive`` command).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream.archive_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
