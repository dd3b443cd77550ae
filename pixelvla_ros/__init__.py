"""pixelvla_ros: the ROS 2 nodes that run PixelVLA on a robot arm.

`pixelvla_ros.msg` (ActionChunk, VisualPrompt, PolicyStatus) is generated from msg/ by the
CMake build: `colcon build` on a robot, `make` (in place) elsewhere.
"""
