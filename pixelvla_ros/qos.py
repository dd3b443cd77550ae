"""The QoS profiles of the package, named once so that every publisher and subscriber agrees.

- SENSOR: camera images and other high-rate streams. Best effort, depth 1: a late frame is
  worth nothing, and a reader always gets the newest one (a best-effort reader also matches a
  reliable camera driver).
- LATCHED: prompts, instructions, status, masks, camera info. Reliable + transient local, depth 1:
  a node that starts (or restarts) late still receives the last value.
- COMMAND: arm commands and action chunks. Reliable, volatile, a short queue: never dropped in
  transit, never replayed to a late joiner (a stale command must not move the arm).
"""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
