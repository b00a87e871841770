"""Where the project's own files are: the bundled model and the sample video (the defaults of
the command lines and the benchmarks)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "models" / "shapes"
SAMPLE_VIDEO = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"
