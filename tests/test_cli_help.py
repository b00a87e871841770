"""The command lines' help, as a user sees it: every option the parser takes is listed and
explained in ``--help``; ``run_stream.py --list-devices`` prints what it finds."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.cli import archive as archive_cli
from stream.cli import live as cli
from stream.media.sources import list_devices

ROOT = Path(__file__).resolve().parents[1]

CLIS = [
    ("run_stream.py", cli.get_args_parser),  # live captions
    ("run_archive.py", archive_cli.get_args_parser),  # archive captioning
]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def _squeezed(text: str) -> str:
    """``text`` without whitespace: help is rewrapped (even at hyphens) to the terminal."""
    return re.sub(r"\s+", "", text)


def undocumented(parser: argparse.ArgumentParser, shown: str) -> list[str]:
    """What of ``parser``'s options and arguments the help text ``shown`` leaves out."""
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        names = action.option_strings or [str(action.metavar or action.dest)]
        for name in names:
            if not re.search(rf"(?<![\w-]){re.escape(str(name))}(?![\w-])", shown):
                problems.append(f"{name} is not listed")
        if not action.help or action.help == argparse.SUPPRESS:
            problems.append(f"{names[0]} has no help text")
        elif _squeezed(formatter._expand_help(action)) not in _squeezed(shown):
            problems.append(f"{names[0]}'s help text is not shown")
        for choice in action.choices or ():
            if str(choice) not in shown:
                problems.append(f"{names[0]}: choice {choice!r} is not shown")
    if parser.epilog and _squeezed(parser.epilog) not in _squeezed(shown):
        problems.append("the epilog (source forms, examples, exit codes) is not shown")
    return problems


@pytest.mark.parametrize(("script", "get_parser"), CLIS, ids=[s for s, _ in CLIS])
def test_help_lists_and_explains_every_option_of_the_parser(
        script: str, get_parser: Callable[[], argparse.ArgumentParser]):
    parser = get_parser()
    assert len(parser._actions) > 10  # the real parser, not an empty one
    result = run(script, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: {script} ")
    assert undocumented(parser, result.stdout) == []


def test_list_devices_prints_the_cameras_ffmpeg_finds():
    expected = list_devices()
    result = run("run_stream.py", "--list-devices")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"webcam:{i}\t{name}" for i, name in
                                          enumerate(expected)]
    # Nothing else: no logging, no model loaded, no captions; an empty list says so on stderr.
    assert result.stderr == ("" if expected else "no cameras found\n")


@pytest.mark.parametrize("script", [s for s, _ in CLIS])
def test_help_names_the_default_sample_and_model_by_paths_that_exist(script: str):
    """Run from the checkout, --help names the bundled sample and model by their paths there
    (relative to where it runs), and those paths exist."""
    shown = _squeezed(run(script, "--help").stdout)
    for path in ("examples/shapes/videos/shapes_s5_00000.mp4", "models/shapes"):
        assert f"default:thebundled{'sample' if 'examples' in path else 'model'},{path}" in shown
        assert (ROOT / path).exists()
