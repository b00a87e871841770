"""A ``python -m`` command whose extra is not installed says so in one line and exits 2
(stream/cli/extras.py), and the extras it knows are pyproject.toml's.

The missing modules are made missing for real (tests.tools.commands.without_modules).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from stream.cli.extras import EXTRAS, extra_for, missing_extra_line
from tests.tools.commands import without_modules

ROOT = Path(__file__).resolve().parents[1]
NOT_EXPLAINED = {"dev", "gpu"}  # dev: tools; gpu: CUDA libraries, explained by stream/cuda.py

def run(tmp_path: Path, *command: str, missing: tuple[str, ...] = ()
        ) -> subprocess.CompletedProcess[str]:
    """``python *command`` from the checkout, with the ``missing`` modules not installed."""
    env = without_modules(missing, tmp_path) if missing else None
    return subprocess.run([sys.executable, *command], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def _normalised(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


def _modules_of() -> dict[str, set[str]]:
    """Installed distribution (normalised name) -> the top-level modules it provides."""
    provided: dict[str, set[str]] = {}
    for module, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            provided.setdefault(_normalised(distribution), set()).add(module)
    return provided


def _distribution(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalised(match.group())


def test_the_extras_and_their_modules_are_pyproject_tomls():
    """Every extra's requirement brings a module of the table, and every module of the table
    comes with one of its extra's requirements (read from the installed distributions' files:
    PyYAML is `yaml`, pillow `PIL`, paho-mqtt `paho`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) == set(extras) - NOT_EXPLAINED
    assert list(EXTRAS) == [extra for extra in extras if extra in EXTRAS]  # pyproject's order
    provided = _modules_of()
    runtime = {_distribution(r) for r in project["dependencies"]}
    problems = []
    for extra, modules in EXTRAS.items():
        brought: set[str] = set()
        for distribution in {_distribution(r) for r in extras[extra]} - runtime:
            if distribution not in provided:
                problems.append(f"{extra}: {distribution} is not installed here: pip install "
                                f"-e '.[{extra}]'")
            elif not provided[distribution] & set(modules):
                problems.append(f"{extra}: none of {distribution}'s modules "
                                f"{sorted(provided[distribution])} is listed")
            brought |= provided.get(distribution, set())
        problems += [f"{extra}: {m} comes with none of its requirements"
                     for m in modules if m not in brought]
    assert not problems


@pytest.mark.parametrize(("module", "prefer", "extra"), [
    ("tqdm", "train", "train"),  # in train and archive: the package's own extra first
    ("tqdm", "bench", "train"),  # not bench's: the first extra that has it
    ("PIL", "train", "train"),  # in train and web
    ("matplotlib", "train", "bench"),
    ("numpy", "train", None),  # the runtime's own: no extra to install
])
def test_extra_for(module: str, prefer: str, extra: str | None):
    assert extra_for(module, prefer) == extra


@pytest.mark.parametrize(("command", "missing", "extra"), [
    ("lrcn.world", "tqdm", "train"),  # the data generator: runtime + tqdm
    ("lrcn.independent_world", "PIL", "train"),  # Pillow is web's too: lrcn names train
    ("lrcn.train", "torch", "train"),
    ("export", "torch", "train"),  # python -m export runs export/__main__.py
    ("export.parity", "torch", "train"),
    ("bench", "matplotlib", "bench"),  # its chart comes last: checked before measuring
])
def test_a_missing_extra_is_one_line_and_exit_status_2(tmp_path: Path, command: str,
                                                        missing: str, extra: str):
    result = run(tmp_path, "-m", command, "--help", missing=(missing,))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [missing_extra_line(f"python -m {command}", missing,
                                                             extra)]
    assert f"pip install 'lrcn-stream[{extra}]'" in result.stderr


def test_the_line_as_a_user_reads_it(tmp_path: Path):
    result = run(tmp_path, "-m", "lrcn.world", "--out", str(tmp_path / "world"),
                 missing=("tqdm",))
    assert result.returncode == 2
    assert result.stderr == ("error: python -m lrcn.world needs the 'train' extra (No module "
                             "named 'tqdm'): pip install 'lrcn-stream[train]'\n")
    assert not (tmp_path / "world").exists()  # nothing done


@pytest.mark.parametrize(("command", "missing"), [
    ("lrcn.world", ()),
    ("export", ()),
    ("bench", ()),
    ("bench.speed", ("matplotlib",)),  # never charts: needs no bench extra
    ("export.fp16", ("torch", "torchvision")),  # onnx only (its docstring: "not torch")
])
def test_help_works_where_the_modules_are_there(tmp_path: Path, command: str,
                                                missing: tuple[str, ...]):
    result = run(tmp_path, "-m", command, "--help", missing=missing)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_a_module_of_no_extra_keeps_its_traceback(tmp_path: Path):
    """av is the runtime's own: a broken install, not an extra to add."""
    result = run(tmp_path, "-m", "lrcn.world", "--help", missing=("av",))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "No module named 'av'" in result.stderr
    assert "pip install" not in result.stderr


def test_library_use_raises_the_import_error(tmp_path: Path):
    """Importing lrcn from Python installs no hook: the caller gets the ImportError."""
    code = ("import sys\n"
            "try:\n    import lrcn.world\n"
            "except ModuleNotFoundError as error:\n    print(error.name)\n"
            "print(sys.excepthook is sys.__excepthook__)\n")
    result = run(tmp_path, "-c", code, missing=("tqdm",))
    assert (result.returncode, result.stdout.split()) == (0, ["tqdm", "True"]), result.stderr
