"""Shared test fixtures.

Tests that need a system tool (Java for METEOR, ...) call ``require_tool``. Normally a missing
tool skips the test; with ``LRCN_STRICT=1`` (set by ``.ci/run``) it fails instead, so that CI can
never pass by silently skipping.

Time limits: pytest-timeout's ``timeout`` (pyproject.toml) bounds each test function alone
(``timeout_func_only``), so a session fixture that trains a model does not eat into the budget of
whichever test happens to use it first. Instead every fixture's setup, and every test's teardown,
gets its own ``fixture_timeout`` here. Nothing can hang, and no test fails because of the order
the tests ran in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

import pytest

STRICT = os.environ.get("LRCN_STRICT", "") not in ("", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("fixture_timeout", "seconds that each fixture's setup, and each test's "
                  "teardown, may take (0: no limit); the test function has `timeout`",
                  default="300")


@contextlib.contextmanager
def _time_limit(seconds: float, what: str) -> Iterator[None]:
    """Fail with a one-line message naming ``what`` if the block runs over ``seconds``."""
    armed = (seconds > 0 and threading.current_thread() is threading.main_thread()
             # already inside a test's own timeout (a fixture requested from a test body)
             and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not armed:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, stack in sys._current_frames().items():
            if ident != threading.get_ident():
                print(f"--- thread {names.get(ident, ident)} ---\n"
                      + "".join(traceback.format_stack(stack)), file=sys.stderr)
        pytest.fail(f"{what} took more than {seconds:g} s (fixture_timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _FixtureTimeLimits:
    """The hooks behind ``fixture_timeout``, registered as a plugin rather than defined in this
    conftest: pytest asks a session fixture's hooks of the session, which sees no conftest below
    the root folder."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
        # Called after the fixtures this one depends on are set up: each is timed on its own.
        with _time_limit(self.seconds, f"fixture {fixturedef.argname!r}"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item):
        with _time_limit(self.seconds, f"teardown after {item.nodeid}"):
            return (yield)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_FixtureTimeLimits(float(config.getini("fixture_timeout"))),
                                  "lrcn-fixture-time-limits")


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


@pytest.fixture(scope="session")
def tiny_int8_bundle(tiny_bundle, tiny_world, tmp_path_factory):
    """``tiny_bundle`` with an int8 encoder (export.quantize), calibrated on two of
    ``tiny_world``'s videos, its agreement with fp32 measured on the other two. Tests must not
    modify it: copy it."""
    from export.quantize import quantize_bundle

    videos = sorted(str(v) for v in (tiny_world / "videos").glob("*.mp4"))
    out = tmp_path_factory.mktemp("bundles") / "tiny-int8"
    quantize_bundle(tiny_bundle, videos[:2], videos[2:], out=out)
    return out


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


def ctrl_c_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test sends SIGINT: default SIGINT handling.

    A shell that starts a job in the background (``cmd &``, as CI runners may) makes it ignore
    SIGINT, its children inherit that, and a Python started with SIGINT ignored never raises
    KeyboardInterrupt. A terminal's Ctrl-C reaches a foreground program, which handles it.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
