"""What a benchmark ran on: CPU, cores, GPU provider, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import av


def describe(providers: list[str]) -> dict[str, Any]:
    """A JSON-ready description of this machine and the libraries the benchmark used."""
    versions = {name: _version(name) for name in
                ("av", "numpy", "onnxruntime-gpu", "onnxruntime", "torch", "matplotlib")}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "provider": providers[0],
        "gpu": _gpu_name() if providers[0] != "CPUExecutionProvider" else None,
        "libavcodec": ".".join(str(v) for v in av.library_versions.get("libavcodec", ())),
        "versions": {k: v for k, v in versions.items() if v is not None},
    }


def _gpu_name() -> str | None:
    """The first NVIDIA GPU's name, memory and driver, from nvidia-smi (None without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def proc_status(field: str) -> int | None:
    """A number from this process's /proc/self/status (kB for memory fields), None where
    there is no /proc (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
