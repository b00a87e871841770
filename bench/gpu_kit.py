"""The offline GPU kit: the wheels a lent GPU machine lacks, in parts that fit its calls.

    python -m bench.gpu_kit [--out runs/gpu-kit] [--part-mb 30]        (make gpu-kit)

The lent machine (see docs/gpu-kit.md) has no network, and each call to it carries the tracked
tree plus at most 64 MiB in all. This downloads the wheels it lacks for its Python (``WHEELS``,
CPython 3.12, manylinux x86_64), packs them into one uncompressed tar (wheels are zip files
already) and cuts that tar into parts of at most ``--part-mb`` MB, one part per call::

    OUT/wheels/            the downloaded wheels (a cache: a second run downloads nothing)
    OUT/call-1/part-1      the first part, and a copy of plan.json
    ...
    OUT/call-N/part-N      the last part; the last call also runs the driver
    OUT/plan.json          parts with their sizes and sha256, the calls in order
    OUT/PLAN.md            the same calls, for a person

Call k carries ``OUT/call-k`` alone; a carried path stays on the warm machine for the next
calls, so the last call finds every part. ``python3 -m bench.gpu_drive`` (stdlib only, run
there) joins and checks them; :func:`join_parts` is shared with it. Only the standard library
is used here too, so that the driver can import this module on the lent machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stream.cli.arguments import Parser

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "runs" / "gpu-kit"
PLAN = "plan.json"
CALL_LIMIT = 64 * 2**20  # bytes one call may carry: the tree and the carried paths together
PYTHON_VERSION = "3.12"  # the lent machine's python3
PLATFORM = "manylinux_2_28_x86_64"
# What the lent machine lacks for the runtime and the GPU check: it has numpy, onnx, protobuf,
# pillow and torch, and only a CPU build of ONNX Runtime.
WHEELS = ("onnxruntime-gpu==1.31.1", "av==18.1.0", "onnxconverter-common==1.16.0",
          "tqdm==4.70.1")
TEST_SPLIT = "data/shapes/test"  # carried by the last call when it exists here (5 MB)
DRIVE = "python3 -m bench.gpu_drive run --seconds {seconds}"


class KitError(Exception):
    """The kit cannot be made or joined; the message names the file or wheel."""


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


class _PartWriter:
    """A write-only file that cuts what it is given into numbered parts of ``limit`` bytes."""

    def __init__(self, out: Path, limit: int) -> None:
        self.out, self.limit = out, limit
        self.parts: list[Part] = []
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._file is None:
                self._open()
            assert self._file is not None
            room = self.limit - self._size
            chunk = view[:room]
            self._file.write(chunk)
            self._hash.update(chunk)
            self._size += len(chunk)
            view = view[len(chunk):]
            if self._size == self.limit:
                self._close()
        return len(data)

    def _open(self) -> None:
        k = len(self.parts) + 1
        folder = self.out / f"call-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        self._file = open(folder / f"part-{k}", "wb")  # closed in _close
        self._hash, self._size = hashlib.sha256(), 0

    def _close(self) -> None:
        assert self._file is not None
        self._file.close()
        k = len(self.parts) + 1
        self.parts.append(Part(f"call-{k}/part-{k}", self._size, self._hash.hexdigest()))
        self._file = None

    def close(self) -> list[Part]:
        if self._file is not None:
            self._close()
        return self.parts


def split_files(files: list[Path], out: Path, limit: int) -> list[Part]:
    """Pack ``files`` (by base name) into one tar and cut it into parts of at most ``limit``
    bytes under ``out/call-K/part-K``."""
    if limit < 1:
        raise KitError(f"part size must be positive, got {limit} bytes")
    writer = _PartWriter(out, limit)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in files:
            tar.add(path, arcname=path.name, recursive=False)
    return writer.close()


class _PartReader:
    """A read-only file over the parts in order, checking each part's size and sha256."""

    def __init__(self, root: Path, parts: list[Part]) -> None:
        self._paths = iter(parts)
        self._root = root
        self._file: IO[bytes] | None = None
        self._part: Part | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        pieces, want = [], size
        while want != 0:
            if self._file is None and not self._next():
                break
            assert self._file is not None
            data = self._file.read(want if want > 0 else -1)
            if not data:
                self._finish()
                continue
            self._hash.update(data)
            self._size += len(data)
            pieces.append(data)
            if want > 0:
                want -= len(data)
        return b"".join(pieces)

    def _next(self) -> bool:
        part = next(self._paths, None)
        if part is None:
            return False
        self._part, self._hash, self._size = part, hashlib.sha256(), 0
        self._file = open(self._root / part.name, "rb")  # closed in _finish
        return True

    def _finish(self) -> None:
        assert self._file is not None and self._part is not None
        self._file.close()
        self._file = None
        if self._size != self._part.size or self._hash.hexdigest() != self._part.sha256:
            raise KitError(f"{self._part.name}: {self._size} bytes, sha256 "
                           f"{self._hash.hexdigest()[:12]}; the plan says {self._part.size} "
                           f"bytes, sha256 {self._part.sha256[:12]}")


