"""The layout of ``stream/``: rooms whose imports point one way, each saying its job.

Imports are read from the source (lazy imports inside functions count), so a circle that only
closes at run time is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAM = Path(__file__).resolve().parents[1] / "stream"
# Each room may import only the rooms before it (the shared vocabulary first).
ROOMS = ["shared", "media", "model", "engines", "sinks", "api", "archive", "cli"]
PACKAGES = ["media", "model", "engines", "sinks", "archive", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(STREAM.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``stream`` modules that ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stream":
            for alias in node.names:  # "from stream.x import y": y may be a module itself
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else str(node.module))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "stream"}
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (STREAM / relative).with_suffix(".py").exists() or (STREAM / relative).is_dir()


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in STREAM.rglob("*.py")}
    return {name: {d for d in _imports(path) if d in modules and d != name}
            for name, path in modules.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "shared"


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for dependency in sorted(graph[module]):
            if dependency in path:
                circles.append(" -> ".join(path[path.index(dependency):] + [dependency]))
            elif dependency not in done:
                visit(dependency, path + [dependency])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not circles


def test_imports_point_one_way_between_rooms():
    upward = [f"{module} -> {dependency}"
              for module, dependencies in sorted(_graph().items()) for dependency in dependencies
              if ROOMS.index(_room(dependency)) > ROOMS.index(_room(module))]
    assert not upward


@pytest.mark.parametrize("package", PACKAGES)
def test_each_room_says_its_job_in_two_lines(package):
    docstring = ast.get_docstring(ast.parse((STREAM / package / "__init__.py").read_text()))
    assert docstring and len(docstring.strip().splitlines()) == 2, docstring


def test_every_module_of_stream_is_in_a_room_or_shared_by_all():
    loose = sorted(p.name for p in STREAM.glob("*.py") if p.name != "__init__.py")
    assert loose == ["api.py", "cuda.py", "errors.py", "events.py", "files.py", "paths.py",
                     "settle.py", "stopping.py"]
