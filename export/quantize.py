"""``python -m export.quantize``: add an int8 encoder to a bundle (static quantization).

    python -m export.quantize --bundle models/shapes --calibration data/shapes/val \
        --agreement data/shapes/test

The bundle's encoder.onnx (weights stored in float16 are first restored to the float32 values
they stand for) is pre-processed (shape inference, constant folding: the padding arithmetic
and the casts of stored weights go) and quantized by ONNX Runtime's ``quantize_static`` in QDQ
form: weights int8 per output channel, activations uint8 with ranges from the calibration
frames, except the first convolutions (by default the stem and the first three blocks, at 112
and 56 pixels), which stay float32. The calibration frames are sampled from the given videos
through the runtime's one media path at the bundle's rate and input size, so they are the
pixels the encoder sees.

The result, encoder_int8.onnx, keeps encoder.onnx's interface (frames (B, S, S, 3) uint8 ->
features (B, F) float32) and is recorded in bundle.json: under ``graphs.encoder_int8``,
``files``, and ``precision.int8`` (how it was made). With ``--agreement`` the captions of both
encoders are compared frame by frame on those videos (never the calibration ones) and the
result is recorded too: the runtime's precision auto runs int8 only where that agreement is
at least 99% (see stream/model/bundle.py).

The bundle is written as a set: copied, changed and validated in a temporary folder next to it,
then moved into its place (or to ``--out``).

The default settings were chosen by measurement on the shipped model, calibrated on half of the
validation split and compared on the other half (see the README's int8 section): the captions
are most sensitive to the first layers (all layers int8: 96.0% of frames token-identical to fp32;
the first 1, 2, 4, 6, 9 convolutions left in float32: 95.8%, 98.4%, 98.7%, 99.4%, 99.8%, all
at about the same CPU time per frame, some 1.7x less than fp32's on an AVX512-VNNI CPU). Entropy or
percentile calibration, int8 activations, more calibration frames or the final projection (Gemm)
left in float32 changed nothing beyond the noise; int8 activations were slower.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from export.agreement import caption_agreement
from export.precision import restore_weights_fp32
from stream.archive.inputs import discover
from stream.cli.arguments import doc_parser, positive_int
from stream.errors import BundleError, StreamError
from stream.files import write_atomically, write_directory_atomically
from stream.media.frames import read_sampled_frames
from stream.model.bundle import (
    INT8_AGREEMENT,
    INT8_ROLE,
    Bundle,
    check_files,
    open_bundle,
    read_bundle,
)
from stream.model.sessions import SessionSettings

log = logging.getLogger(__name__)

INT8_FILE = "encoder_int8.onnx"
ACTIVATIONS = ("uint8", "int8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
_BATCH = 16  # calibration frames per run of the encoder


@dataclass(frozen=True)
class QuantSettings:
    """How the encoder is quantized.

    Attributes:
        activations: uint8 or int8 (weights are always int8, per output channel).
        calibration: minmax, entropy or percentile (ONNX Runtime's calibration methods).
        frames: calibration frames, spread evenly over the calibration videos.
        float_ops: operator types left in float32 (e.g. ``("Gemm",)``: the final projection).
        float_first_convs: how many of the first convolutions (in graph order, the stem first)
            are left in float32: 9 is EfficientNet-Lite0's stem and first three blocks.
    """

    activations: str = "uint8"
    calibration: str = "minmax"
    frames: int = 256
    float_ops: tuple[str, ...] = ()
    float_first_convs: int = 9

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got "
                             f"{self.calibration!r}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.float_first_convs < 0:
            raise ValueError(f"float_first_convs must be 0 or more, got {self.float_first_convs}")


def calibration_frames(videos: Sequence[Path], sample_fps: float, size: int,
                       count: int) -> np.ndarray:
    """``count`` frames (count, size, size, 3) uint8, spread evenly over ``videos``' sampled
    frames (the same number from each video, evenly within it; fewer if they have fewer)."""
    per_video = max(1, math.ceil(count / max(1, len(videos))))
    chosen: list[np.ndarray] = []
    for video in videos:
        frames, _ = read_sampled_frames(video, sample_fps, (size, size))
        if len(frames):
            picks = np.unique(np.linspace(0, len(frames) - 1, min(per_video, len(frames)))
                              .round().astype(int))
            chosen.append(frames[picks])
    if not chosen:
        raise BundleError(f"no frames to calibrate on in {len(videos)} calibration videos")
    every = np.concatenate(chosen)
    keep = np.unique(np.linspace(0, len(every) - 1, min(count, len(every))).round().astype(int))
    return every[keep]


def quantize_encoder(source: Path, out: Path, frames: np.ndarray,
                     settings: QuantSettings = QuantSettings()) -> dict[str, Any]:
    """Write the int8 QDQ graph of the encoder graph ``source`` to ``out``, calibrated on
    ``frames`` (N, S, S, 3) uint8; returns what was left in float (node names, op types)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (frames[i:i + _BATCH]
                                                   for i in range(0, len(frames), _BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"frames": batch}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="quantize-") as work:
        fp32, prepared = Path(work) / "fp32.onnx", Path(work) / "prepared.onnx"
        model = onnx.load(str(source))
        # The quantizer must see the float32 weights: float16 storage is a Cast in the graph,
        # whose output it would not quantize as a weight.
        restore_weights_fp32(model)
        onnx.save(model, str(fp32))
        quant_pre_process(str(fp32), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        floats = [n.name for n in nodes if n.op_type in settings.float_ops]
        floats += [n.name for n in nodes if n.op_type == "Conv"][:settings.float_first_convs]
        activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
        quantized = Path(work) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), _Frames(),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=activation, weight_type=QuantType.QInt8,
                        calibrate_method=methods[settings.calibration],
                        nodes_to_exclude=floats)
        write_atomically(out, lambda tmp: shutil.copyfile(quantized, tmp))
    return {"float_nodes": floats}


