"""Where the project's own files are: the bundled model and the sample video (the defaults of
the command lines and the benchmarks).

In a checkout they are ``models/shapes`` and ``examples/shapes/videos``; a wheel carries the same
files as package data, ``stream/bundled/shapes`` and ``stream/bundled/sample`` (pyproject.toml
maps them), so that an installed ``run-stream`` captions the sample from any directory. The
checkout's copy comes first: ``make bundle`` writes there.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SAMPLE_NAME = "shapes_s5_00000.mp4"
_CHECKOUT_BUNDLE = ROOT / "models" / "shapes"
_INSTALLED = Path(__file__).resolve().parent / "bundled"

if _CHECKOUT_BUNDLE.is_dir() or not (_INSTALLED / "shapes").is_dir():
    DEFAULT_BUNDLE = _CHECKOUT_BUNDLE
    SAMPLE_VIDEO = ROOT / "examples" / "shapes" / "videos" / _SAMPLE_NAME
else:
    DEFAULT_BUNDLE = _INSTALLED / "shapes"
    SAMPLE_VIDEO = _INSTALLED / "sample" / _SAMPLE_NAME


def shown(path: Path) -> str:
    """``path`` as a user would type it from here: relative to the current directory when it
    lies inside it, else in full (for --help and messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
