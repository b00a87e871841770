"""The project's command lines as a user runs them: a separate process from the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIVE = "lavfi:testsrc2=size=160x120:rate=30,realtime"  # a paced 30 fps camera


def run_stream(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python run_stream.py ARGS`` from the checkout's root, its output captured."""
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
