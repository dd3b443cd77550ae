"""Node-set descriptions: the one place that says which nodes a launch starts, and how.

A node set is a YAML file `launch/<name>.nodes.yaml`. Both `launch/<name>.launch.py` (ROS 2
launch, on robots) and `pixelvla-launch <name>` (plain processes, where only the rclpy wheels
exist) read it, so the two cannot drift apart:

    description: what the set does
    arguments:                       # user-settable as name:=value; all strings unless `type`
      robot: {default: widowx_bridge, description: "...", choices: [widowx_bridge, google_robot]}
      rate: {default: "5.0", type: float, description: "..."}
      record: {default: "false", type: bool, description: "..."}
    namespace: $(arg namespace)      # optional, for every node
    nodes:
      policy:                        # the node's name
        executable: policy_node      # pixelvla_ros.nodes.<executable> / lib/pixelvla_ros/<executable>
        required: true               # its exit stops the whole set
        parameter_files: [config/robots/$(arg robot).yaml]   # relative to the package share dir
        parameters: {control_rate_hz: $(arg rate)}           # override the files
        remappings: {/camera/image_raw: $(arg camera_topic)}
      recorder:
        executable: recorder_node
        enabled: $(arg record)       # optional: a bool argument that starts the node or leaves it out
      executor:
        executable: executor_node
        needs_kinematics: true       # optional: left out (and why is logged) when the robot_model of its
                                     # parameter files has no kinematics in pixelvla_robots (google_robot)

`$(arg name)` is replaced by the argument's value. A value that is exactly one `$(arg x)` takes
the argument's type; inside a longer string it is text.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ARG_PATTERN = re.compile(r"\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)")
ARG_TYPES = {"str": str, "float": float, "int": int, "bool": bool}
SUFFIX = ".nodes.yaml"


class LaunchError(ValueError):
    """A node set or its arguments are wrong; the message says what to fix."""


def share_dir() -> Path:
    """The folder holding launch/ and config/.

    The source checkout when running from one (the editable install), else the installed
    package share (`colcon build` / ament index), else `$PIXELVLA_ROS_SHARE`.
    """
    if "PIXELVLA_ROS_SHARE" in os.environ:
        return Path(os.environ["PIXELVLA_ROS_SHARE"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "package.xml").is_file() and (checkout / "launch").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("pixelvla_ros"))
    except Exception as exc:  # noqa: BLE001 - PackageNotFoundError or no ament index at all
        raise LaunchError(
            "cannot find the pixelvla_ros share folder (launch/, config/): source the ROS workspace "
            "that built pixelvla_ros, or set PIXELVLA_ROS_SHARE"
        ) from exc


def available_node_sets() -> list[str]:
    return sorted(p.name[: -len(SUFFIX)] for p in (share_dir() / "launch").glob(f"*{SUFFIX}"))


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str
    type: type = str
    choices: tuple[str, ...] | None = None

    def convert(self, text: str) -> Any:
        """The typed value of `text`; a LaunchError if it is not one."""
        if self.choices is not None and text not in self.choices:
            raise LaunchError(f"argument {self.name}:={text!r} is not one of: {', '.join(self.choices)}")
        if self.type is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise LaunchError(f"argument {self.name}:={text!r} is not a boolean (true/false)")
        try:
            return self.type(text)
        except ValueError:
            raise LaunchError(f"argument {self.name}:={text!r} is not a {self.type.__name__}") from None


@dataclass(frozen=True)
class NodeSpec:
    """One node, arguments resolved: everything a launcher needs to start it."""

    name: str
    executable: str
    namespace: str = ""
    parameter_files: tuple[Path, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = False
    # Runner only: a Python module to run instead of pixelvla_ros.nodes.<executable>
    # (e.g. a node written for a test); launch_ros always uses the installed executable.
    python_module: str | None = None

    @property
    def module(self) -> str:
        return self.python_module or f"pixelvla_ros.nodes.{self.executable}"


@dataclass(frozen=True)
class NodeSet:
    name: str
    path: Path
    description: str
    arguments: dict[str, Argument]
    raw: dict[str, Any]

    def parse_cli(self, tokens: list[str]) -> dict[str, str]:
        """`name:=value` tokens -> {name: value}; unknown names and malformed tokens are errors."""
        values: dict[str, str] = {}
        for token in tokens:
            name, sep, value = token.partition(":=")
            if not sep or not name:
                raise LaunchError(f"bad argument {token!r}: write name:=value ({self.usage()})")
            if name not in self.arguments:
                raise LaunchError(f"unknown argument {name!r} for node set {self.name!r} ({self.usage()})")
            values[name] = value
        return values

    def usage(self) -> str:
        return "arguments: " + ", ".join(f"{a.name}:={a.default!r}" for a in self.arguments.values())

    def resolve(self, values: dict[str, str] | None = None) -> list[NodeSpec]:
        """The nodes with every `$(arg ...)` replaced; checks types, choices and parameter files."""
        return self._resolve(values)[0]

    def left_out(self, values: dict[str, str] | None = None) -> dict[str, str]:
        """{node name: why it is not started} for the nodes `needs_kinematics` leaves out, for the launch log."""
        return self._resolve(values)[1]

    def _resolve(self, values: dict[str, str] | None) -> tuple[list[NodeSpec], dict[str, str]]:
        values = dict(values or {})
        unknown = set(values) - set(self.arguments)
        if unknown:
            raise LaunchError(f"unknown argument(s) {sorted(unknown)} for node set {self.name!r} ({self.usage()})")
        typed = {n: a.convert(values.get(n, a.default)) for n, a in self.arguments.items()}
        text = {n: values.get(n, a.default) for n, a in self.arguments.items()}

        def sub(value: Any) -> Any:
            if isinstance(value, str):
                whole = ARG_PATTERN.fullmatch(value.strip())
                if whole:
                    return typed[whole.group(1)]
                return ARG_PATTERN.sub(lambda m: text[m.group(1)], value)
            if isinstance(value, list):
                return [sub(v) for v in value]
            if isinstance(value, dict):
                return {k: sub(v) for k, v in value.items()}
            return value

        namespace = str(sub(self.raw.get("namespace", "")) or "")
        specs, left_out = [], {}
        for node_name, node in self.raw["nodes"].items():
            enabled = sub(node.get("enabled", True))
            if not isinstance(enabled, bool):
                raise LaunchError(f"node {node_name!r}: `enabled` must be true, false or a bool argument, not {enabled!r}")
            if not enabled:
                continue
            files = []
            for rel in sub(node.get("parameter_files", [])):
                path = share_dir() / rel
                if not path.is_file():
                    raise LaunchError(f"node {node_name!r}: parameter file {path} does not exist")
                files.append(path)
            parameters = sub(node.get("parameters", {}))
            if node.get("needs_kinematics", False):
                reason = _no_kinematics(node_name, files, parameters)
                if reason is not None:
                    left_out[node_name] = reason
                    continue
            specs.append(
                NodeSpec(
                    name=node_name,
                    executable=node["executable"],
                    namespace=namespace,
                    parameter_files=tuple(files),
                    parameters=parameters,
                    remappings=tuple((str(k), str(v)) for k, v in sub(node.get("remappings", {})).items()),
                    required=bool(node.get("required", False)),
                    python_module=node.get("python_module"),
                )
            )
        return specs, left_out


def _no_kinematics(node_name: str, parameter_files: list[Path], parameters: dict[str, Any]) -> str | None:
    """Why a node that needs the arm's kinematics cannot run with the robot_model its parameters give
    (the files in order, then the overrides, as ROS reads them); None when it can."""
    from pixelvla_robots.base import get_robot, no_kinematics_reason

    robot_model = "wx250s"  # the nodes' default
    for path in parameter_files:
        for key, section in (yaml.safe_load(path.read_text()) or {}).items():
            if key == "/**" or key.split("/")[-1] == node_name:  # the sections that apply to this node
                robot_model = (section or {}).get("ros__parameters", {}).get("robot_model", robot_model)
    robot_model = parameters.get("robot_model", robot_model)
    try:
        robot = get_robot(robot_model)
    except ValueError as exc:
        raise LaunchError(f"node {node_name!r}: {exc}") from None
    return None if robot.has_kinematics else no_kinematics_reason(robot_model)


def load_node_set(name_or_path: str | os.PathLike) -> NodeSet:
    """A node set by name (launch/<name>.nodes.yaml) or by the path of its YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        path = candidate
        if not path.is_file():
            raise LaunchError(f"node set file {path} does not exist")
    else:
        path = share_dir() / "launch" / f"{name_or_path}{SUFFIX}"
        if not path.is_file():
            raise LaunchError(f"unknown node set {str(name_or_path)!r}; available: {', '.join(available_node_sets())}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LaunchError(f"{path}: not valid YAML: {exc}") from None
    return _validate(path, raw)


def _validate(path: Path, raw: Any) -> NodeSet:
    def fail(what: str) -> LaunchError:
        return LaunchError(f"{path}: {what}")

    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), dict) or not raw["nodes"]:
        raise fail("needs a non-empty mapping `nodes:`")
    unknown_keys = set(raw) - {"description", "arguments", "namespace", "nodes"}
    if unknown_keys:
        raise fail(f"unknown keys {sorted(unknown_keys)}")
    arguments = {}
    for name, spec in (raw.get("arguments") or {}).items():
        spec = spec or {}
        type_name = spec.get("type", "str")
        if type_name not in ARG_TYPES:
            raise fail(f"argument {name!r}: type must be one of {sorted(ARG_TYPES)}")
        choices = spec.get("choices")
        arguments[name] = Argument(
            name=name,
            default=str(spec.get("default", "")),
            description=str(spec.get("description", "")),
            type=ARG_TYPES[type_name],
            choices=tuple(str(c) for c in choices) if choices else None,
        )
    node_keys = {"executable", "required", "enabled", "needs_kinematics", "parameter_files", "parameters", "remappings",
                 "python_module"}
    for node_name, node in raw["nodes"].items():
        if not isinstance(node, dict) or "executable" not in node:
            raise fail(f"node {node_name!r} needs an `executable`")
        extra = set(node) - node_keys
        if extra:
            raise fail(f"node {node_name!r}: unknown keys {sorted(extra)}; allowed: {sorted(node_keys)}")
    used = set(ARG_PATTERN.findall(yaml.safe_dump(raw)))
    undeclared = used - set(arguments)
    if undeclared:
        raise fail(f"uses undeclared argument(s) {sorted(undeclared)}")
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    return NodeSet(name=name, path=path, description=str(raw.get("description", "")), arguments=arguments, raw=raw)
