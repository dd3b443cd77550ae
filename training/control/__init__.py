"""Arm-side control: chunk scheduling, the safety gate and the IK adapter (no ROS)."""
from pixelvla_training.control.executor import Chunk, ChunkExecutor, ChunkRejected, ChunkSchedule, Command, SafetyGate

__all__ = ["Chunk", "ChunkExecutor", "ChunkRejected", "ChunkSchedule", "Command", "SafetyGate"]
