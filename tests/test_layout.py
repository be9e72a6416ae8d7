"""The package's shape: every module imports on its own, imports run one way along the pipeline
(data -> features -> engine -> results -> render -> cli), and there is no import circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kmeans_mnist

PACKAGE = Path(kmeans_mnist.__file__).parent
OPTIONAL = {"dask", "distributed", "umap", "pynndescent", "numba"}  # the dask and embed extras
LAYERS = {"atomic": 0, "data": 1, "features": 1.5, "engine": 2, "results": 3, "render": 4, "cli": 5}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, at the top or inside functions (not for type
    checking only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for candidate in [target, *(f"{target}.{alias.name}" for alias in node.names)]:
                if candidate in known and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
    return found


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = list(modules())
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('kmeans_mnist')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as error:  # an optional extra that is not installed\n"
        f"        if (error.name or '').split('.')[0] not in {sorted(OPTIONAL)!r}:\n"
        "            raise\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_imports_run_one_way_along_the_pipeline():
    known = modules()
    upward = [
        f"{name} -> {target}"
        for name, path in known.items()
        for target in imports_of(name, path, known)
        if layer(name) is not None and layer(target) is not None and layer(target) > layer(name)
    ]
    assert upward == []


def test_no_import_circles():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in graph[name]:
            if target in trail:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(name)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    assert circles == []
