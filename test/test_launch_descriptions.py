"""The shipped node sets: they resolve, their files exist, and every executable is installed."""
import re
from pathlib import Path

import pytest

from pixelvla_ros.launching.description import LaunchError, available_node_sets, load_node_set, share_dir

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_node_sets_resolve_with_defaults():
    assert {"policy", "sim"} <= set(available_node_sets())
    for name in available_node_sets():
        specs = load_node_set(name).resolve()
        assert specs and all(spec.parameter_files for spec in specs)
        assert any(spec.required for spec in specs)


def test_every_executable_is_a_node_module_installed_by_cmake_and_setup():
    cmake_nodes = set(re.search(r"set\(PIXELVLA_NODES ([^)]*)\)", (ROOT / "CMakeLists.txt").read_text()).group(1).split())
    setup_nodes = set(re.findall(r'"(\w+_node)"', (ROOT / "setup.py").read_text()))
    used = {spec.executable for name in available_node_sets() for spec in load_node_set(name).resolve()}
    assert used <= cmake_nodes, f"node sets use executables CMake does not install: {used - cmake_nodes}"
    assert cmake_nodes == setup_nodes
    for executable in cmake_nodes:
        assert (ROOT / "pixelvla_ros" / "nodes" / f"{executable}.py").is_file(), executable


def test_launch_files_use_their_node_set():
    for name in available_node_sets():
        launch_file = share_dir() / "launch" / f"{name}.launch.py"
        assert f'node_set_launch_description("{name}")' in launch_file.read_text()


def test_arguments_reach_parameters_with_their_types():
    node_set = load_node_set("sim")
    specs = {s.name: s for s in node_set.resolve(node_set.parse_cli(["seed:=12", "namespace:=arm1", "backend:=onnxruntime"]))}
    assert specs["sim"].parameters["seed"] == 12
    assert specs["policy"].parameters["backend"] == "onnxruntime"
    assert all(s.namespace == "arm1" for s in specs.values())


def test_missing_parameter_file_names_the_file():
    node_set = load_node_set("policy")
    with pytest.raises(LaunchError, match=r"parameter file .*config/robots/ur5\.yaml does not exist"):
        node_set.resolve({"robot": "ur5"})


def test_bad_choice_lists_the_choices():
    with pytest.raises(LaunchError, match="not one of: torch, onnxruntime, tensorrt"):
        load_node_set("policy").resolve({"backend": "tflite"})


def test_malformed_node_set_files(tmp_path):
    bad = tmp_path / "bad.nodes.yaml"
    bad.write_text("nodes: {a: {executable: x, parameters: {p: $(arg nope)}}}")
    with pytest.raises(LaunchError, match=r"undeclared argument\(s\) \['nope'\]"):
        load_node_set(bad)
    bad.write_text("nodes: {a: {executable: x, remap: {}}}")
    with pytest.raises(LaunchError, match=r"unknown keys \['remap'\]"):
        load_node_set(bad)
    bad.write_text("nodes: [")
    with pytest.raises(LaunchError, match="not valid YAML"):
        load_node_set(bad)
