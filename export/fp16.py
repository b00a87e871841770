"""``python -m export.fp16 BUNDLE --out DIR``: a bundle whose encoder computes in float16, for
GPUs, made from a shipped bundle without PyTorch or its checkpoint.

    python -m export.fp16 models/shapes --out models/shapes-fp16

The encoder graph is converted as ``python -m export --fp16`` converts it (weights stored in
float16 are restored first, exactly, then converted once; its uint8 input and float32 output
stay); the memory and captioner graphs are copied unchanged (see export/precision.py). The
new bundle.json records the new checksums, ``precision.compute = "float16"`` and the bundle it
came from; the source's recorded evaluations, which the new bundle has not earned, move under
``provenance.converted_from``. Before the bundle is moved into place it is validated, and its
captions are compared with the source's on the CPU (the bundled sample by default,
``--check`` for others): the agreement is printed and recorded in bundle.json.

Needs onnx and onnxconverter-common (the ``train`` extra), not torch.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from export.agreement import caption_agreement
from export.precision import compute_fp16
from stream.archive.inputs import discover
from stream.cli.arguments import doc_parser
from stream.errors import BundleError, StreamError
from stream.files import write_directory_atomically
from stream.model.bundle import BUNDLE_FILE, check_files, open_bundle, read_bundle
from stream.model.sessions import SessionSettings
from stream.paths import SAMPLE_VIDEO


def convert_fp16(source: str | Path, out: str | Path,
                 check: list[str] | None = None) -> dict[str, Any]:
    """Write the float16-compute bundle of ``source`` at ``out``; return the captions'
    agreement with the source on ``check`` (videos or directories; default: the sample)."""
    source, out = Path(source), Path(out)
    bundle = read_bundle(source)
    check_files(bundle)
    if bundle.precision.get("compute") == "float16":
        raise BundleError(f"{source / BUNDLE_FILE}: already computes in float16")
    if out.resolve() == source.resolve():
        raise BundleError(f"{out}: the converted bundle must not replace its source")
    result: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        encoder = bundle.graphs["encoder"].file
        compute_fp16(tmp / encoder)
        converted = replace(
            bundle, path=tmp, name=out.name, precision={**bundle.precision, "compute": "float16"},
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            provenance={**bundle.provenance, "converted_from": {
                "bundle": source.name, "fingerprint": bundle.fingerprint(),
                "evaluation": bundle.evaluation}},
            evaluation={}).with_file(encoder)
        converted.write()
        cpu = SessionSettings(device="cpu", precision="fp32")  # the encoders converted
        videos, _ = discover(check or [str(SAMPLE_VIDEO)])
        result.update(caption_agreement(open_bundle(source, cpu), open_bundle(tmp, cpu), videos))
        result["checked"] = [str(v) for v in videos]
        replace(converted, evaluation={"fp16_agreement_cpu": result}).write()

    write_directory_atomically(out, fill)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("python -m export.fp16", __doc__)
    parser.add_argument("bundle", type=Path, help="the bundle to convert (e.g. models/shapes)")
    parser.add_argument("--out", type=Path, required=True,
                        help="where to write the float16 bundle (replaced if it exists)")
    parser.add_argument("--check", nargs="+", metavar="INPUT",
                        help="videos, images or directories on which the captions are compared "
                             "with the source's (default: the bundled sample)")
    args = parser.parse_args(argv)
    try:
        agreement = convert_fp16(args.bundle, args.out, args.check)
    except (StreamError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/: the encoder computes in float16; captions on the CPU identical "
          f"to {args.bundle}'s on {agreement['identical_frames']}/{agreement['frames']} frames "
          f"({100 * agreement['identical_share']:.2f}%) of {agreement['videos']} video(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
