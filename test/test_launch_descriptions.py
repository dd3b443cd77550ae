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


@pytest.mark.parametrize("name, split", [("sim", True), ("policy", False)])
def test_record_argument_adds_the_recorder(name, split, tmp_path):
    node_set = load_node_set(name)
    assert "recorder" not in {s.name for s in node_set.resolve()}  # off by default
    specs = {s.name: s for s in node_set.resolve(node_set.parse_cli(["record:=true", f"bag_dir:={tmp_path}"]))}
    recorder = specs["recorder"]
    assert recorder.executable == "recorder_node" and not recorder.required
    assert recorder.parameters["output_dir"] == str(tmp_path)
    assert recorder.parameters.get("split_episodes", True) is split  # one bag per simulated episode; one bag on a robot
    if name == "policy":  # it records the camera the policy reads
        specs = {s.name: s for s in node_set.resolve(node_set.parse_cli(["record:=true", "camera_topic:=/cam/rgb"]))}
        assert dict(specs["recorder"].remappings)["camera/image_raw"] == "/cam/rgb"


def test_a_robot_without_kinematics_gets_no_executor(capsys):
    from pixelvla_ros.launching.runner import main

    node_set = load_node_set("policy")
    assert "executor" in {s.name for s in node_set.resolve()} and node_set.left_out() == {}
    assert "executor" not in {s.name for s in node_set.resolve({"robot": "google_robot"})}
    assert "google_robot has no kinematics" in node_set.left_out({"robot": "google_robot"})["executor"]
    assert main(["policy", "robot:=google_robot", "--show"]) == 0
    assert "executor: not started: robot_model google_robot has no kinematics" in capsys.readouterr().out


def test_needs_kinematics_reads_the_robot_model_of_the_nodes_parameters(tmp_path):
    robot = tmp_path / "robot.yaml"
    robot.write_text("/**:\n  ros__parameters: {robot_model: google_robot}\n"
                     "other_node:\n  ros__parameters: {robot_model: wx250s}\n")
    path = tmp_path / "x.nodes.yaml"
    path.write_text(f"nodes:\n  a: {{executable: x, needs_kinematics: true, parameter_files: [{robot}]}}\n"
                    f"  b: {{executable: x, needs_kinematics: true, parameter_files: [{robot}], "
                    f"parameters: {{robot_model: wx250s}}}}\n"
                    f"  c: {{executable: x, needs_kinematics: true, parameter_files: [{robot}], "
                    f"parameters: {{robot_model: ur5}}}}\n")
    node_set = load_node_set(path)
    with pytest.raises(LaunchError, match="node 'c': unknown robot_model 'ur5'; known models: wx250s, google_robot"):
        node_set.resolve()
    del node_set.raw["nodes"]["c"]
    assert [s.name for s in node_set.resolve()] == ["b"] and list(node_set.left_out()) == ["a"]


def test_enabled_must_be_a_boolean(tmp_path):
    path = tmp_path / "x.nodes.yaml"
    path.write_text("arguments: {flag: {default: 'yes please'}}\nnodes: {a: {executable: x, enabled: $(arg flag)}}")
    with pytest.raises(LaunchError, match=r"node 'a': `enabled` must be true, false or a bool argument"):
        load_node_set(path).resolve()


def test_ros2_launch_starts_what_pixelvla_launch_starts(monkeypatch):
    """launch/launch_ros are not installable here: stand-ins that record what ros_launch builds."""
    import importlib
    import sys
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    stubs = {"launch": {"LaunchContext": Recorded, "LaunchDescription": lambda actions: actions},
             "launch.actions": {"DeclareLaunchArgument": Recorded, "OpaqueFunction": Recorded, "Shutdown": Recorded,
                                "LogInfo": Recorded},
             "launch.substitutions": {"LaunchConfiguration": lambda name: types.SimpleNamespace(
                 perform=lambda context: context.kwargs["values"][name])},
             "launch_ros": {}, "launch_ros.actions": {"Node": Recorded}}
    for name, attributes in stubs.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attributes))
    monkeypatch.delitem(sys.modules, "pixelvla_ros.launching.ros_launch", raising=False)  # restored afterwards
    ros_launch = importlib.import_module("pixelvla_ros.launching.ros_launch")
    for name in ("sim", "policy"):
        *arguments, create = ros_launch.node_set_launch_description(name)
        node_set = load_node_set(name)
        assert [a.args[0] for a in arguments] == list(node_set.arguments)
        for record in ("false", "true"):
            values = {a.args[0]: a.kwargs["default_value"] for a in arguments} | {"record": record}
            nodes = create.kwargs["function"](Recorded(values=values))
            assert [n.kwargs["name"] for n in nodes] == [s.name for s in node_set.resolve(values)]
            assert ("recorder" in [n.kwargs["name"] for n in nodes]) == (record == "true")
    # A robot without kinematics: no executor, and the launch log says why.
    *arguments, create = ros_launch.node_set_launch_description("policy")
    values = {a.args[0]: a.kwargs["default_value"] for a in arguments} | {"robot": "google_robot"}
    actions = create.kwargs["function"](Recorded(values=values))
    assert "executor" not in [a.kwargs.get("name") for a in actions]
    assert [a.kwargs["msg"] for a in actions if "msg" in a.kwargs] == [
        "executor not started: robot_model google_robot has no kinematics in this package: no executor; "
        "send /pixelvla/action_chunk to the robot's own controller"]


def test_every_started_node_gets_localhost_discovery_and_the_fast_dds_profile():
    """The profile exists, parses, and holds a 1280x720 rgb8 frame; user settings always win."""
    import xml.etree.ElementTree as ET

    from pixelvla_ros.launching.environment import missing_defaults, ros_environment

    env = ros_environment({"PATH": "/bin"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    profile = ET.parse(env["FASTDDS_DEFAULT_PROFILES_FILE"])
    sizes = [int(e.text) for e in profile.iter("{http://www.eprosima.com}segment_size")]
    assert sizes and min(sizes) >= 4 * 1280 * 720 * 3
    assert ros_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in missing_defaults({"FASTRTPS_DEFAULT_PROFILES_FILE": "/robot.xml"})
