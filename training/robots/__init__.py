"""Robot kinematics in pure numpy (no simulator, no ROS): shared by the simulator and the real arm's executor."""
