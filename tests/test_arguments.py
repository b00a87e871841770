"""Command-line mistakes, as a user sees them: one line on stderr in the user's words, exit code
2, a suggestion for a mistyped option, no option taken for a longer one it abbreviates; and every
command line in the project built on :class:`stream.cli.arguments.Parser`, which does all that."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.cli import exits
from stream.cli import live as live_cli
from stream.cli.arguments import (
    Parser,
    frame_size,
    number,
    positive_int,
    whole_number,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "lrcn", "export", "bench")

# Every module of the project that has a parser factory.
FACTORIES = ["stream.cli.live", "stream.cli.archive", "lrcn.world", "lrcn.independent_world",
             "lrcn.evaluate", "lrcn.train", "export.recover", "export.quantize", "export.__main__",
             "bench.capacity_sweep", "bench.engines", "bench.speed", "bench.precision",
             "bench.state_transfers", "bench.gpu_drive", "bench.__main__", "bench.gpu_kit"]


def error_of(parser: argparse.ArgumentParser, argv: list[str],
             capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``parser`` writes for ``argv``, after checking it exits 2 with just that."""
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == exits.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize(("argv", "message"), [
    # one letter too many
    (["--srtt", "out.srt"], "unrecognized arguments: --srtt (did you mean --srt?)"),
    # the --option=value form is matched on its option
    (["--srtt=out.srt"], "unrecognized arguments: --srtt=out.srt (did you mean --srt?)"),
    # a prefix is not taken for the longer option, but names it
    (["--json", "x"], "unrecognized arguments: --json (did you mean --jsonl?)"),
    # one dash where two belong
    (["-srt", "x"], "unrecognized arguments: -srt (did you mean --srt?)"),
    # each of several gets its own suggestion
    (["--srtt", "a", "--vttt", "b"],
     "unrecognized arguments: --srtt (did you mean --srt?) --vttt (did you mean --vtt?) b"),
    # nothing near: no guess, a pointer to the help
    (["--frobnicate"], "unrecognized arguments: --frobnicate (see --help)"),
])
def test_an_unknown_option_names_the_nearest_one(argv, message, capsys):
    err = error_of(live_cli.get_args_parser(), argv, capsys)
    assert err == f"run_stream.py: error: {message}"


def test_a_value_left_over_is_not_matched_as_an_option(capsys):
    parser = Parser(prog="prog")
    parser.add_argument("--srt")
    err = error_of(parser, ["srt"], capsys)
    assert err == "prog: error: unrecognized arguments: srt (see --help)"


def test_abbreviations_are_off_even_when_asked_for():
    parser = Parser(prog="prog", allow_abbrev=True)
    parser.add_argument("--jsonl")
    assert parser.allow_abbrev is False


def test_a_bad_choice_is_still_one_clear_line(capsys):
    err = error_of(live_cli.get_args_parser(), ["--device", "gpu"], capsys)
    assert err.startswith("run_stream.py: error: argument --device: invalid choice: 'gpu' "
                          "(choose from 'auto', 'cpu', 'cuda'")


@pytest.mark.parametrize(("kind", "text", "message"), [
    (positive_int, "eight", "expected a whole number, got 'eight'"),
    (positive_int, "0", "must be at least 1, got 0"),
    (whole_number, "1.5", "expected a whole number, got '1.5'"),
    (number, "abc", "expected a number, got 'abc'"),
    (frame_size, "640", "expected WIDTHxHEIGHT, got '640'"),
    (frame_size, "0x480", "width and height must be positive, got '0x480'"),
    # argparse's own int and float are replaced by the two above
    (int, "abc", "expected a whole number, got 'abc'"),
    (float, "abc", "expected a number, got 'abc'"),
    # run_stream.py's own
    (live_cli._non_negative_int, "x", "expected a whole number, got 'x'"),
    (live_cli._non_negative_int, "-1", "must be 0 or more, got -1"),
    (live_cli._positive, "abc", "expected a number, got 'abc'"),
    (live_cli._positive, "0", "must be a positive number, got 0"),
    (live_cli._non_negative, "abc", "expected a number, got 'abc'"),
    (live_cli._non_negative, "inf", "must be a number >= 0, got inf"),
])
def test_a_bad_value_is_said_in_the_users_words(kind: Callable[[str], object], text, message,
                                                capsys):
    parser = Parser(prog="prog")
    parser.add_argument("--value", type=kind)
    err = error_of(parser, ["--value", text], capsys)
    assert err == f"prog: error: argument --value: {message}"


@pytest.mark.parametrize("module", FACTORIES)
def test_every_parser_is_the_projects_and_says_bad_values_in_words(module):
    parser = importlib.import_module(module).get_args_parser()
    assert isinstance(parser, Parser)
    assert parser.allow_abbrev is False
    parsers = [parser] + [sub for action in parser._actions
                          if isinstance(action, argparse._SubParsersAction)
                          for sub in action.choices.values()]
    for each in parsers:
        for action in each._actions:
            if action.type is None:
                continue
            try:
                each._get_value(action, "abc")
            except argparse.ArgumentError as error:
                said = str(error).partition(": ")[2]  # past "argument --option"
                name = getattr(action.type, "__name__", repr(action.type))
                assert "invalid" not in said, f"{module}: {error}"
                assert not re.search(rf"\b{re.escape(name)}\b", said), f"{module}: {error}"


def test_no_parser_is_built_past_the_projects():
    """Parsers built inside a ``main`` (no factory to import) are found in the source."""
    built = [f"{path.relative_to(ROOT)}:{number}"
             for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             if path != ROOT / "stream" / "cli" / "arguments.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bArgumentParser\(", line)]
    assert built == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-batch", "eight"], "argument --max-batch: expected a whole number, got 'eight'"),
    (["--srtt", "out.srt"], "unrecognized arguments: --srtt (did you mean --srt?)"),
    (["--json", "x"], "unrecognized arguments: --json (did you mean --jsonl?)"),
])
def test_run_stream_stops_at_a_bad_command_line_with_one_line(argv, message):
    done = subprocess.run([sys.executable, "run_stream.py", *argv], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == exits.USAGE
    assert done.stderr.splitlines() == [f"run_stream.py: error: {message}"]
    assert done.stdout == ""  # no captions: nothing ran
