"""``python -m export``: write a model bundle from a training checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from export.build import export_bundle
from export.quantize import add_quant_options, quant_settings
from lrcn.checkpoint import CheckpointError
from lrcn.onnx_export import OPSET
from stream.cli.arguments import Parser
from stream.errors import StreamError
from stream.model.bundle import BUNDLE_FILE


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m export",
        description="Export a training checkpoint to a model bundle: encoder.onnx, memory.onnx, "
                    "captioner.onnx and bundle.json, validated before it is moved into place.")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="checkpoint written by python -m lrcn.train (e.g. runs/x/best.pt)")
    parser.add_argument("--out", type=Path, required=True,
                        help="bundle directory to write (replaced if it exists)")
    parser.add_argument("--weights", choices=["float32", "float16"], default="float32",
                        help="storage of large weights; float16 halves the files and computes "
                             "in float32 all the same (default: float32)")
    parser.add_argument("--fp16", action="store_true",
                        help="the encoder computes in float16, for GPUs (on a CPU it runs, "
                             "but slower than float32)")
    parser.add_argument("--evaluation", type=Path,
                        help="eval.json of python -m lrcn.evaluate for this checkpoint, recorded "
                             "in bundle.json")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    int8 = parser.add_argument_group(
        "int8 encoder", "an int8 encoder beside encoder.onnx, for CPUs with VNNI or AMX (see "
                        "python -m export.quantize, which adds one to an existing bundle)")
    int8.add_argument("--int8-calibration", nargs="+", default=[], metavar="INPUT",
                      help="add it, calibrated on these videos or folders (e.g. "
                           "data/shapes/val; never the test split)")
    int8.add_argument("--int8-agreement", nargs="+", default=[], metavar="INPUT",
                      help="compare its captions with fp32's on these videos or folders and "
                           "record the result (precision auto uses int8 only at 99%% or more)")
    add_quant_options(int8, "int8-")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    evaluation = None
    if args.evaluation is not None:
        try:
            evaluation = {"checkpoint_eval": json.loads(args.evaluation.read_text())}
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: {args.evaluation}: cannot read evaluation results ({err})",
                  file=sys.stderr)
            return 2
    try:
        out = export_bundle(args.checkpoint, args.out, opset=args.opset, weights=args.weights,
                            fp16=args.fp16, evaluation=evaluation,
                            int8_calibration=args.int8_calibration,
                            int8_agreement=args.int8_agreement,
                            int8_settings=quant_settings(args, "int8-"))
    except (CheckpointError, StreamError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out}/ ({size / 1e6:.1f} MB); manifest {out / BUNDLE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
