"""Alert when something matching a pattern starts, and say when it ended: the settled events of
the library API, without PyTorch.

    python examples/alert.py PATTERN [SOURCE ...] [--bundle models/shapes] [--settle 3]

PATTERN is a regular expression searched in each event's caption (case-insensitive), e.g.
"red (circle|square)" or "moves left". A line is printed when an event whose caption matches
begins or is said more fully to match (ALERT), and when it ends (CLEAR, with its duration):
one alert per event, not one per frame. The default source is the bundled sample video.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from stream.api import caption_stream  # noqa: E402
from stream.errors import StreamError  # noqa: E402
from stream.events import END, SettledEvent, StatusEvent  # noqa: E402
from stream.settle import DEFAULT_SETTLE  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", help="a regular expression searched in the captions")
    parser.add_argument("sources", nargs="*",
                        default=[str(ROOT / "examples/shapes/videos/shapes_s5_00000.mp4")])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/shapes")
    parser.add_argument("--settle", type=int, default=DEFAULT_SETTLE)
    args = parser.parse_args(argv)
    try:
        pattern = re.compile(args.pattern, re.IGNORECASE)
    except re.error as error:
        parser.error(f"PATTERN: {error}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    alerting: set[str] = set()  # the events that raised an alert and have not ended
    try:
        for event in caption_stream(args.sources, args.bundle, settle=args.settle,
                                    emit="events"):
            if isinstance(event, SettledEvent):
                if event.type == END and event.id in alerting:
                    alerting.discard(event.id)
                    print(f"{event.pts:7.2f}s  CLEAR  {event.stream}  {event.caption}  "
                          f"({event.duration:.1f} s)", flush=True)
                elif event.type != END and event.id not in alerting \
                        and pattern.search(event.caption):
                    alerting.add(event.id)
                    print(f"{event.pts:7.2f}s  ALERT  {event.stream}  {event.caption}",
                          flush=True)
            elif isinstance(event, StatusEvent) and event.error:
                print(f"error: {event.error}", file=sys.stderr)
    except (StreamError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
