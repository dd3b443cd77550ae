"""pixelvla_model imports: the light modules load without torch, and the package has no import cycle.

The cycle check reads every import statement of the package (module level and inside functions), so a
cycle hidden behind a function-level import still counts.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "pixelvla_model"
PACKAGE_DIR = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])
FORBIDDEN = ("rclpy", "pixelvla_training", "pixelvla_ros")


@pytest.mark.parametrize("statement", [
    "import pixelvla_model.prompts, pixelvla_model.configuration",
    "from pixelvla_model import Point, PixelVLAConfig",
    "import pixelvla_model.files",
])
def test_light_imports_load_neither_torch_nor_transformers(statement):
    code = (f"import sys; {statement}\n"
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "assert not heavy, f'loaded {heavy}'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_lazy_names_resolve():
    import pixelvla_model

    for name in pixelvla_model.__all__:
        assert getattr(pixelvla_model, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        pixelvla_model.no_such_name  # noqa: B018


# ---------------------------------------------------------------------------------------------------
# static import graph
# ---------------------------------------------------------------------------------------------------
def package_modules() -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([PACKAGE, *parts])] = path
    return out


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) of everything `module` imports, at any depth of its code; relative imports
    resolved, and `from m import x` naming m.x when x is a submodule (else m)."""
    modules = package_modules()
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in modules else base, node.lineno))
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported package module: line}}. Importing a.b.c also runs the package a.b's __init__:
    that counts as an edge too, unless the importer lives in a.b (its package is loaded before it) or a.b
    is the root package (loaded before any of its modules, and never imported by name inside it)."""
    modules = package_modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for name, line in imported_names(module, path):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            targets = [name] + [".".join(parts[:i]) for i in range(2, len(parts))]
            for target in targets:
                inside = module == target or module.startswith(target + ".")
                if target in modules and target != module and (target == name or not inside):
                    graph[module].setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert "pixelvla_model.modeling" in graph["pixelvla_model.export"]  # the graph sees the imports
    # the root __init__ resolves its lazy names with importlib (not an import statement): it stays out of
    # every cycle only while no module of the package imports it
    assert not [m for m, targets in graph.items() if PACKAGE in targets]
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle in pixelvla_model:\n  " + "\n  ".join(steps))


def test_cycle_finder_reports_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_model_package_never_imports_ros_or_training():
    bad = [f"{path.relative_to(PACKAGE_DIR)}:{line} imports {name}"
           for module, path in package_modules().items() for name, line in imported_names(module, path)
           if name.split(".")[0] in FORBIDDEN]
    assert not bad, bad
