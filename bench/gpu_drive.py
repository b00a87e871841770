"""The GPU kit's driver, run by the last call on the lent machine (standard library only).

    python3 -m bench.gpu_drive status --call K      a call that only carries a part: what is here
    python3 -m bench.gpu_drive run --seconds 480    the last call: join, install, probe, measure

``run`` joins the parts of runs/gpu-kit (checking each one's sha256), installs the wheels with
``pip install --no-index --no-deps --target`` into a temporary folder that goes first on
``PYTHONPATH``, checks that this ONNX Runtime lists CUDA and that a session really runs on it,
then runs ``bench/gpu_check.sh`` with that interpreter, the whole within ``--seconds``. Every
step runs even when one before it failed, and says so in one line; the results go to
``$OUT/gpu-check`` (the folder that comes back from the lent machine, at most 8 files; without
$OUT, runs/gpu-check): ``driver.json`` (each of the driver's steps, its status and seconds),
``results.json`` (each step of the check and everything it measured) and ``log.txt``.

On a machine without a GPU (the rehearsal: ``make gpu-rehearsal``) every GPU step fails in
one line and the run goes on; driver.json and results.json say which failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.gpu_kit import KIT, PLAN, KitError, join_parts, missing_parts, read_plan
from stream.cli.arguments import Parser

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "bench" / "gpu_check.sh"
RESERVE = 15  # seconds kept back at the end for writing the results

# A tiny graph on the CUDA provider alone: does ONNX Runtime really run on the GPU?
PROBE = """
import json, sys
import numpy as np
import onnx
from onnx import TensorProto, helper
import onnxruntime as ort
from stream import cuda
info = {"onnxruntime": ort.__version__, "file": ort.__file__,
        "providers": ort.get_available_providers()}
cuda.prepare()
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])
w = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], np.eye(256, dtype=np.float32).ravel())
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "probe", [x], [y], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
try:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CUDAExecutionProvider"])
    info["session_providers"] = session.get_providers()
    data = np.random.default_rng(0).random((4, 256), dtype=np.float32)
    info["max_error"] = float(np.abs(session.run(None, {"x": data})[0] - data).max())
except Exception as error:
    info["session_error"] = str(error).strip().splitlines()[0]
info["cuda_runs"] = "CUDAExecutionProvider" in info.get("session_providers", [])
if not info["cuda_runs"]:
    info["why"] = str(cuda.diagnose())
print(json.dumps(info))
sys.exit(0 if info["cuda_runs"] else 1)
"""


class Steps:
    """Runs the driver's steps in order; each records its status, seconds and one line."""

    def __init__(self, results: Path, deadline: float) -> None:
        self.results, self.deadline = results, deadline
        self.records: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}  # driver.json's other fields, kept here

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, command: list[str], env: dict[str, str] | None = None,
            limit: float | None = None) -> subprocess.CompletedProcess[str] | None:
        seconds = max(1.0, min(limit or 1e9, self.left()))
        shown = " ".join(c if len(c) < 200 else c[:60].strip() + " ..." for c in command)
        print(f"== {name}: {shown}", flush=True)
        start = time.monotonic()
        try:  # its own process group: a step stopped at its limit takes its children along
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                       start_new_session=True)
        except OSError as error:
            self.record(name, "failed", start, str(error))
            return None
        try:
            stdout, stderr = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            self.record(name, "timeout", start, f"stopped after {seconds:.0f} s")
            return None
        done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        for stream in (done.stdout, done.stderr):
            if stream.strip():
                print(stream.rstrip(), flush=True)
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        self.record(name, "ok" if done.returncode == 0 else f"failed ({done.returncode})",
                    start, last[0][:300])
        return done

    def record(self, name: str, status: str, start: float, line: str = "") -> None:
        entry = {"step": name, "status": status, "seconds": round(time.monotonic() - start, 1),
                 "line": line}
        self.records.append(entry)
        print(f"== {name}: {status} in {entry['seconds']} s{': ' + line if line else ''}",
              flush=True)
        self.write()

    def write(self, **facts: Any) -> None:
        """driver.json, written again whole (a killed run keeps what it had)."""
        self.facts |= facts
        self.results.mkdir(parents=True, exist_ok=True)
        (self.results / "driver.json").write_text(
            json.dumps({**self.facts, "steps": self.records}, indent=1) + "\n")


def find_plan(kit: Path) -> tuple[Path, dict[str, Any]]:
    """The plan: the kit's own, or the copy any call carried."""
    for path in [kit / PLAN, *sorted(kit.glob(f"call-*/{PLAN}"))]:
        if path.is_file():
            return path, read_plan(path)
    raise KitError(f"{kit}: no {PLAN} (no call of the kit has reached this machine)")


