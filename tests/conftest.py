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