def add_int8_encoder(directory: Path, calibration: Sequence[Path],
                     agreement: Sequence[Path] = (),
                     settings: QuantSettings = QuantSettings(), name: str | Path = "") -> Bundle:
    """Quantize the encoder of the bundle in ``directory`` (changed in place: a folder of
    one's own), record it in bundle.json, validate it, and compare its captions with fp32's on
    ``agreement`` videos when given. Returns the bundle as recorded. ``name``: the bundle's
    name in messages (default: ``directory``)."""
    bundle = read_bundle(directory)
    check_files(bundle)
    if bundle.precision.get("compute") == "float16":
        raise BundleError(f"{directory}: its encoder computes in float16 (a GPU bundle); "
                          f"quantize a float32 one")
    calibration_set = {v.resolve() for v in calibration}
    if any(v.resolve() in calibration_set for v in agreement):
        raise BundleError(f"{directory}: the agreement videos must not be calibration videos")
    started = dt.datetime.now(dt.timezone.utc)
    frames = calibration_frames(calibration, bundle.sample_fps, bundle.input_size,
                                settings.frames)
    log.info("calibrating on %d frames of %d videos", len(frames), len(calibration))
    made = quantize_encoder(directory / bundle.graphs["encoder"].file, directory / INT8_FILE,
                            frames, settings)
    record: dict[str, Any] = {
        "file": INT8_FILE, "method": "onnxruntime.quantization.quantize_static, QDQ",
        "onnxruntime": ort.__version__, "weights": "int8, per output channel",
        "settings": asdict(settings), **made,
        "calibration": {"frames": int(len(frames)), "videos": len(calibration),
                        "folders": sorted({str(v.parent) for v in calibration})},
        "created": started.isoformat(timespec="seconds"),
    }
    graphs = {**bundle.graphs, INT8_ROLE: replace(bundle.graphs["encoder"], file=INT8_FILE)}
    bundle = replace(bundle, graphs=graphs,
                     precision={**bundle.precision, "int8": record}).with_file(INT8_FILE)
    bundle.write()
    cpu = SessionSettings(device="cpu", precision="fp32")
    int8 = open_bundle(directory, replace(cpu, precision="int8"))  # validates the new graph
    if agreement:
        result = caption_agreement(open_bundle(directory, cpu), int8, agreement)
        result["first_disagreements"] = result["first_disagreements"][:5]
        result["folders"] = sorted({str(v.parent) for v in agreement})
        record["agreement"] = result
        bundle = replace(bundle, precision={**bundle.precision, "int8": record})
        bundle.write()
        if result["identical_share"] < INT8_AGREEMENT:
            log.warning("%s: the int8 encoder's captions agree with fp32 on %.2f%% of frames, "
                        "below %.0f%%: precision auto will not use it", name or directory,
                        100 * result["identical_share"], 100 * INT8_AGREEMENT)
    return bundle


