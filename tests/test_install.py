"""The install a user does: ``pip install .`` builds a wheel that carries the shipped model and
the sample video, so that ``run-stream`` and ``run-archive`` with no arguments caption the sample
from any directory; the wheel's package list matches the tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from: everything else in the checkout (tests, data, runs) stays out.
SOURCES = ["pyproject.toml", "README.md", "lrcn", "stream", "export", "models/shapes",
           "examples/shapes/videos"]


def test_the_listed_packages_are_every_package_of_the_tree():
    """pyproject.toml lists its packages (it maps the bundled files into stream/bundled): a new
    package directory that is not listed would be missing from every install."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for top in ("lrcn", "stream", "export") for init in (ROOT / top).rglob(
                   "__init__.py")}
    listed = set(setuptools["packages"])
    assert listed - set(setuptools["package-dir"]) == on_disk


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built as ``pip install .`` builds it, from a copy of the checkout's sources (so
    that the build leaves nothing in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(out), str(source)], check=True, timeout=300)
    (built,) = out.glob("lrcn_stream-*.whl")
    return built


def test_the_wheel_carries_the_bundle_and_the_sample(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundle = {f"stream/bundled/shapes/{p.name}" for p in (ROOT / "models" / "shapes").iterdir()}
    assert bundle <= names and "stream/bundled/shapes/bundle.json" in bundle
    assert "stream/bundled/sample/shapes_s5_00000.mp4" in names
    assert "stream/cli/live.py" in names and "lrcn/model.py" in names
    assert not [n for n in names if n.startswith(("tests/", "models/", "examples/", "data/"))]


@pytest.mark.slow
def test_an_installed_wheel_captions_the_sample_from_any_directory(wheel: Path, tmp_path: Path):
    """The wheel, installed into a fresh virtual environment outside the checkout, gives
    ``run-stream`` and ``run-archive`` commands that caption the bundled sample with the
    bundled model, run with no arguments from another directory. The runtime's dependencies
    (av, numpy, onnxruntime) are this environment's, made visible to the new one by a .pth
    file: no network. It is the only copy of the project there: the checkout is not on its
    path."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--quiet", str(wheel)], check=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True)
    Path(site.stdout.strip(), "runtime_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n")
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()

    where = subprocess.run([str(python), "-c", "import stream.paths as p; print(p.__file__); "
                            "print(p.DEFAULT_BUNDLE); print(p.SAMPLE_VIDEO)"],
                           capture_output=True, text=True, cwd=elsewhere, check=True)
    module, bundle, sample = where.stdout.splitlines()
    assert module.startswith(str(venv)) and bundle.startswith(str(venv))
    assert sample.startswith(str(venv)) and Path(sample).is_file()

    live = subprocess.run([str(venv / "bin" / "run-stream"), "--device", "cpu", "--jsonl",
                           "captions.jsonl"], capture_output=True, text=True, cwd=elsewhere,
                          timeout=240)
    assert live.returncode == 0, live.stderr
    records = [json.loads(line) for line in (elsewhere / "captions.jsonl").read_text()
               .splitlines()]
    [annotation] = json.loads((ROOT / "examples" / "shapes" / "captions.json").read_text(
        )).values()
    assert records[0]["stream"] == "shapes_s5_00000"
    assert records[-1]["type"] == "status" and records[-1]["kind"] == "ended"
    # The shipped model's settled captions are the sample's four events, as in the checkout.
    assert [r["caption"] for r in records if r["type"] == "end"] == annotation["sentences"]

    archive = subprocess.run([str(venv / "bin" / "run-archive"), "--device", "cpu",
                              "--no-progress"], capture_output=True, text=True, cwd=elsewhere,
                             timeout=240)
    assert archive.returncode == 0, archive.stderr
    assert (elsewhere / "captions" / "shapes_s5_00000.mp4.srt").stat().st_size > 0
    manifest = [json.loads(line) for line in (elsewhere / "captions" / "manifest.jsonl")
                .read_text().splitlines()]
    assert [r["status"] for r in manifest] == ["ok"]
