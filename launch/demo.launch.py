"""ros2 launch pixelvla_ros demo.launch.py [name:=value ...]

The nodes, parameters and remaps come from launch/demo.nodes.yaml, the same description that
`pixelvla-launch demo` starts where no ROS 2 install exists (see pixelvla_ros/launching/).
"""
from pixelvla_ros.launching.ros_launch import node_set_launch_description


def generate_launch_description():
    return node_set_launch_description("demo")