def missing_parts(root: Path, parts: list[Part]) -> list[str]:
    """One line per part that is absent or not of its planned size under ``root``."""
    lines = []
    for part in parts:
        path = root / part.name
        if not path.is_file():
            lines.append(f"{part.name}: missing (its call did not reach this machine, or the "
                         f"machine was given back since)")
        elif path.stat().st_size != part.size:
            lines.append(f"{part.name}: {path.stat().st_size} bytes, the plan says {part.size}")
    return lines


def join_parts(root: Path, parts: list[Part], dest: Path,
               expected: list[str] | None = None) -> list[Path]:
    """Join the parts under ``root`` (checking every one's size and sha256) and unpack the
    files into ``dest``; ``expected``: the file names the plan lists. Returns the unpacked
    files; raises :class:`KitError` naming the first part or file that is wrong."""
    lines = missing_parts(root, parts)
    if lines:
        raise KitError("; ".join(lines))
    dest.mkdir(parents=True, exist_ok=True)
    reader = _PartReader(root, parts)
    names = []
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                tar.extract(member, dest, filter="data")
                names.append(dest / member.name)
    except tarfile.TarError as error:
        reader.read()  # a changed part explains a broken archive best: named by its sha256
        raise KitError(f"{root}: the joined parts are not a whole archive ({error})") from error
    # tarfile stops reading at the archive's end marker: the rest of the last part (and any
    # part after a damaged header) must still be read, to be checked against its sha256
    reader.read()
    if expected is not None and sorted(p.name for p in names) != sorted(expected):
        raise KitError(f"{root}: the parts unpack to {sorted(p.name for p in names)}, the plan "
                       f"lists {sorted(expected)}")
    return names


