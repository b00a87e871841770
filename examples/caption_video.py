"""Caption a video file with a model bundle through the library API, without PyTorch.

    python examples/caption_video.py [VIDEO] [--bundle models/shapes] [--device auto]

Prints one line whenever the caption changes: the time of the sampled frame and the caption.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from stream.api import caption_stream  # noqa: E402
from stream.errors import StreamError  # noqa: E402
from stream.events import CaptionEvent, StatusEvent  # noqa: E402
from stream.model.sessions import DEVICES, PRECISION_HELP, PRECISIONS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path,
                        default=ROOT / "examples/shapes/videos/shapes_s5_00000.mp4")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/shapes")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        for event in caption_stream(str(args.video), args.bundle, device=args.device,
                                    precision=args.precision):
            if isinstance(event, CaptionEvent) and event.changed:
                print(f"{event.pts:6.2f}s  {event.caption}")
            elif isinstance(event, StatusEvent) and event.error:
                print(f"error: {event.error}", file=sys.stderr)
                return 1
    except StreamError as err:  # the bundle or the device cannot be used
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
