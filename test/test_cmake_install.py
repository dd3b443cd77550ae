"""The ament_cmake build a robot runs (`colcon build` does the same CMake steps): messages, the three
Python packages under their import names, node executables, launch/ and config/ land in the prefix."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def source_tree_copy(target: Path) -> Path:
    """The package as a workspace holds it (src/pixelvla_ros): no venv, build output or in-place messages."""

    def ignore(folder, names):
        skip = {".venv", "build", ".git", "results", "__pycache__", ".pytest_cache"}
        if Path(folder).name == "pixelvla_ros":
            skip |= {"msg"} | {n for n in names if n.endswith(".so")}
        return [n for n in names if n in skip]

    return Path(shutil.copytree(ROOT, target, ignore=ignore))


@pytest.mark.slow
def test_cmake_install_layout(tmp_path):
    source, prefix, build = source_tree_copy(tmp_path / "src" / "pixelvla_ros"), tmp_path / "install", tmp_path / "build"
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV)}
    for step in (["cmake", "-S", str(source), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DBUILD_TESTING=OFF",
                  f"-DCMAKE_PREFIX_PATH={VENV}",  # where the ament/rosidl wheels put their CMake packages
                  f"-DPython3_EXECUTABLE={sys.executable}"],
                 ["cmake", "--build", str(build), "-j2"], ["cmake", "--install", str(build)]):
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(step[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    site = prefix / Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    for package, module in [("pixelvla_ros", "node_base.py"), ("pixelvla_model", "modeling.py"),
                            ("pixelvla_sim", "env.py"), ("pixelvla_sim", "assets/tabletop.xml"),
                            ("pixelvla_robots", "executor.py"), ("pixelvla_training", "episodes/dataset.py"),
                            ("pixelvla_ros", "msg/_action_chunk.py")]:
        assert (site / package / module).is_file(), f"{package}/{module} not installed"
    assert not any((site / name).exists() for name in ("model", "training", "robots", "sim"))
    share = prefix / "share" / "pixelvla_ros"
    for rel in ["package.xml", "msg/ActionChunk.msg", "launch/policy.launch.py", "launch/policy.nodes.yaml",
                "config/robots/widowx_bridge.yaml", "config/pixelvla.rviz"]:
        assert (share / rel).is_file(), rel
    wrapper = prefix / "lib" / "pixelvla_ros" / "policy_node"
    assert os.access(wrapper, os.X_OK) and "from pixelvla_ros.nodes.policy_node import main" in wrapper.read_text()
    # The installed packages import on their own, messages included.
    probe = ("import pixelvla_ros, pixelvla_model, pixelvla_robots.executor, pixelvla_sim.tasks, pixelvla_training;"
             "from pixelvla_ros.msg import ActionChunk, VisualPrompt, PolicyStatus;"
             "print(pixelvla_ros.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
                         check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert out.strip().startswith(str(site))
