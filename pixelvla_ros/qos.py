"""The QoS profiles of the package, named once so that every publisher and subscriber agrees.

- SENSOR: camera images and other high-rate streams. Best effort, depth 1: a late frame is
  worth nothing, and a reader always gets the newest one (a best-effort reader also matches a
  reliable camera driver).
- LATCHED: prompts, instructions, status, masks, camera info. Reliable + transient local, depth 1:
  a node that starts (or restarts) late still receives the last value.
- LATCHED_LIVE: the volatile twin of LATCHED for subscriptions to operator-facing topics: a transient-local
  subscription matches no volatile publisher (`ros2 topic pub` by default), so those topics are read
  through both (node_base.subscribe_latched), and publishers stay LATCHED.
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

LATCHED_LIVE = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