def install(wheels: list[Path], site: Path, steps: Steps) -> bool:
    """``pip install --no-index --no-deps --target site``; without pip, the wheels unzipped."""
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"],
                             capture_output=True).returncode == 0
    if has_pip:
        done = steps.run("install", [sys.executable, "-m", "pip", "install", "--quiet",
                                     "--no-index", "--no-deps", "--disable-pip-version-check",
                                     "--target", str(site), *map(str, wheels)], limit=180)
        return done is not None and done.returncode == 0
    start = time.monotonic()
    for wheel in wheels:  # a wheel is a zip of its site-packages files
        try:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        except (zipfile.BadZipFile, OSError) as error:
            steps.record("install", "failed", start, f"{wheel.name}: {error}")
            return False
    steps.record("install", "ok", start, f"no pip here: {len(wheels)} wheels unzipped")
    return True


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = os.environ.get("OUT")
    results = args.results or (Path(out) / "gpu-check" if out else ROOT / "runs" / "gpu-check")
    for earlier in ("driver.json", "results.json"):  # an earlier run's
        (results / earlier).unlink(missing_ok=True)
    steps = Steps(results, started + args.seconds - RESERVE)
    steps.write(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), python=sys.version.split()[0])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as tmp:
        site = Path(tmp) / "site"
        start = time.monotonic()
        try:
            _, plan = find_plan(args.kit)
            wheels = join_parts(args.kit, plan["parts"], Path(tmp) / "wheels",
                                [w["name"] for w in plan["wheels"]])
            steps.record("join", "ok", start, f"{len(plan['parts'])} parts, "
                         f"{len(wheels)} wheels: " + ", ".join(w.name for w in wheels))
            installed = install(wheels, site, steps)
        except (KitError, OSError) as error:
            steps.record("join", "failed", start, str(error))
            installed = False
        if installed:  # the kit's wheels shadow the machine's own (a CPU-only onnxruntime)
            env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
        else:
            env["PYTHONPATH"] = str(ROOT)
        probe = steps.run("cuda-probe", [sys.executable, "-c", PROBE], env=env, limit=60)
        if probe is not None and probe.stdout.strip():
            try:
                steps.write(probe=json.loads(probe.stdout.strip().splitlines()[-1]))
            except ValueError:
                pass
        # the check ends its own steps in time to gather its results.json before the limit
        # Each measurement's JSON stays in the temporary folder: what comes back from the lent
        # machine is at most 8 files, so it gets results.json (all of them), log.txt and
        # driver.json.
        env |= {"PYTHON": sys.executable, "GPU_CHECK_WORK": str(Path(tmp) / "check"),
                "GPU_CHECK_SECONDS": str(int(max(1, steps.left() - RESERVE)))}
        steps.run("gpu-check", ["bash", str(CHECK), str(results)], env=env)
    failed = [r["step"] for r in steps.records if r["status"] != "ok"]
    checked = results / "results.json"
    if checked.is_file():
        failed += [f"gpu-check: {name}" for name in json.loads(checked.read_text())["failed_steps"]]
    steps.write(seconds=round(time.monotonic() - started, 1), failed_steps=failed)
    print(f"driver done in {time.monotonic() - started:.0f} s; results in {results}; "
          f"failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def status(args: argparse.Namespace) -> int:
    """What this call and the ones before left here, in a few lines."""
    try:
        _, plan = find_plan(args.kit)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parts = plan["parts"]
    absent = missing_parts(args.kit, parts)
    here = len(parts) - len(absent)
    print(f"call {args.call}: {here} of {len(parts)} parts here; python {sys.version.split()[0]}")
    for line in absent:
        print(f"  {line}")
    mine = f"call-{args.call}/" if args.call else None
    return 1 if mine and any(line.startswith(mine) for line in absent) else 0


def collect(results: Path, into: Path | None = None) -> dict[str, Any]:
    """Every step's status (``results/steps.jsonl``) and every measurement's JSON in
    ``results``, gathered into one file: ``into`` (default ``results/results.json``)."""
    steps = []
    if (results / "steps.jsonl").is_file():
        steps = [json.loads(line) for line in (results / "steps.jsonl").read_text().splitlines()
                 if line.strip()]
    gathered: dict[str, Any] = {
        "steps": steps,
        "failed_steps": [s["step"] for s in steps if s["status"] not in ("ok", "skipped")],
        "skipped_steps": [s["step"] for s in steps if s["status"] == "skipped"]}
    for path in sorted(results.glob("*.json")):
        if path.name not in ("results.json", "driver.json"):
            try:
                gathered[path.stem] = json.loads(path.read_text())
            except ValueError as error:
                gathered[path.stem] = {"unreadable": str(error)}
    into = into or results / "results.json"
    partial = into.with_name(into.name + ".partial")
    partial.write_text(json.dumps(gathered, indent=1) + "\n")
    partial.replace(into)
    return gathered


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python3 -m bench.gpu_drive",
                    description="The GPU kit's driver (docs/gpu-kit.md).")
    parser.add_argument("--kit", type=Path, default=KIT, help="kit folder (default: runs/gpu-kit)")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("status", help="which parts have reached this machine")
    one.add_argument("--call", type=int, default=None, help="the call this is (its part must be "
                                                            "here)")
    last = sub.add_parser("run", help="join, install, probe CUDA, run bench/gpu_check.sh")
    last.add_argument("--seconds", type=float, default=480.0,
                      help="time for everything, results included (default: 480)")
    last.add_argument("--results", type=Path, default=None,
                      help="results folder (default: $OUT/gpu-check, else runs/gpu-check)")
    gather = sub.add_parser("collect", help="gather a results folder into its results.json")
    gather.add_argument("results", type=Path, help="a folder of the check's JSON files")
    gather.add_argument("--into", type=Path, default=None,
                        help="the gathered file (default: RESULTS/results.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "collect":
        gathered = collect(args.results, args.into)
        into = args.into or args.results / "results.json"
        print(f"{into}: {len(gathered['steps'])} steps, failed: "
              f"{', '.join(gathered['failed_steps']) or 'none'}")
        return 0
    return run(args) if args.command == "run" else status(args)


if __name__ == "__main__":
    sys.exit(main())
