"""Shared test fixtures.

Tests that need a system tool (Java for METEOR, ...) call ``require_tool``. Normally a missing
tool skips the test; with ``LRCN_STRICT=1`` (set by ``.ci/run``) it fails instead, so that CI can
never pass by silently skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

STRICT = os.environ.get("LRCN_STRICT", "") not in ("", "0")


def require_tool(executable: str, why: str) -> str:
    """Return the path of ``executable``, or skip (fail under LRCN_STRICT) when it is missing."""
    path = shutil.which(executable)
    if path is None:
        message = f"{executable} not found on PATH ({why})"
        if STRICT:
            pytest.fail(f"LRCN_STRICT is set but {message}")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Four short ShapesWorld videos (the data behind every tiny model)."""
    from tests.models import make_world

    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_world, tmp_path_factory):
    """A small grid-pooled, two-layer model trained briefly on ``tiny_world``."""
    from tests.models import EXPORT_MODEL, train_tiny

    return train_tiny(tiny_world, tmp_path_factory.mktemp("tiny"), EXPORT_MODEL, epochs=12)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """``tiny_checkpoint`` exported to a float32 bundle. Tests must not modify it: copy it."""
    from export.build import export_bundle

    return export_bundle(tiny_checkpoint, tmp_path_factory.mktemp("bundles") / "tiny")


SYSTEM_PYTHON = "/usr/bin/python3"


def require_rtsp_server() -> str:
    """The system Python, when it can run GStreamer's RTSP server; skip (fail under
    LRCN_STRICT) otherwise. The bindings come from Debian's packages, not from pip."""
    import subprocess

    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    ok = os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60).returncode == 0
    if not ok:
        message = ("GStreamer's RTSP server is not usable from /usr/bin/python3 (apt-get install "
                   "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
                   "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)")
        if STRICT:
            pytest.fail(f"LRCN_STRICT is set but {message}")
        pytest.skip(message)
    return SYSTEM_PYTHON
