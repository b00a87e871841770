"""Caption a video file frame by frame with a model bundle, without PyTorch.

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

from stream.bundle import open_bundle  # noqa: E402
from stream.captioning import CaptionCore  # noqa: E402
from stream.errors import StreamError  # noqa: E402
from stream.frames import iter_sampled_frames  # noqa: E402
from stream.sessions import DEVICES, SessionSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path,
                        default=ROOT / "examples/shapes/videos/shapes_s5_00000.mp4")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/shapes")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        loaded = open_bundle(args.bundle, SessionSettings(device=args.device))
        core = CaptionCore(loaded)
        size = (loaded.bundle.input_size, loaded.bundle.input_size)
        last = None
        for sample in iter_sampled_frames(args.video, loaded.bundle.sample_fps, size):
            [caption] = core.step(sample.rgb[None], ["video"], [sample.index == 0])
            if caption.text != last:
                print(f"{sample.time:6.2f}s  {caption.text}")
                last = caption.text
    except StreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