def read_plan(path: Path) -> dict[str, Any]:
    try:
        plan: dict[str, Any] = json.loads(path.read_text())
        plan["parts"] = [Part(**p) for p in plan["parts"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KitError(f"{path}: not a gpu-kit plan ({error})") from error
    return plan


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what every call carries anyway: tracked files and untracked, unignored ones."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, capture_output=True, check=True)
    names = {n for n in listed.stdout.decode().split("\0") if n}
    return sum((root / n).stat().st_size for n in names if (root / n).is_file())


def download(out: Path, python: str = PYTHON_VERSION, wheels: tuple[str, ...] = WHEELS) -> list[
        Path]:
    """The wheels for ``python`` (the lent machine's by default), downloaded once into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--platform",
               PLATFORM, "--dest", str(out), *wheels]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KitError(f"pip download {' '.join(wheels)}: {last}")
    found = sorted(out.glob("*.whl"))
    wanted = {w.split("==")[0].replace("-", "_").lower() for w in wheels}
    kept = [p for p in found if p.name.split("-")[0].lower() in wanted]
    if len(kept) != len(wanted):
        raise KitError(f"{out}: expected wheels of {sorted(wanted)}, found "
                       f"{[p.name for p in found]}")
    return kept


def _calls(parts: list[Part], out: Path, test_split: Path | None, seconds: int) -> Iterator[
        dict[str, Any]]:
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    for k, part in enumerate(parts, 1):
        carry = [str(rel / f"call-{k}")]
        last = k == len(parts)
        if last and test_split is not None:
            carry.append(TEST_SPLIT)
        yield {"call": k, "carry": carry, "carried_bytes": part.size,
               "command": (DRIVE.format(seconds=seconds) if last
                           else f"python3 -m bench.gpu_drive status --call {k}")}


def make_plan(parts: list[Part], out: Path, wheels: list[Path], seconds: int,
              python: str = PYTHON_VERSION) -> dict[str, Any]:
    test = ROOT / TEST_SPLIT
    test_split = test if test.is_dir() else None
    tree = tree_bytes()
    calls = list(_calls(parts, out, test_split, seconds))
    if test_split is not None:
        calls[-1]["carried_bytes"] += sum(p.stat().st_size for p in test.rglob("*")
                                          if p.is_file())
    for call in calls:
        call["total_bytes"] = tree + call["carried_bytes"]
        if call["total_bytes"] > CALL_LIMIT:
            raise KitError(f"call {call['call']} would carry {call['total_bytes']} bytes (tree "
                           f"{tree}), over the {CALL_LIMIT} a call may carry: use a smaller "
                           f"--part-mb")
    return {"python": python, "platform": PLATFORM,
            "wheels": [{"name": w.name, "size": w.stat().st_size} for w in wheels],
            "parts": [p.to_json() for p in parts], "tree_bytes": tree,
            "call_limit_bytes": CALL_LIMIT, "calls": calls}


def describe_plan(plan: dict[str, Any]) -> str:
    lines = ["# The GPU kit's calls, in order", "",
             f"Wheels for CPython {plan['python']} ({plan['platform']}): "
             + ", ".join(w["name"] for w in plan["wheels"]) + ".",
             f"Every call carries the tree ({plan['tree_bytes'] / 1e6:.1f} MB) and what is "
             f"listed; limit {plan['call_limit_bytes'] / 2**20:.0f} MiB a call.",
             "Make each call as soon as the one before returns: the machine is given back "
             "after about 30 s idle, and the parts with it.", ""]
    for call in plan["calls"]:
        lines.append(f"{call['call']}. carry {json.dumps(call['carry'])} "
                     f"({call['total_bytes'] / 1e6:.1f} MB in all): `{call['command']}`")
    lines += ["", "The last call's results come back under $OUT/gpu-check/ (results.json, "
              "log.txt and each step's JSON)."]
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m bench.gpu_kit",
        description="Download the wheels a lent GPU machine lacks, cut them into parts that "
                    "fit its calls, and write the plan of calls (see docs/gpu-kit.md).")
    parser.add_argument("--out", type=Path, default=KIT, help="kit folder (default: runs/gpu-kit)")
    parser.add_argument("--part-mb", type=float, default=30.0,
                        help="largest part in MB of 10^6 bytes (default: 30)")
    parser.add_argument("--seconds", type=int, default=480,
                        help="the last call's time for the whole GPU check (default: 480)")
    parser.add_argument("--python-version", default=PYTHON_VERSION,
                        help=f"the wheels' Python (default: {PYTHON_VERSION}, the lent "
                             f"machine's; the rehearsal uses this machine's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    out = args.out.resolve()
    try:
        print(f"downloading {len(WHEELS)} wheels for CPython {args.python_version} ...",
              flush=True)
        wheels = download(out / "wheels", args.python_version)
        for old in out.glob("call-*"):
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        parts = split_files(wheels, out, int(args.part_mb * 1e6))
        plan = make_plan(parts, out, wheels, args.seconds, args.python_version)
    except (KitError, OSError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = json.dumps(plan, indent=1) + "\n"
    (out / PLAN).write_text(text)
    for call in plan["calls"]:
        (out / f"call-{call['call']}" / PLAN).write_text(text)
    (out / "PLAN.md").write_text(describe_plan(plan))
    total = sum(p.size for p in parts)
    largest = max(c["total_bytes"] for c in plan["calls"])
    print(f"{len(wheels)} wheels, {total / 1e6:.1f} MB in {len(parts)} parts: "
          f"{len(plan['calls'])} calls, the largest {largest / 1e6:.1f} MB with the tree")
    print(describe_plan(plan), end="")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
