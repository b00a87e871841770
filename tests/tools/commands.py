"""The project's command lines as a user runs them: a separate process from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIVE = "lavfi:testsrc2=size=160x120:rate=30,realtime"  # a paced 30 fps camera


_NOT_INSTALLED = '''
import sys

class _NotInstalled:
    """Python's own error for a package that is not installed, for the names below."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in {missing!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled)
'''


def without_modules(missing: Iterable[str], where: Path) -> dict[str, str]:
    """An environment for a child Python in which the top-level modules ``missing`` are not
    installed, for real: a ``sitecustomize`` (written into ``where``) puts a finder first on
    ``sys.meta_path`` that raises the ModuleNotFoundError Python raises for a package that is
    not installed (same message, same ``name``), on every import path."""
    (where / "sitecustomize.py").write_text(_NOT_INSTALLED.format(missing=set(missing)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")]))
    return env


def run_stream(*args: str, timeout: float = 240, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """``python run_stream.py ARGS`` from the checkout's root, its output captured."""
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
