"""``python -m bench.precision``: the encoder's speed, fp32 against int8, on this CPU.

    python -m bench.precision --bundle /tmp/int8-bundle [--batches 1 8] [--threads 1 2]

The bundle must have an int8 encoder (python -m export.quantize). Both encoders run on ONNX
Runtime's CPU provider as the runtime runs them (its session settings: idle threads not
spinning), through the captioning core's ``encode``, on the sample video's frames (read through
the one media path at the bundle's rate and size). For each thread count and batch size the two
take turns, ``--rounds`` times, so that the shared machine's noise hits both; the best round of
each counts. Reported per cell: frames/s (wall clock) and CPU ms per frame (all threads), and
whether this CPU has the int8 dot-product instructions that precision auto asks for.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import describe
from bench.stages import Rate, best_rate
from stream.cli.arguments import doc_parser, positive_int
from stream.errors import StreamError
from stream.files import write_text_atomically
from stream.media.frames import read_sampled_frames
from stream.model.bundle import open_bundle
from stream.model.captioning import CaptionCore
from stream.model.sessions import SessionSettings, default_threads, int8_instructions
from stream.paths import DEFAULT_BUNDLE, SAMPLE_VIDEO

PRECISIONS = ("fp32", "int8")


def measure(bundle: Path, batches: list[int], threads: list[int], rounds: int,
            calls: int) -> dict[str, Any]:
    """The best of ``rounds`` of each (threads, batch, precision), the precisions alternating."""
    results: dict[str, Any] = {"machine": describe(["CPUExecutionProvider"]),
                               "int8_instructions": int8_instructions(),
                               "bundle": str(bundle), "rounds": rounds, "cells": []}
    frames: np.ndarray | None = None
    for count in threads:
        cores = {p: CaptionCore(open_bundle(bundle, SessionSettings(
            device="cpu", threads=count, precision=p))) for p in PRECISIONS}
        if frames is None:
            size = cores["fp32"].bundle.input_size
            frames, _ = read_sampled_frames(SAMPLE_VIDEO, cores["fp32"].bundle.sample_fps,
                                            (size, size))
        for batch in batches:
            chunk = np.resize(frames, (batch, *frames.shape[1:]))  # the first frames, repeated
            best = {p: Rate(0.0, 0.0) for p in PRECISIONS}
            for core in cores.values():
                core.encode(chunk)  # warm-up: the first runs allocate
            for _ in range(rounds):
                for precision, core in cores.items():
                    rate = best_rate(partial(_encode, core, chunk, calls), 1)
                    if rate.per_second > best[precision].per_second:
                        best[precision] = rate
            results["cells"].append({"threads": count, "batch": batch,
                                     **{p: r.to_json() for p, r in best.items()},
                                     "cpu_ms_ratio": round(best["fp32"].cpu_ms
                                                           / best["int8"].cpu_ms, 2)})
    return results


def _encode(core: CaptionCore, frames: np.ndarray, calls: int) -> int:
    for _ in range(calls):
        core.encode(frames)
    return calls * len(frames)


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    machine = results["machine"]
    versions = machine["versions"]
    ort_version = versions.get("onnxruntime-gpu") or versions.get("onnxruntime")
    lines = [f"{machine['cpu']} ({machine['cores']} cores; int8 dot products: "
             f"{results['int8_instructions'] or 'none'}), onnxruntime {ort_version}, "
             f"best of {results['rounds']} alternating rounds",
             "",
             "| threads | batch | fp32 frames/s | int8 frames/s | fp32 CPU ms/frame | "
             "int8 CPU ms/frame | fp32/int8 CPU |",
             "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        lines.append(f"| {c['threads']} | {c['batch']} | {c['fp32']['per_second']:.0f} | "
                     f"{c['int8']['per_second']:.0f} | {c['fp32']['cpu_ms']:.2f} | "
                     f"{c['int8']['cpu_ms']:.2f} | {c['cpu_ms_ratio']:.2f}x |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m bench.precision", __doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="a bundle with an int8 encoder (default: models/shapes)")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 8],
                        metavar="B", help="encoder batch sizes (default: 1 8)")
    parser.add_argument("--threads", type=positive_int, nargs="+",
                        default=sorted({1, default_threads()}), metavar="N",
                        help="ONNX Runtime intra-op threads (default: 1 and every usable core)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="alternating rounds; the best counts (default: 3)")
    parser.add_argument("--calls", type=positive_int, default=40,
                        help="encoder calls per timed run (default: 40)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        results = measure(args.bundle, args.batches, args.threads, args.rounds, args.calls)
    except StreamError as error:  # no such bundle, or no int8 encoder in it
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(table(results))
    if args.out:
        write_text_atomically(args.out, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
