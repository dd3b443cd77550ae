"""pixelvla_robots: the robot side, in numpy (no ROS, no simulator, no model).

- `base`: the Robot interface (joints, limits, fk, the executor's IK, gripper mapping) and `get_robot(robot_model)`;
- `wx250s`: the WidowX 250 6DOF's kinematics, limits and gripper mapping (its Robot: `wx250s.ROBOT`);
- `rotations`: rotation conversions and the end-effector delta convention, for any arm;
- `executor`: chunk execution for any arm: schedule, safety gate, IK adapter, one command per control period;
- `camera`: pinhole camera geometry (CameraModel: project, back-project, CameraInfo, optical-frame conventions).

The simulator (pixelvla_sim), the nodes (pixelvla_ros) and training use it; it uses none of them.
"""
