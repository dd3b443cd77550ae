"""The packages' dependencies point one way, and only pixelvla_ros talks to ROS (rclpy).

Every import statement counts, at module level or inside a function: a function-level import is still a
dependency (it only hides it from the import-time graph)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"pixelvla_robots": "robots", "pixelvla_sim": "sim", "pixelvla_model": "model",
           "pixelvla_training": "training", "pixelvla_ros": "pixelvla_ros"}
# what each package may import of the others
ALLOWED = {
    "pixelvla_robots": set(),
    "pixelvla_model": set(),
    "pixelvla_sim": {"pixelvla_robots"},
    "pixelvla_training": {"pixelvla_robots", "pixelvla_sim", "pixelvla_model"},
    "pixelvla_ros": {"pixelvla_robots", "pixelvla_sim", "pixelvla_model", "pixelvla_training"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Top-level names imported anywhere in the file -> the first line importing each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_dependencies_point_one_way(package):
    others = set(FOLDERS) - {package}
    wrong = []
    for path in sorted((ROOT / FOLDERS[package]).rglob("*.py")):
        if package == "pixelvla_ros" and "msg" in path.relative_to(ROOT / "pixelvla_ros").parts:
            continue  # generated message code
        for name, line in imported_packages(path).items():
            if name in others - ALLOWED[package] or (name == "rclpy" and package != "pixelvla_ros"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import numpy\n\ndef f():\n    from pixelvla_ros.qos import SENSOR\n    import rclpy.node\n")
    assert imported_packages(source) == {"numpy": 1, "pixelvla_ros": 4, "rclpy": 5}
