"""Command-line helpers shared by the project's programs: a parser whose help is its module's
docstring, and argparse types."""

from __future__ import annotations

import argparse


def doc_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser for ``prog`` whose description is the docstring's first paragraph and whose
    epilog is the rest, laid out as written."""
    paragraphs = (doc or "").split("\n\n")
    return argparse.ArgumentParser(prog=prog, description=paragraphs[0],
                                   epilog="\n\n".join(paragraphs[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: "640x480" -> (640, 480)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return width, height
