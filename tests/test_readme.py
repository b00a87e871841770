"""The README's examples, run as written from a temporary directory: every Python block, and
every shell command that needs no network, camera, GPU, cluster, running service or data set of
the user's own (each of those is left out by a rule below that says why)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLE = ROOT / "examples" / "shapes" / "videos" / "shapes_s5_00000.mp4"

# A shell command holding one of these is not run here, for the reason given.
NOT_RUN = {
    "make ": "the Makefile's targets: CI runs `make test` itself",
    "pip install": "needs the network",
    "rtsp://": "needs a network camera",
    "webcam": "needs a camera",
    "curl ": "needs a running service",
    "--config": "a service: runs until stopped",
    "ray start": "needs a Ray cluster",
    "--ray-address": "needs a Ray cluster",
    "--device cuda": "needs a GPU",
    "data/mine": "needs the user's own data set",
    "models/mine": "needs the user's own model",
}


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``."""
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", README.read_text(), re.M | re.S)


def shell_commands() -> list[str]:
    """Every command of the README's ``sh`` blocks, continuation lines joined."""
    commands = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                commands.append(line.strip())
    return commands


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory holding the files the examples name: clip.mp4, photo.png and videos/."""
    shutil.copy(SAMPLE, tmp_path / "clip.mp4")
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, tmp_path / "videos" / "a.mp4")
    shutil.copy(SAMPLE, tmp_path / "videos" / "sub" / "b.mp4")
    with av.open(str(SAMPLE)) as container:
        frame = next(container.decode(video=0))
    frame.to_image().save(tmp_path / "photo.png")
    return tmp_path


def _environment() -> dict[str, str]:
    """This environment, its commands (run-stream, python) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_the_readme_has_the_examples_this_file_runs():
    commands = shell_commands()
    run = [c for c in commands if not any(marker in c for marker in NOT_RUN)]
    assert len(blocks("python")) >= 1 and len(run) >= 8
    bare = {command.partition("#")[0].strip() for command in run}
    assert {"run-stream", "run-archive"} <= bare  # the no-argument forms


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_a_python_example_runs_as_written(workdir: Path, index: int):
    code = blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=workdir, env=_environment(), timeout=240)
    assert result.returncode == 0, result.stderr
    assert "a purple triangle" in result.stdout  # the sample's first event


@pytest.mark.slow
def test_the_shell_examples_run_as_written(workdir: Path):
    ran = []
    for command in shell_commands():
        if any(marker in command for marker in NOT_RUN):
            continue
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                cwd=workdir, env=_environment(), timeout=240)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Traceback" not in result.stderr, command
        ran.append(command)
    # What they say they write is there.
    for written in ("clip.srt", "clip.vtt", "clip.jsonl", "out/clip.jsonl", "out/photo.srt",
                    "clip-captioned.mp4", "captions/manifest.jsonl",
                    "captions/shapes_s5_00000.mp4.srt", "captions/sub/b.mp4.vtt"):
        assert (workdir / written).stat().st_size > 0, written
    assert len(ran) >= 8