def quantize_bundle(path: str | Path, calibration: Sequence[str],
                    agreement: Sequence[str] = (), out: str | Path | None = None,
                    settings: QuantSettings = QuantSettings()) -> Bundle:
    """Add an int8 encoder to the bundle at ``path`` (written at ``out``, by default in place,
    replaced as a whole): calibration and agreement are videos, images or folders of them."""
    path = Path(path)
    target = Path(out) if out is not None else path
    calibration_videos, _ = discover(calibration)
    agreement_videos = discover(agreement)[0] if agreement else []
    read_bundle(path)  # a missing or damaged bundle is said before any work
    written: list[Bundle] = []

    def fill(tmp: Path) -> None:
        shutil.copytree(path, tmp, dirs_exist_ok=True)
        written.append(add_int8_encoder(tmp, calibration_videos, agreement_videos, settings,
                                        target))

    write_directory_atomically(target, fill)
    return replace(written[0], path=target)


def get_args_parser() -> Any:
    parser = doc_parser("python -m export.quantize", __doc__)
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle directory")
    parser.add_argument("--calibration", nargs="+", required=True, metavar="INPUT",
                        help="videos, or folders of them, whose frames set the activation "
                             "ranges (e.g. data/shapes/val; never the test split)")
    parser.add_argument("--agreement", nargs="+", default=[], metavar="INPUT",
                        help="videos, or folders of them, on which the captions with the int8 "
                             "encoder are compared with fp32's; recorded in bundle.json, and "
                             "needed for precision auto to use int8")
    parser.add_argument("--out", type=Path,
                        help="write the bundle with its int8 encoder here (default: in place)")
    add_quant_options(parser)
    return parser


def add_quant_options(parser: Any, prefix: str = "") -> None:
    """The quantization settings as options (``prefix``: e.g. "int8-" for python -m export)."""
    default = QuantSettings()
    parser.add_argument(f"--{prefix}activations", choices=ACTIVATIONS, default=default.activations,
                        help="activation type (default: %(default)s)")
    parser.add_argument(f"--{prefix}calibration-method", choices=CALIBRATIONS,
                        default=default.calibration, help="(default: %(default)s)")
    parser.add_argument(f"--{prefix}calibration-frames", type=positive_int,
                        default=default.frames, metavar="N",
                        help="calibration frames (default: %(default)s)")
    parser.add_argument(f"--{prefix}float-ops", nargs="*", default=list(default.float_ops),
                        metavar="OP", help="operator types left in float32, e.g. Gemm "
                                           "(default: none)")
    parser.add_argument(f"--{prefix}float-first-convs", type=int,
                        default=default.float_first_convs, metavar="N",
                        help="leave the first N convolutions in float32 (default: %(default)s: "
                             "the stem and the first three blocks)")


def quant_settings(args: Any, prefix: str = "") -> QuantSettings:
    """The :class:`QuantSettings` of options added by :func:`add_quant_options`."""
    key = prefix.replace("-", "_")
    return QuantSettings(activations=getattr(args, f"{key}activations"),
                         calibration=getattr(args, f"{key}calibration_method"),
                         frames=getattr(args, f"{key}calibration_frames"),
                         float_ops=tuple(getattr(args, f"{key}float_ops")),
                         float_first_convs=getattr(args, f"{key}float_first_convs"))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        bundle = quantize_bundle(args.bundle, args.calibration, args.agreement, args.out,
                                 quant_settings(args))
    except (StreamError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    size = (bundle.path / INT8_FILE).stat().st_size
    print(f"wrote {bundle.path / INT8_FILE} ({size / 1e6:.1f} MB)")
    result = bundle.precision["int8"].get("agreement")
    if result:
        print(f"captions token-identical to fp32 on {result['identical_frames']}/"
              f"{result['frames']} frames ({100 * result['identical_share']:.2f}%) of "
              f"{result['videos']} videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
