"""The offline GPU kit: parts that join byte for byte, a plan that fits a call, and the driver's
rehearsal on this machine (no GPU: every GPU step fails in one line and the run goes on)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.gpu_kit import (
    CALL_LIMIT,
    KitError,
    Part,
    describe_plan,
    join_parts,
    make_plan,
    missing_parts,
    split_files,
    tree_bytes,
)

ROOT = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path, sizes: list[int]) -> list[Path]:
    rng = __import__("random").Random(len(sizes))
    paths = []
    for k, size in enumerate(sizes):
        path = tmp_path / "in" / f"file-{k}.whl"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


@pytest.mark.parametrize("limit", [
    512,  # a tar block: parts end on block boundaries
    1000,  # parts end inside files and inside tar headers
    10**6,  # everything in one part
])
def test_split_and_join_round_trip_byte_for_byte(tmp_path, limit):
    files = _files(tmp_path, [0, 1, 4096, 7777])
    parts = split_files(files, tmp_path / "kit", limit)
    assert all(p.size <= limit for p in parts)
    assert all(p.size == limit for p in parts[:-1])
    assert [p.name for p in parts] == [f"call-{k}/part-{k}" for k in range(1, len(parts) + 1)]
    joined = join_parts(tmp_path / "kit", parts, tmp_path / "out")
    assert [p.name for p in joined] == [f.name for f in files]
    for original, copy in zip(files, joined, strict=True):
        assert copy.read_bytes() == original.read_bytes()


@pytest.mark.parametrize("damaged, offset", [
    (0, 10),  # the first tar header
    (1, 10),  # inside the first file's data
    (-1, -1),  # the very end of the archive, which tarfile itself never reads
])
def test_a_changed_part_is_named(tmp_path, damaged, offset):
    parts = split_files(_files(tmp_path, [3000, 3000]), tmp_path / "kit", 1024)
    path = tmp_path / "kit" / parts[damaged].name
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(KitError, match=f"{parts[damaged].name}: .* sha256"):
        join_parts(tmp_path / "kit", parts, tmp_path / "out")


def test_an_archive_cut_short_is_refused(tmp_path):
    """Parts whose sha256s agree with a plan but which hold less than it lists (a kit remade
    from fewer wheels): the names are checked against the plan."""
    files = _files(tmp_path, [100, 200])
    parts = split_files(files[:1], tmp_path / "kit", 1024)
    with pytest.raises(KitError, match="unpack to .*file-0.whl.* the plan lists"):
        join_parts(tmp_path / "kit", parts, tmp_path / "out", [f.name for f in files])


def test_a_missing_part_is_named_before_anything_is_joined(tmp_path):
    parts = split_files(_files(tmp_path, [3000]), tmp_path / "kit", 1024)
    (tmp_path / "kit" / parts[2].name).unlink()
    assert missing_parts(tmp_path / "kit", parts) == [
        "call-3/part-3: missing (its call did not reach this machine, or the machine was given "
        "back since)"]
    with pytest.raises(KitError, match="call-3/part-3: missing"):
        join_parts(tmp_path / "kit", parts, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_default_parts_fit_a_call_with_this_tree():
    """30 MB parts plus the tracked tree (and the 5 MB test split the last call carries) stay
    within the 64 MiB a call may carry: a tree grown too large fails here, not on a lent GPU."""
    parts = [Part(f"call-{k}/part-{k}", 30_000_000, "0" * 64) for k in (1, 2)]
    plan = make_plan(parts, ROOT / "runs" / "gpu-kit", [], seconds=480)
    assert max(c["total_bytes"] for c in plan["calls"]) <= CALL_LIMIT
    assert tree_bytes() + 30_000_000 + 6_000_000 <= CALL_LIMIT
    assert [c["carry"][0] for c in plan["calls"]] == ["runs/gpu-kit/call-1", "runs/gpu-kit/call-2"]
    assert plan["calls"][0]["command"] == "python3 -m bench.gpu_drive status --call 1"
    assert plan["calls"][-1]["command"] == "python3 -m bench.gpu_drive run --seconds 480"
    assert "2. carry" in describe_plan(plan)


def test_parts_too_large_for_a_call_are_refused():
    parts = [Part("call-1/part-1", CALL_LIMIT, "0" * 64)]
    with pytest.raises(KitError, match="call 1 would carry .* smaller --part-mb"):
        make_plan(parts, ROOT / "runs" / "gpu-kit", [], seconds=480)


def _wheel(folder: Path, name: str = "kitprobe") -> Path:
    """A real, minimal wheel of a one-module package (what pip --target installs)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {f"{name}.py": b"ANSWER = 42\n",
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                               f"Version: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                           b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = [f"{n},sha256={digest(d)},{len(d)}" for n, d in files.items()]
    record.append(f"{name}-1.0.dist-info/RECORD,,")
    files[f"{name}-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as archive:
        for n, d in files.items():
            archive.writestr(n, d)
    return path


# Every step of bench/gpu_check.sh but two: the rehearsal's point is the driver and the check's
# bookkeeping, not minutes of steps that all fail the same way without a GPU.
SKIPPED = ("versions test-split fp16-bundle encoder-fp16 state-transfers agreement-fp32 live-one "
           "cameras-1080p-nvdec cameras-1080p-software nvdec-input agreement-fp16 "
           "cameras-480p-nvdec cameras-480p-software")


@pytest.mark.slow
def test_rehearsal_of_the_driver_without_a_gpu(tmp_path):
    wheel = _wheel(tmp_path / "wheels")
    kit = tmp_path / "kit"
    parts = split_files([wheel], kit, 700)
    plan = {"python": "3", "platform": "any", "wheels": [{"name": wheel.name}],
            "parts": [p.to_json() for p in parts], "tree_bytes": 0,
            "call_limit_bytes": CALL_LIMIT, "calls": []}
    (kit / "call-1" / "plan.json").write_text(json.dumps(plan))
    status = subprocess.run([sys.executable, "-m", "bench.gpu_drive", "--kit", str(kit),
                             "status", "--call", "1"], capture_output=True, text=True, cwd=ROOT)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"call 1: {len(parts)} of {len(parts)} parts here")

    results = tmp_path / "results"
    env = dict(os.environ, GPU_CHECK_SKIP=SKIPPED, TEST_SPLIT=str(tmp_path / "no-split"))
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, "-m", "bench.gpu_drive", "--kit", str(kit), "run",
                           "--seconds", "200", "--results", str(results)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert done.returncode == 1  # the GPU steps failed, and the run said so
    assert f"results in {results}" in done.stdout
    driver = json.loads((results / "driver.json").read_text())
    status_of = {s["step"]: s["status"] for s in driver["steps"]}
    assert status_of["join"] == "ok" and status_of["install"] == "ok"
    assert status_of["cuda-probe"].startswith("failed")
    assert status_of["gpu-check"] == "ok"  # the check itself ran to its end
    assert driver["probe"]["cuda_runs"] is False and driver["probe"]["why"]
    checked = json.loads((results / "results.json").read_text())
    steps = {s["step"]: s["status"] for s in checked["steps"]}
    assert steps["encoder-fp32"] == "failed (1)"  # --device cuda: one line, and on to the next
    assert steps["agreement-fp32"] == "skipped" and steps["cameras-480p-software"] == "skipped"
    assert steps["test-split"] == "skipped"  # named in GPU_CHECK_SKIP: no split is generated
    assert "encoder-fp32" in checked["failed_steps"]
    assert "agreement-fp32" not in checked["failed_steps"]  # skipped is not failed
    assert "agreement-fp32" in checked["skipped_steps"]
    assert "gpu-check: encoder-fp32" in driver["failed_steps"]
    log = (results / "log.txt").read_text()
    assert "error: device cuda:" in log or "invalid: device cuda:" in log
    # what comes back from a lent machine is at most 8 files
    assert sorted(p.name for p in results.iterdir()) == ["driver.json", "log.txt", "results.json"]
