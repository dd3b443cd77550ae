"""Helpers for the console's tests: the console node on a free port, the test's node spun in a background thread
(Playwright's calls block the test's main thread, and DDS messages must still be received on time), and this
machine's addresses and listening sockets."""
from __future__ import annotations

import fcntl
import socket
import struct
import time
from typing import Any, Callable

from pixelvla_ros.launching.node_process import NodeProcess
from pixelvla_ros.node_base import BackgroundNode

__all__ = ["NodeProcess", "RosThread", "listening_addresses", "start_console", "this_machines_address", "wait_until"]


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def start_console(*params: str) -> tuple[NodeProcess, str]:
    """The console node on a free loopback port (unless `params` say otherwise); (process, page address)."""
    args = [arg for param in ("port:=0", *params) for arg in ("-p", param)]
    node = NodeProcess("pixelvla_ros.nodes.console_node", *args)
    return node, node.find(r"operator console: (\S+)").group(1)


class RosThread(BackgroundNode):
    """The test's own node on `domain`, spun in a background thread."""

    def __init__(self, domain: int) -> None:
        super().__init__("console_test", domain_id=domain)

    def publisher(self, msg_type: Any, topic: str, qos: Any = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list:
        """Messages on `topic` as they arrive, each as (arrival, wall-clock s since the epoch; message): the
        browser's clock (performance.timeOrigin + now()) is this one too."""
        received: list = []
        self.node.create_subscription(msg_type, topic, lambda m: received.append((time.time(), m)), qos)
        return received

    def timer(self, period: float, callback: Callable[[], None]):
        return self.node.create_timer(period, callback)


def this_machines_address() -> str | None:
    """An IPv4 address of a non-loopback interface of this machine (read from the interfaces; nothing is sent).
    Connections to it stay on this machine."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            return address
    return None


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp and tcp6 write them) of the sockets listening on TCP `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found
