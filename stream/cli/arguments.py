"""Command-line helpers shared by the project's programs: the parser every command line uses
(:class:`Parser`: one-line errors in the user's words, no abbreviated options, "did you mean"
for a mistyped one), a parser whose help is its module's docstring, the log-level option, the
run of a command (logging, Ctrl-C before the run itself handles it), and argparse types.

Standard library only: ``bench.gpu_drive`` runs on a machine that has nothing else."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from stream.cli import exits


class Parser(argparse.ArgumentParser):
    """The argument parser of every command line in the project. Its errors are one line, exit
    code 2 (the usage is what ``--help`` is for); an option must be spelled out (``--json`` is
    not taken for ``--jsonl``); a mistyped option gets the nearest real one::

        prog: error: unrecognized arguments: --srtt (did you mean --srt?)

    ``type=int`` and ``type=float`` say what they expected, not ``invalid int value``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A prefix silently taken as a longer option is a typo that runs: --json x as --jsonl x.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.register("type", int, whole_number)
        self.register("type", float, number)

    # Not typeshed's overloads (a namespace of the caller's own class back): nobody passes one.
    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's ``parse_args``, but each unknown option is followed by the nearest real
        one, which argparse never names."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {self._with_suggestions(unknown)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(exits.USAGE, f"{self.prog}: error: {message}\n")

    def _with_suggestions(self, unknown: list[str]) -> str:
        """``unknown`` as argparse lists it, each mistyped option followed by the nearest
        option this parser has (``--srtt=x`` is matched on ``--srtt``)."""
        options = [option for action in self._actions if action.help != argparse.SUPPRESS
                   for option in action.option_strings]
        words, suggested = [], False
        for arg in unknown:
            words.append(arg)
            if len(arg) < 2 or arg[0] not in self.prefix_chars:  # a value, or "-" for stdin
                continue
            close = difflib.get_close_matches(arg.partition("=")[0], options, n=1)
            if close:
                words.append(f"(did you mean {close[0]}?)")
                suggested = True
        if not suggested and "--help" in options:
            words.append("(see --help)")
        return " ".join(words)


def doc_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser for ``prog`` whose description is the docstring's first paragraph and whose
    epilog is the rest, laid out as written."""
    paragraphs = (doc or "").split("\n\n")
    return Parser(prog=prog, description=paragraphs[0], epilog="\n\n".join(paragraphs[1:]),
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def whole_number(text: str) -> int:
    """An argparse type: what ``int`` reads, with an error in the user's words (argparse's own
    says ``invalid int value``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    """An argparse type: what ``float`` reads, with an error in the user's words."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: "640x480" -> (640, 480)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return width, height


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level debug|info|warning|error`` (log detail on stderr)."""
    parser.add_argument("--log-level", default=default,
                        choices=("debug", "info", "warning", "error"),
                        help=f"log detail on stderr (default: {default})")


def run_command(parser: argparse.ArgumentParser,
                run: Callable[[argparse.Namespace, argparse.ArgumentParser], int],
                argv: Sequence[str] | None) -> int:
    """Parse ``argv``, log at its ``--log-level`` (one ``LEVEL message`` line per record, on
    stderr), and return ``run(args, parser)``; a Ctrl-C that the run does not handle itself
    (while the model loads: nothing to finish yet) is one line, exit 130."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        return run(args, parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exits.INTERRUPTED
