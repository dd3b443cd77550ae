"""Arm-side control: chunk scheduling, the safety gate and the IK adapter (no ROS)."""
from pixelvla_training.control.executor import (
    DEFAULT_MAX_JOINT_VELOCITY, HOLD, MOVE, NO_ACTION_DUE, STOP, Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, Command, JointReading,
    SafetyGate,
)

__all__ = ["DEFAULT_MAX_JOINT_VELOCITY", "HOLD", "MOVE", "NO_ACTION_DUE", "STOP", "Chunk", "ChunkExecutor", "ChunkRejected", "ChunkSchedule",
           "Command", "JointReading", "SafetyGate"]
