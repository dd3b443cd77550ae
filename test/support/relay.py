"""A node for launch tests: republishes `input` on `output` with its `prefix` parameter."""
import sys

from rclpy.node import Node
from std_msgs.msg import String

from pixelvla_ros.node_base import ParameterMixin, run_node


class Relay(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("relay")
        self.prefix = self.declare("prefix", "", "text put before each relayed message")
        self.pub = self.create_publisher(String, "output", 10)
        self.create_subscription(String, "input", lambda m: self.pub.publish(String(data=self.prefix + m.data)), 10)


def main(args=None) -> int:
    return run_node(Relay, args)


if __name__ == "__main__":
    sys.exit(main())
