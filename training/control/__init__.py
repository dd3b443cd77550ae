"""Arm-side control: chunk scheduling, the safety gate and the IK adapter (no ROS)."""
from pixelvla_training.control.executor import (
    NO_ACTION_DUE, Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, Command, SafetyGate,
)

__all__ = ["NO_ACTION_DUE", "Chunk", "ChunkExecutor", "ChunkRejected", "ChunkSchedule", "Command", "SafetyGate"]
