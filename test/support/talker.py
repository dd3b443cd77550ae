"""A node for launch tests: publishes its `greeting` parameter on `chatter`.

`crash_after_s` > 0 makes it exit with code 3 after that long (a crashing required node);
`ignore_signals` makes it ignore SIGINT and SIGTERM (a node that will not stop);
`hang_in_cleanup` makes destroying it block (a DDS teardown that hangs).
"""
import os
import signal
import sys
import time

from rclpy.node import Node
from std_msgs.msg import String

from pixelvla_ros.node_base import ParameterMixin, run_node


class Talker(ParameterMixin, Node):
    def __init__(self) -> None:
        super().__init__("talker")
        self.greeting = self.declare("greeting", "hello", "text to publish")
        rate = self.declare("rate_hz", 10.0, "publish rate (Hz)", minimum=0.1)
        self.crash_after_s = self.declare("crash_after_s", 0.0, "exit with code 3 after this long (0: never)")
        if self.declare("ignore_signals", False, "ignore SIGINT and SIGTERM"):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.hang_in_cleanup = self.declare("hang_in_cleanup", False, "block forever when destroyed")
        self.started = time.monotonic()
        self.pub = self.create_publisher(String, "chatter", 10)
        self.create_timer(1.0 / rate, self.tick)

    def tick(self) -> None:
        if self.crash_after_s > 0 and time.monotonic() - self.started > self.crash_after_s:
            self.get_logger().error("crashing on purpose")
            sys.stdout.flush()
            os._exit(3)
        self.pub.publish(String(data=self.greeting))


    def destroy_node(self) -> None:
        while self.hang_in_cleanup:
            time.sleep(1.0)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(Talker, args)


if __name__ == "__main__":
    sys.exit(main())
