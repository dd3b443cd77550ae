"""Turn a node-set description into a ROS 2 LaunchDescription (launch / launch_ros API).

Used by launch/*.launch.py on machines with a ROS 2 install; `pixelvla-launch` is its twin
for machines without one. Every argument of the node set becomes a DeclareLaunchArgument;
the nodes are built once the launch context knows the arguments' values.
"""
from __future__ import annotations

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pixelvla_ros.launching.description import load_node_set
from pixelvla_ros.launching.environment import missing_defaults


def node_set_launch_description(name: str) -> LaunchDescription:
    node_set = load_node_set(name)

    def create_nodes(context: LaunchContext) -> list:
        values = {arg: LaunchConfiguration(arg).perform(context) for arg in node_set.arguments}
        environment = missing_defaults()  # DDS on localhost, large camera frames (launching/environment.py)
        nodes: list = [LogInfo(msg=f"{name} not started: {reason}") for name, reason in node_set.left_out(values).items()]
        for spec in node_set.resolve(values):
            nodes.append(
                Node(
                    package="pixelvla_ros",
                    executable=spec.executable,
                    name=spec.name,
                    namespace=spec.namespace or None,
                    parameters=[str(p) for p in spec.parameter_files] + ([spec.parameters] if spec.parameters else []),
                    remappings=list(spec.remappings),
                    output="screen",
                    emulate_tty=True,
                    additional_env=environment,
                    on_exit=Shutdown(reason=f"required node {spec.name} exited") if spec.required else None,
                )
            )
        return nodes

    arguments = [
        DeclareLaunchArgument(
            arg.name,
            default_value=arg.default,
            description=arg.description,
            **({"choices": list(arg.choices)} if arg.choices else {}),
        )
        for arg in node_set.arguments.values()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=create_nodes)])
